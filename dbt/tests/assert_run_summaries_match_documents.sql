-- Every completed run's summary counts the same documents as its document events: a mismatch
-- means a run wrote one inconsistently with the other. An invariant, so an error.

with documents as (

    select
        run_id,
        count(*) filter (where outcome = 'indexed') as indexed,
        count(*) filter (where outcome = 'unchanged') as unchanged,
        count(*) filter (where outcome = 'quarantined') as quarantined,
        count(*) filter (where outcome = 'deleted') as deleted
    from {{ ref('stg_tessera__documents_indexed') }}
    group by run_id

)

select runs.run_id
from {{ ref('fct_ingest_runs') }} as runs
left join documents using (run_id)
where runs.status = 'completed'
  and (coalesce(documents.indexed, 0) <> runs.documents_indexed
       or coalesce(documents.unchanged, 0) <> runs.documents_unchanged
       or coalesce(documents.quarantined, 0) <> runs.documents_quarantined
       or coalesce(documents.deleted, 0) <> runs.documents_deleted)
