with source as (

    select * from {{ source('tessera', 'index_snapshots') }}

),

renamed as (

    select
        run_id,
        collection,
        source,
        points,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
