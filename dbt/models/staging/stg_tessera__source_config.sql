with source as (

    select * from {{ source('tessera', 'source_config') }}

),

renamed as (

    select
        source,
        kind,
        path as source_path,
        "glob" as file_glob,
        modality,
        ttl,
        ttl_seconds,
        schedule,
        schedule_interval_seconds,
        delete_missing as is_delete_missing,
        collection,
        timezone('UTC', snapshot_at) as snapshot_at

    from source

)

select * from renamed
