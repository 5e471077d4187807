with source as (

    select * from {{ source('tessera', 'quality_comparisons') }}

),

renamed as (

    select
        run_id || '/' || kind || '/' || subject || '/' || dataset || '/'
            || coalesce(mode, 'dense') || '/' || replace(metric, '@', '_at_') as comparison_metric_id,
        run_id,
        kind,
        subject,
        dataset,
        coalesce(mode, 'dense') as search_mode,
        baseline,
        candidate,
        -- ndcg@10 -> ndcg_at_10: the marts' metric names (fct_retrieval_quality.metric)
        replace(metric, '@', '_at_') as metric,
        queries as query_count,
        baseline_mean,
        candidate_mean,
        difference,
        ci_low,
        ci_high,
        p_value,
        alpha,
        power,
        power_drop,
        queries_needed,
        significantly_worse as is_significantly_worse,
        significantly_better as is_significantly_better,
        gated as is_gated,
        decision,
        decision in ('switched', 'passed', 'applied') as is_change_accepted,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
