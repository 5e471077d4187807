with runs as (

    select * from {{ ref('stg_tessera__ingest_runs') }}

),

-- A run writes its summary once; if a retried task wrote it twice, keep the latest so one bad
-- event cannot block the whole build (stg_tessera__ingest_runs warns about the duplicate).
-- Which sources each run actually read (source_list is what it was asked for, e.g. "all").
run_sources as (

    select
        run_id,
        string_agg(distinct source, ',' order by source) as source_names,
        count(distinct source) as source_count

    from {{ ref('stg_tessera__ingest_batches') }}
    group by run_id

),

latest as (

    select *
    from runs
    qualify row_number() over (partition by run_id order by finished_at desc nulls last) = 1

),

-- A run writes its summary row last. One that left batches but no summary was killed (or was
-- still running when the marts were built): its row is rebuilt from the batch and document
-- events it flushed, with status killed.
batch_totals as (

    select
        run_id,
        min(recorded_at) as started_at,
        max(recorded_at) as last_event_at,
        sum(seconds) filter (where stage = 'discover') as discover_seconds,
        sum(seconds) filter (where stage = 'load') as load_seconds,
        sum(seconds) filter (where stage = 'chunk') as chunk_seconds,
        sum(seconds) filter (where stage = 'diff') as diff_seconds,
        sum(seconds) filter (where stage = 'embed') as embed_seconds,
        sum(seconds) filter (where stage = 'upsert') as upsert_seconds,
        sum(seconds) filter (where stage = 'delete') as delete_seconds,
        bool_and(source like 'adhoc-%') as is_adhoc

    from {{ ref('stg_tessera__ingest_batches') }}
    group by run_id

),

document_totals as (

    select
        run_id,
        count(*) filter (where outcome = 'indexed') as documents_indexed,
        count(*) filter (where outcome = 'unchanged') as documents_unchanged,
        count(*) filter (where outcome = 'quarantined') as documents_quarantined,
        count(*) filter (where outcome = 'deleted') as documents_deleted,
        coalesce(sum(chunk_count) filter (where outcome = 'indexed'), 0) as chunks_embedded

    from {{ ref('stg_tessera__documents_indexed') }}
    group by run_id

),

killed as (

    select
        batch_totals.run_id,
        cast(null as varchar) as flow,
        cast(null as varchar) as source_list,
        cast(null as varchar) as collection,
        cast(null as varchar) as model_id,
        cast(null as varchar) as backend,
        cast(null as varchar) as device,
        cast(null as varchar) as gpu_type,
        false as is_gpu,
        'killed' as status,
        false as is_failed,
        false as is_failed_input,
        -- A killed run wrote no flow name: ad-hoc when all its batches were, else a declared run.
        case when batch_totals.is_adhoc then 'adhoc' else 'scheduled_or_manual' end as run_kind,
        'no run summary: the run was killed (or was still running when the marts were built)'
            as error_message,
        batch_totals.started_at,
        cast(null as timestamp) as finished_at,

        coalesce(d.documents_indexed + d.documents_unchanged + d.documents_quarantined, 0)
            as documents_seen,
        coalesce(d.documents_indexed, 0) as documents_indexed,
        coalesce(d.documents_unchanged, 0) as documents_unchanged,
        coalesce(d.documents_quarantined, 0) as documents_quarantined,
        coalesce(d.documents_deleted, 0) as documents_deleted,
        coalesce(d.chunks_embedded, 0) as chunks_embedded,
        coalesce(d.chunks_embedded, 0) as points_upserted,

        epoch(batch_totals.last_event_at) - epoch(batch_totals.started_at) as run_seconds,
        batch_totals.discover_seconds,
        batch_totals.load_seconds,
        batch_totals.chunk_seconds,
        batch_totals.diff_seconds,
        batch_totals.embed_seconds,
        batch_totals.upsert_seconds,
        batch_totals.delete_seconds,
        cast(null as double) as gpu_seconds

    from batch_totals
    left join document_totals as d using (run_id)
    where batch_totals.run_id not in (select run_id from runs)

),

all_runs as (

    select
        run_id, flow, source_list, collection, model_id, backend, device, gpu_type, is_gpu,
        status, is_failed, is_failed_input, run_kind, error_message, started_at, finished_at,
        documents_seen, documents_indexed, documents_unchanged, documents_quarantined,
        documents_deleted, chunks_embedded, points_upserted,
        run_seconds, discover_seconds, load_seconds, chunk_seconds, diff_seconds, embed_seconds,
        upsert_seconds, delete_seconds, gpu_seconds
    from latest

    union all

    select
        run_id, flow, source_list, collection, model_id, backend, device, gpu_type, is_gpu,
        status, is_failed, is_failed_input, run_kind, error_message, started_at, finished_at,
        documents_seen, documents_indexed, documents_unchanged, documents_quarantined,
        documents_deleted, chunks_embedded, points_upserted,
        run_seconds, discover_seconds, load_seconds, chunk_seconds, diff_seconds, embed_seconds,
        upsert_seconds, delete_seconds, gpu_seconds
    from killed

),

final as (

    select
        run_id,
        flow,
        source_list,
        coalesce(run_sources.source_names, '') as source_names,
        coalesce(run_sources.source_count, 0) as source_count,
        collection,
        model_id,
        backend,
        device,
        gpu_type,
        is_gpu,
        status,
        is_failed,
        is_failed_input,
        run_kind,
        error_message,
        started_at,
        finished_at,
        cast(started_at as date) as run_date,

        documents_seen,
        documents_indexed,
        documents_unchanged,
        documents_quarantined,
        documents_deleted,
        chunks_embedded,
        points_upserted,

        run_seconds,
        discover_seconds,
        load_seconds,
        chunk_seconds,
        diff_seconds,
        embed_seconds,
        upsert_seconds,
        delete_seconds,
        gpu_seconds,

        documents_seen / nullif(run_seconds, 0) as documents_per_second,
        chunks_embedded / nullif(embed_seconds, 0) as chunks_embedded_per_second

    from all_runs
    left join run_sources using (run_id)

)

select * from final
