with migrations as (

    select * from {{ ref('stg_tessera__migrations') }}

),

final as (

    select
        run_id as migration_id,
        alias,
        decision,
        is_alias_change,
        from_collection,
        to_collection,
        from_model,
        to_model,
        settings_hash,
        settings,
        metrics,
        live_ndcg_at_10,
        shadow_ndcg_at_10,
        shadow_ndcg_at_10 - live_ndcg_at_10 as ndcg_change,
        reason,
        started_at,
        finished_at,
        cast(finished_at as date) as migration_date,
        date_diff('millisecond', started_at, finished_at) / 1000.0 as run_seconds

    from migrations

)

select * from final
