with source as (

    select * from {{ source('tessera', 'migrations') }}

),

renamed as (

    select
        run_id,
        alias,
        decision,
        from_collection,
        to_collection,
        from_model,
        to_model,
        settings_hash,
        settings,
        metrics,
        live_ndcg_at_10,
        shadow_ndcg_at_10,
        reason,
        timezone('UTC', started_at) as started_at,
        timezone('UTC', finished_at) as finished_at,
        decision in ('switched', 'rolled_back') as is_alias_change

    from source

)

select * from renamed
