with source as (

    select * from {{ source('tessera', 'search_requests') }}

),

renamed as (

    select
        request_id,
        run_id as process_run_id,
        trace_id,
        key_id,
        interface,
        route,
        status as http_status,
        -- The mode that ran: a request refused or failed before its search ran has none, and
        -- a value outside the three modes (a typo an older service recorded) is no mode.
        case
            when status < 400 and mode in ('dense', 'sparse', 'hybrid') then mode
        end as search_mode,
        case
            when status < 400 then 'answered'
            when status < 500 then 'rejected'
            else 'failed'
        end as request_status,
        k,
        hits,
        collection,
        latency_ms,
        embed_ms,
        engine_ms,
        query as query_text,
        route in ('/v1/search', 'tool/search', 'page/search', 'cli/search') as is_search,
        status >= 400 as is_error,
        timezone('UTC', recorded_at) as recorded_at

    from source

)

select * from renamed
