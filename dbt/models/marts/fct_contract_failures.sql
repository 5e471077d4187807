with results as (

    select * from {{ ref('stg_tessera__contract_results') }}

),

quarantine as (

    -- A record is one file or document of a source, however often it is re-checked.
    select *, coalesce(doc_id, uri) as record_key
    from {{ ref('stg_tessera__quarantine') }}

),

documents as (

    select * from {{ ref('stg_tessera__documents_indexed') }}

),

cleared as (

    -- The last time a run took each quarantined record in (indexed, unchanged) or removed it:
    -- a quarantine before that no longer stands.
    select d.source, d.doc_id, max(d.recorded_at) as cleared_at
    from documents as d
    semi join quarantine as q
        on d.source is not distinct from q.source and d.doc_id = q.record_key
    where d.outcome <> 'quarantined'
    group by all

),

standing as (

    -- Each record's last quarantining run (every expectation it broke in it), unless a later
    -- run cleared the record.
    select
        cast(q.recorded_at as date) as failure_date,
        q.source,
        q.suite,
        q.expectation,
        count(distinct q.record_key) as currently_quarantined_records

    from (
        select *, arg_max(run_id, recorded_at) over (partition by source, record_key) as last_run_id
        from quarantine
    ) as q
    left join cleared as c
        on q.source is not distinct from c.source and q.record_key = c.doc_id
    where q.run_id = q.last_run_id
        and (c.cleared_at is null or c.cleared_at < q.recorded_at)
    group by all

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
        -- Distinct records: a bad file re-checked by a second run that day is one record.
        count(distinct record_key) as quarantined_records,
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
        coalesce(s.currently_quarantined_records, 0) as currently_quarantined_records,
        q.top_reason,
        q.reasons,
        q.last_quarantined_at

    from failed_checks as f
    full outer join quarantined as q
        on f.failure_date = q.failure_date
        and f.source is not distinct from q.source
        and f.suite is not distinct from q.suite
        and f.expectation is not distinct from q.expectation
    left join standing as s
        on q.failure_date = s.failure_date
        and q.source is not distinct from s.source
        and q.suite is not distinct from s.suite
        and q.expectation is not distinct from s.expectation

)

select
    concat_ws('/', strftime(failure_date, '%Y-%m-%d'), coalesce(source, '-'), coalesce(suite, '-'),
        coalesce(expectation, '-')) as failure_id,
    *
from joined
