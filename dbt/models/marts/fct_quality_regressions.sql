with comparisons as (

    -- the latest record of each comparison, if one was recorded twice
    select *
    from {{ ref('stg_tessera__quality_comparisons') }}
    qualify row_number() over (partition by comparison_metric_id order by recorded_at desc) = 1

),

changes as (

    select * from {{ ref('stg_tessera__quality_query_changes') }}

),

-- only the changes that went through: what a switch, a passed nightly run or applied settings
-- cost; a refused or failed comparison changed nothing for the readers
worse as (

    select
        changes.*,
        comparisons.baseline,
        comparisons.candidate,
        comparisons.p_value,
        comparisons.is_significantly_worse,
        comparisons.decision

    from changes
    inner join comparisons
        on changes.run_id = comparisons.run_id
        and changes.kind = comparisons.kind
        and changes.subject = comparisons.subject
        and changes.dataset = comparisons.dataset
        and changes.search_mode = comparisons.search_mode
        and changes.metric = comparisons.metric
    where comparisons.is_change_accepted and changes.difference < 0

),

final as (

    select
        run_id || '/' || kind || '/' || subject || '/' || dataset || '/' || search_mode || '/'
            || metric || '/' || query_id as quality_regression_id,
        run_id,
        kind,
        subject,
        dataset,
        search_mode,
        metric,
        query_id,
        baseline,
        candidate,
        baseline_score,
        candidate_score,
        difference,
        p_value,
        is_significantly_worse,
        decision,
        recorded_at,
        cast(recorded_at as date) as regression_date

    from worse

)

select * from final
