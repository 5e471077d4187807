with source as (

    select * from {{ source('tessera', 'model_cache_events') }}

),

renamed as (

    select
        run_id,
        model_id,
        revision,
        path as model_path,
        files_sha256 as files_sha256_json,
        probe_cosine,
        load_seconds,
        status,
        message,
        timezone('UTC', recorded_at) as recorded_at,
        status in ('ok', 'downloaded') as is_usable

    from source

)

select * from renamed
