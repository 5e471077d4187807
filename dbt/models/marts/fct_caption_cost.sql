with captions as (

    select * from {{ ref('stg_tessera__caption_runs') }}

),

{{ gpu_cost('captions', into='costed') }},

final as (

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
        priced_gpu_type,
        gpu_count,
        gpu_seconds,
        usd_per_second,
        is_price_unknown,
        estimated_cost_usd

    from costed

)

select
    *,
    -- Reused captions cost nothing: the price of 1,000 captions is per caption made.
    round(gpu_seconds * 1000 / nullif(captions_made, 0), 6) as gpu_seconds_per_1k_captions,
    round(estimated_cost_usd * 1000 / nullif(captions_made, 0), 9) as cost_usd_per_1k_captions
from final
