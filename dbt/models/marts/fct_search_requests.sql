with requests as (

    select * from {{ ref('stg_tessera__search_requests') }}
    where is_search

),

final as (

    select
        concat_ws('/', cast(cast(recorded_at as date) as varchar), request_status, coalesce(search_mode, '-'))
            as day_status_mode_id,
        cast(recorded_at as date) as request_date,
        request_status,
        search_mode,
        count(*) as requests,
        count(*) filter (where is_error) as failed_requests,
        count(*) filter (where http_status = 429) as rate_limited_requests,
        round(quantile_cont(latency_ms, 0.50) filter (where not is_error), 3) as latency_p50_ms,
        round(quantile_cont(latency_ms, 0.95) filter (where not is_error), 3) as latency_p95_ms,
        round(quantile_cont(latency_ms, 0.99) filter (where not is_error), 3) as latency_p99_ms,
        avg(embed_ms) filter (where not is_error) as mean_embed_ms,
        avg(engine_ms) filter (where not is_error) as mean_engine_ms,
        avg(hits) filter (where not is_error) as mean_hits

    from requests
    group by 1, 2, 3, 4

)

select * from final
