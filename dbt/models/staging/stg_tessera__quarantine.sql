with source as (

    select * from {{ source('tessera', 'quarantine') }}

),

renamed as (

    select
        run_id,
        source,
        doc_id,
        uri,
        suite,
        expectation,
        observed as observed_value,
        reason,
        content_hash,
        previous_version,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
