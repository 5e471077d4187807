with source as (

    select * from {{ source('tessera', 'quality_query_changes') }}

),

renamed as (

    select
        run_id,
        kind,
        subject,
        dataset,
        coalesce(mode, 'dense') as search_mode,
        -- ndcg@10 -> ndcg_at_10, as in stg_tessera__quality_comparisons
        replace(metric, '@', '_at_') as metric,
        query_id,
        baseline as baseline_score,
        candidate as candidate_score,
        difference,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
