-- The per-source daily roll-up counts every document event exactly once (a run's documents
-- land on the day the run started, never on two days).

with from_rollup as (

    select
        sum(documents_indexed) as indexed,
        sum(documents_unchanged) as unchanged,
        sum(documents_quarantined) as quarantined,
        sum(documents_deleted) as deleted
    from {{ ref('fct_daily_ingest_by_source') }}

),

from_events as (

    select
        count(*) filter (where outcome = 'indexed') as indexed,
        count(*) filter (where outcome = 'unchanged') as unchanged,
        count(*) filter (where outcome = 'quarantined') as quarantined,
        count(*) filter (where outcome = 'deleted') as deleted
    from {{ ref('stg_tessera__documents_indexed') }}

)

select *
from from_rollup, from_events
where coalesce(from_rollup.indexed, 0) <> from_events.indexed
   or coalesce(from_rollup.unchanged, 0) <> from_events.unchanged
   or coalesce(from_rollup.quarantined, 0) <> from_events.quarantined
   or coalesce(from_rollup.deleted, 0) <> from_events.deleted
