with source as (

    select * from {{ source('tessera', 'documents_indexed') }}

),

renamed as (

    select
        run_id,
        source,
        collection,
        doc_id,
        outcome,
        modality,
        content_hash,
        chunk_count,
        bytes as content_bytes,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
