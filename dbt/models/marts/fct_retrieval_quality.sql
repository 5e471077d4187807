with quality_runs as (

    select * from {{ ref('stg_tessera__quality_runs') }}

),

metrics as (

    -- include nulls: a run that failed before scoring keeps its rows, with no value
    select *
    from quality_runs
    unpivot include nulls (
        metric_value for metric in (ndcg_at_10, recall_at_10, recall_at_100, mrr_at_10)
    )

),

compared as (

    select
        *,
        lag(metric_value) over (
            partition by dataset, model_id, search_mode, metric order by started_at, run_id
        ) as previous_value

    from metrics

),

final as (

    select
        run_id || '/' || search_mode || '/' || metric as quality_metric_id,
        run_id,
        dataset,
        model_id,
        search_mode,
        collection,
        started_at,
        cast(started_at as date) as run_date,
        query_count,
        metric,
        metric_value,
        previous_value,
        metric_value - previous_value as change_from_previous,
        status,
        is_passed,
        gate_message,
        run_seconds

    from compared

)

select * from final
