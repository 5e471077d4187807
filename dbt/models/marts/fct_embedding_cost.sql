with runs as (

    select * from {{ ref('fct_ingest_runs') }}

),

prices as (

    select
        {{ gpu_price_key('gpu_type') }} as gpu_key,
        gpu_type as priced_gpu_type,
        usd_per_second

    from {{ ref('gpu_prices') }}

),

joined as (

    select
        runs.*,
        {{ gpu_count('runs.gpu_type') }} as gpu_count,
        prices.priced_gpu_type,
        prices.usd_per_second

    from runs
    left join prices
        on {{ gpu_price_key('runs.gpu_type') }} = prices.gpu_key

),

costed as (

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
        case when is_gpu then priced_gpu_type end as priced_gpu_type,
        case when is_gpu then gpu_count else 0 end as gpu_count,
        chunks_embedded,
        embed_seconds,
        -- GPU time is what we pay for; a CPU run has none, whatever it recorded.
        case when is_gpu then coalesce(gpu_seconds, 0) else 0 end as gpu_seconds,
        case when is_gpu then usd_per_second else 0 end as usd_per_second,
        is_gpu and usd_per_second is null as is_price_unknown

    from joined

),

final as (

    select
        *,
        -- CPU runs cost 0; a GPU with no price in the gpu_prices seed gets null, never 0, so an
        -- unpriced GPU cannot pass for a free one.
        case
            when not is_gpu then 0.0
            else round(gpu_seconds * gpu_count * usd_per_second, 9)
        end as estimated_cost_usd

    from costed

)

select
    *,
    round(estimated_cost_usd * 1000 / nullif(chunks_embedded, 0), 9) as cost_usd_per_1k_chunks
from final
