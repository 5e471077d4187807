with prunes as (

    select * from {{ ref('stg_tessera__prune_runs') }}

),

final as (

    select
        run_id || '/' || collection as prune_id,
        run_id,
        collection,
        started_at,
        cast(started_at as date) as prune_date,
        is_dry_run,
        points_expired,
        points_deleted,
        prune_seconds,
        points_deleted / nullif(prune_seconds, 0) as points_deleted_per_second

    from prunes

)

select * from final
