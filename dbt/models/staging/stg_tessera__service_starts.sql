with source as (

    select * from {{ source('tessera', 'service_starts') }}

),

renamed as (

    select
        run_id as process_run_id,
        trace_id,
        interface,
        phase,
        seconds,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
