with source as (

    select * from {{ source('tessera', 'ingest_runs') }}

),

renamed as (

    select
        ---------- ids
        run_id,
        trace_id,
        flow,
        sources as source_list,
        collection,
        model_id,

        ---------- where it embedded
        backend,
        lower(device) as device,
        gpu_type,

        ---------- outcome
        status,
        error as error_message,
        timezone('UTC', started_at) as started_at,
        timezone('UTC', finished_at) as finished_at,

        ---------- counts
        seen as documents_seen,
        indexed as documents_indexed,
        unchanged as documents_unchanged,
        quarantined as documents_quarantined,
        deleted as documents_deleted,
        chunks_embedded,
        points_upserted,
        sparse_written as sparse_vectors_written,

        ---------- durations (seconds)
        seconds as run_seconds,
        gpu_seconds,
        discover_seconds,
        load_seconds,
        chunk_seconds,
        diff_seconds,
        embed_seconds,
        upsert_seconds,
        delete_seconds,
        sparse_seconds,

        ---------- flags
        status = 'failed' as is_failed,
        -- A run refused for the user's input (a bad config value, a source folder that is gone):
        -- not a pipeline failure, and counted apart from one.
        status = 'failed_input' as is_failed_input,
        -- What kind of run: a declared-source ingest, a quality flow's corpus, or an ad-hoc PATH.
        case
            when flow = 'quality' then 'quality'
            when sources like 'adhoc-%' then 'adhoc'
            else 'scheduled_or_manual'
        end as run_kind,
        gpu_type is not null or coalesce(lower(device), 'cpu') <> 'cpu' as is_gpu

    from source

)

select * from renamed
