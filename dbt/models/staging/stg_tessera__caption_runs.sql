with source as (

    select * from {{ source('tessera', 'caption_runs') }}

),

renamed as (

    select
        ---------- ids
        run_id,
        source as source_name,
        captioner as captioner_model_id,

        ---------- where it captioned
        backend,
        lower(device) as device,
        gpu_type,

        ---------- counts
        made as captions_made,
        reused as captions_reused,
        failed as captions_failed,

        ---------- durations (seconds)
        seconds as caption_seconds,
        gpu_seconds,
        timezone('UTC', recorded_at) as recorded_at,

        ---------- flags
        gpu_type is not null or coalesce(lower(device), 'cpu') <> 'cpu' as is_gpu

    from source

)

select * from renamed
