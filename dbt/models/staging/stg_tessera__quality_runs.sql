with source as (

    select * from {{ source('tessera', 'quality_runs') }}

),

renamed as (

    select
        run_id || '/' || coalesce(mode, 'dense') as quality_run_id,
        run_id,
        dataset,
        model_id,
        coalesce(mode, 'dense') as search_mode,
        collection,
        queries as query_count,
        ndcg_at_10,
        recall_at_10,
        recall_at_100,
        mrr_at_10,
        seconds as run_seconds,
        status,
        gate_message,
        timezone('UTC', started_at) as started_at,
        status = 'passed' as is_passed

    from source

)

select * from renamed
