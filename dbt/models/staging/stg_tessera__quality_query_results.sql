with source as (

    select * from {{ source('tessera', 'quality_query_results') }}

),

renamed as (

    select
        run_id,
        dataset,
        model_id,
        coalesce(mode, 'dense') as search_mode,
        query_id,
        ndcg_at_10,
        recall_at_10,
        recall_at_100,
        mrr_at_10,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
