with source as (

    select * from {{ source('tessera', 'tuning_runs') }}

),

renamed as (

    select
        run_id,
        dataset,
        collection,
        mode as search_mode,
        decision,
        decision = 'applied' as is_applied,
        reason,
        -- quoted: current is an SQL keyword
        "current" as current_settings,
        chosen as chosen_settings,
        trials as trial_count,
        train_queries as train_query_count,
        test_queries as test_query_count,
        train_ndcg_at_10_current,
        train_ndcg_at_10_chosen,
        test_ndcg_at_10_current,
        test_ndcg_at_10_chosen,
        p_value,
        seconds as run_seconds,
        timezone('UTC', started_at) as started_at,
        timezone('UTC', finished_at) as finished_at

    from source

)

select * from renamed
