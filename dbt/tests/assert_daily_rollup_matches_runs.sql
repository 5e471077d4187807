-- The per-source daily roll-up (from document events) and the run summaries count the same
-- documents. A mismatch means a run wrote its summary and its document events inconsistently.
{{ config(severity='warn') }}

with from_documents as (

    select
        sum(documents_indexed) as indexed,
        sum(documents_unchanged) as unchanged,
        sum(documents_quarantined) as quarantined,
        sum(documents_deleted) as deleted
    from {{ ref('fct_daily_ingest_by_source') }}

),

from_runs as (

    select
        sum(documents_indexed) as indexed,
        sum(documents_unchanged) as unchanged,
        sum(documents_quarantined) as quarantined,
        sum(documents_deleted) as deleted
    from {{ ref('fct_ingest_runs') }}
    where run_id in (select run_id from {{ ref('stg_tessera__documents_indexed') }})

)

select *
from from_documents, from_runs
where from_documents.indexed is distinct from from_runs.indexed
   or from_documents.unchanged is distinct from from_runs.unchanged
   or from_documents.quarantined is distinct from from_runs.quarantined
   or from_documents.deleted is distinct from from_runs.deleted
