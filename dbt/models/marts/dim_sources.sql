with config as (

    select * from {{ ref('stg_tessera__source_config') }}

),

batches as (

    select * from {{ ref('stg_tessera__ingest_batches') }}

),

runs as (

    select * from {{ ref('fct_ingest_runs') }}

),

-- Every place an event names a source counts as seeing it. (ingest_runs.source_list is what
-- the run was asked for, e.g. "all", so the per-source events are the ones to trust.)
sightings as (

    select source, recorded_at as seen_at, null::varchar as outcome
    from batches

    union all

    select source, recorded_at, outcome
    from {{ ref('stg_tessera__documents_indexed') }}

    union all

    select source, recorded_at, 'quarantined'
    from {{ ref('stg_tessera__quarantine') }}

    union all

    select source, recorded_at, null
    from {{ ref('stg_tessera__contract_results') }}

    union all

    select source, recorded_at, null
    from {{ ref('stg_tessera__index_snapshots') }}


),

seen as (

    select
        source,
        min(seen_at) as first_seen_at,
        max(seen_at) as last_seen_at,
        max(seen_at) filter (where outcome = 'indexed') as last_indexed_at

    from sightings
    where source is not null and source <> ''
    group by source

),

-- A run read a source when it recorded a stage (at least discover) for it.
run_sources as (

    select distinct run_id, source from batches

),

run_counts as (

    select
        run_sources.source,
        count(*) as runs,
        count(*) filter (where runs.is_failed) as failed_runs,
        max(runs.finished_at) filter (where not runs.is_failed) as last_successful_run_at

    from run_sources
    inner join runs using (run_id)
    group by run_sources.source

),

latest_points as (

    select source, sum(points) as current_points
    from {{ ref('fct_index_size') }}
    where is_latest
    group by source

),

final as (

    select
        coalesce(config.source, seen.source) as source,
        config.source is not null as is_configured,
        config.kind,
        config.source_path,
        config.file_glob,
        config.modality,
        config.collection,
        config.ttl,
        config.ttl_seconds,
        config.schedule,
        config.schedule_interval_seconds,
        config.is_delete_missing,

        seen.first_seen_at,
        seen.last_seen_at,
        seen.last_indexed_at,
        run_counts.last_successful_run_at,
        coalesce(run_counts.runs, 0) as runs,
        coalesce(run_counts.failed_runs, 0) as failed_runs,
        coalesce(latest_points.current_points, 0) as current_points,

        -- Freshness as of this build (built_at): how long since any run saw the source.
        timezone('UTC', now()) as built_at,
        date_diff('second', seen.last_seen_at, timezone('UTC', now())) / 3600.0
            as hours_since_last_seen,
        case
            when seen.last_seen_at is null then 'never_seen'
            -- Judged against the source's own schedule: stale after stale_after_missed_runs
            -- missed intervals; an unscheduled source after stale_after_hours.
            when config.schedule_interval_seconds is not null
                and seen.last_seen_at < timezone('UTC', now())
                    - to_seconds({{ var('stale_after_missed_runs') }} * config.schedule_interval_seconds)
                then 'stale'
            when config.schedule_interval_seconds is null
                and seen.last_seen_at
                < timezone('UTC', now()) - to_hours({{ var('stale_after_hours') }}) then 'stale'
            else 'fresh'
        end as freshness_status

    from config
    full outer join seen on config.source = seen.source
    left join run_counts on run_counts.source = coalesce(config.source, seen.source)
    left join latest_points on latest_points.source = coalesce(config.source, seen.source)

)

select * from final
