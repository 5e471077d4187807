with captions as (

    select * from {{ ref('stg_tessera__caption_runs') }}

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
        captions.*,
        {{ gpu_count('captions.gpu_type') }} as gpu_count,
        prices.priced_gpu_type,
        prices.usd_per_second

    from captions
    left join prices
        on {{ gpu_price_key('captions.gpu_type') }} = prices.gpu_key

),

costed as (

    select
        run_id,
        source_name,
        captioner_model_id,
        recorded_at,
        cast(recorded_at as date) as run_date,
        backend,
        device,
        gpu_type,
        is_gpu,
        captions_made,
        captions_reused,
        captions_failed,
        caption_seconds,
        case when is_gpu then priced_gpu_type end as priced_gpu_type,
        case when is_gpu then gpu_count else 0 end as gpu_count,
        -- GPU time is what we pay for; a CPU run has none, whatever it recorded.
        case when is_gpu then coalesce(gpu_seconds, 0) else 0 end as gpu_seconds,
        case when is_gpu then usd_per_second else 0 end as usd_per_second,
        is_gpu and usd_per_second is null as is_price_unknown

    from joined

),

final as (

    select
        *,
        -- As in fct_embedding_cost: an unpriced GPU costs null, never 0.
        case
            when not is_gpu then 0.0
            else round(gpu_seconds * gpu_count * usd_per_second, 9)
        end as estimated_cost_usd

    from costed

)

select
    *,
    -- Reused captions cost nothing: the price of 1,000 captions is per caption made.
    round(gpu_seconds * 1000 / nullif(captions_made, 0), 6) as gpu_seconds_per_1k_captions,
    round(estimated_cost_usd * 1000 / nullif(captions_made, 0), 9) as cost_usd_per_1k_captions
from final
