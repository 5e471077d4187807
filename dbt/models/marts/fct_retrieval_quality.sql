with quality_runs as (

    select * from {{ ref('stg_tessera__quality_runs') }}

),

nightly_comparisons as (

    -- a nightly run's paired comparison with the previous run; the latest if one was recorded twice
    select *
    from {{ ref('stg_tessera__quality_comparisons') }}
    where kind = 'nightly'
    qualify row_number() over (
        partition by run_id, dataset, search_mode, metric order by recorded_at desc
    ) = 1

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

with_comparison as (

    select
        compared.*,
        nightly_comparisons.ci_low,
        nightly_comparisons.ci_high,
        nightly_comparisons.p_value,
        nightly_comparisons.power,
        nightly_comparisons.is_significantly_worse

    from compared
    left join nightly_comparisons
        on compared.run_id = nightly_comparisons.run_id
        and compared.dataset = nightly_comparisons.dataset
        and compared.search_mode = nightly_comparisons.search_mode
        and compared.metric = nightly_comparisons.metric

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
        ci_low,
        ci_high,
        p_value,
        power,
        is_significantly_worse,
        status,
        is_passed,
        gate_message,
        run_seconds

    from with_comparison

)

select * from final
