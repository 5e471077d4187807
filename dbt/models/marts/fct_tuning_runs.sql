with tuning_runs as (

    select * from {{ ref('stg_tessera__tuning_runs') }}

),

test_comparisons as (

    -- the run's paired nDCG@10 comparison on the test split at full depth (its dataset is the
    -- run's; the top-10 one is recorded as "<set> (k=10)"); the latest if recorded twice
    select *
    from {{ ref('stg_tessera__quality_comparisons') }}
    where kind = 'tune' and metric = 'ndcg_at_10'
    qualify row_number() over (partition by run_id, dataset order by recorded_at desc) = 1

),

final as (

    select
        tuning_runs.run_id as tuning_run_id,
        tuning_runs.dataset,
        tuning_runs.collection,
        tuning_runs.search_mode,
        tuning_runs.decision,
        tuning_runs.is_applied,
        tuning_runs.reason,
        tuning_runs.current_settings,
        tuning_runs.chosen_settings,
        tuning_runs.chosen_settings <> tuning_runs.current_settings as is_new_choice,
        tuning_runs.trial_count,
        tuning_runs.train_query_count,
        tuning_runs.test_query_count,
        tuning_runs.train_ndcg_at_10_current,
        tuning_runs.train_ndcg_at_10_chosen,
        tuning_runs.train_ndcg_at_10_chosen - tuning_runs.train_ndcg_at_10_current as train_gain,
        tuning_runs.test_ndcg_at_10_current,
        tuning_runs.test_ndcg_at_10_chosen,
        tuning_runs.test_ndcg_at_10_chosen - tuning_runs.test_ndcg_at_10_current
            as test_difference,
        test_comparisons.ci_low,
        test_comparisons.ci_high,
        -- the comparison's, else the run's own (the same test; a run always records both)
        coalesce(test_comparisons.p_value, tuning_runs.p_value) as p_value,
        test_comparisons.power,
        test_comparisons.is_significantly_worse,
        tuning_runs.started_at,
        tuning_runs.finished_at,
        cast(tuning_runs.finished_at as date) as tuning_date,
        tuning_runs.run_seconds

    from tuning_runs
    left join test_comparisons
        on tuning_runs.run_id = test_comparisons.run_id
        and tuning_runs.dataset = test_comparisons.dataset

)

select * from final
