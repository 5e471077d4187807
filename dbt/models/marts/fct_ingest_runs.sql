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

    from latest
    left join run_sources using (run_id)

)

select * from final
