with documents as (

    select * from {{ ref('stg_tessera__documents_indexed') }}

),

runs as (

    select run_id, started_at, run_kind from {{ ref('fct_ingest_runs') }}

),

-- A run's documents count on the day the run started, so one run never splits across two
-- days; documents of a run that left no summary (it crashed) fall back to their own time.
dated as (

    select
        documents.*,
        cast(coalesce(runs.started_at, documents.recorded_at) as date) as ingest_date,
        -- A source's runs are all of one kind (quality sets and ad-hoc paths get names of
        -- their own), so the kind rides along with the source.
        case
            when documents.source like 'adhoc-%' then 'adhoc'
            else coalesce(runs.run_kind, 'scheduled_or_manual')
        end as run_kind

    from documents
    left join runs using (run_id)

),

daily as (

    select
        ingest_date,
        source,
        max(run_kind) as run_kind,
        count(distinct run_id) as runs,
        count(*) filter (where outcome <> 'deleted') as documents_seen,
        count(*) filter (where outcome = 'indexed') as documents_indexed,
        count(*) filter (where outcome = 'unchanged') as documents_unchanged,
        count(*) filter (where outcome = 'quarantined') as documents_quarantined,
        count(*) filter (where outcome = 'deleted') as documents_deleted,
        coalesce(sum(chunk_count) filter (where outcome = 'indexed'), 0) as chunks_indexed,
        coalesce(sum(content_bytes) filter (where outcome = 'indexed'), 0) as bytes_indexed,
        min(recorded_at) as first_recorded_at,
        max(recorded_at) as last_recorded_at

    from dated
    group by ingest_date, source

),

final as (

    select
        source || '/' || strftime(ingest_date, '%Y-%m-%d') as source_day_id,
        *

    from daily

)

select * from final
