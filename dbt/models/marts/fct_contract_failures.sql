with results as (

    select * from {{ ref('stg_tessera__contract_results') }}

),

quarantine as (

    select * from {{ ref('stg_tessera__quarantine') }}

),

failed_checks as (

    select
        cast(recorded_at as date) as failure_date,
        source,
        suite,
        expectation,
        count(*) as failed_checks,
        count(distinct run_id) as failed_runs,
        sum(unexpected_count) as unexpected_count,
        sum(element_count) as element_count,
        string_agg(distinct column_name, ', ' order by column_name) as column_names,
        -- 'fatal' outranks 'error': a fatal failure stopped the batch
        max(severity) as worst_severity

    from results
    where not is_success
    group by all

),

quarantined as (

    select
        cast(recorded_at as date) as failure_date,
        source,
        suite,
        expectation,
        count(*) as quarantined_records,
        count(distinct run_id) as quarantine_runs,
        mode(reason) as top_reason,
        string_agg(distinct reason, ' | ' order by reason) as reasons,
        max(recorded_at) as last_quarantined_at

    from quarantine
    group by all

),

joined as (

    select
        coalesce(f.failure_date, q.failure_date) as failure_date,
        coalesce(f.source, q.source) as source,
        coalesce(f.suite, q.suite) as suite,
        coalesce(f.expectation, q.expectation) as expectation,
        coalesce(f.failed_checks, 0) as failed_checks,
        coalesce(f.failed_runs, 0) as failed_runs,
        coalesce(q.quarantine_runs, 0) as quarantine_runs,
        coalesce(f.unexpected_count, 0) as unexpected_count,
        coalesce(f.element_count, 0) as element_count,
        f.column_names,
        f.worst_severity,
        coalesce(q.quarantined_records, 0) as quarantined_records,
        q.top_reason,
        q.reasons,
        q.last_quarantined_at

    from failed_checks as f
    full outer join quarantined as q
        on f.failure_date = q.failure_date
        and f.source is not distinct from q.source
        and f.suite is not distinct from q.suite
        and f.expectation is not distinct from q.expectation

)

select
    concat_ws('/', strftime(failure_date, '%Y-%m-%d'), coalesce(source, '-'), coalesce(suite, '-'),
        coalesce(expectation, '-')) as failure_id,
    *
from joined
