with runs as (

    select * from {{ ref('fct_ingest_runs') }}

),

{{ gpu_cost('runs', into='costed') }},

final as (

    select
        run_id,
        flow,
        started_at,
        run_date,
        model_id,
        backend,
        device,
        gpu_type,
        is_gpu,
        priced_gpu_type,
        gpu_count,
        chunks_embedded,
        embed_seconds,
        gpu_seconds,
        usd_per_second,
        is_price_unknown,
        estimated_cost_usd

    from costed

)

select
    *,
    round(estimated_cost_usd * 1000 / nullif(chunks_embedded, 0), 9) as cost_usd_per_1k_chunks
from final
