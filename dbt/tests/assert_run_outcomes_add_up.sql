-- Invariant "nothing lost silently": every record a completed run saw ended indexed,
-- unchanged or quarantined, and the run's summary says so.

select run_id, documents_seen, documents_indexed, documents_unchanged, documents_quarantined
from {{ ref('fct_ingest_runs') }}
where status = 'completed'
  and documents_seen
      <> documents_indexed + documents_unchanged + documents_quarantined
