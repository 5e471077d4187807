with source as (

    select * from {{ source('tessera', 'search_requests') }}

),

renamed as (

    select
        request_id,
        run_id as process_run_id,
        interface,
        route,
        status as http_status,
        coalesce(mode, 'default') as search_mode,
        k,
        hits,
        collection,
        latency_ms,
        embed_ms,
        engine_ms,
        query as query_text,
        route in ('/v1/search', 'tool/search') as is_search,
        status >= 400 as is_error,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
