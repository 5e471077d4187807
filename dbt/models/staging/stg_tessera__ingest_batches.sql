with source as (

    select * from {{ source('tessera', 'ingest_batches') }}

),

renamed as (

    select
        run_id,
        source,
        stage,
        batch_index,
        items,
        seconds,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
