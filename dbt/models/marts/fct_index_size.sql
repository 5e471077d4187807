with snapshots as (

    select * from {{ ref('stg_tessera__index_snapshots') }}

),

prunes as (

    select
        run_id,
        collection,
        max(points_expired) as collection_points_expired,
        max(points_deleted) as collection_points_deleted

    from {{ ref('stg_tessera__prune_runs') }}
    where not is_dry_run
    group by run_id, collection

),

with_previous as (

    select
        *,
        lag(points) over (
            partition by collection, source order by recorded_at, run_id
        ) as previous_points,
        row_number() over (
            partition by collection, source order by recorded_at desc, run_id desc
        ) = 1 as is_latest

    from snapshots

),

final as (

    select
        concat_ws('/', s.run_id, s.collection, s.source) as snapshot_id,
        s.run_id,
        s.collection,
        s.source,
        s.recorded_at,
        cast(s.recorded_at as date) as snapshot_date,
        s.points,
        s.previous_points,
        s.points - coalesce(s.previous_points, 0) as points_change,
        s.is_latest,
        p.run_id is not null as is_prune_run,
        -- Per source, TTL pruning shows as the drop since the previous snapshot; the prune run
        -- itself only counts per collection (repeated on each of its sources' rows, so do not
        -- sum those two columns across sources).
        case
            when p.run_id is not null then greatest(coalesce(s.previous_points, 0) - s.points, 0)
            else 0
        end as points_pruned,
        p.collection_points_expired,
        p.collection_points_deleted

    from with_previous as s
    left join prunes as p
        on s.run_id = p.run_id
        and s.collection = p.collection

)

select * from final
