with source as (

    select * from {{ source('tessera', 'contract_results') }}

),

renamed as (

    select
        run_id,
        source,
        suite,
        expectation,
        "column" as column_name,
        severity,
        success as is_success,
        element_count,
        unexpected_count,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
