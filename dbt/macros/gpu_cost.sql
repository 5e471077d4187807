{% macro gpu_cost(usage, into) -%}
    {#- The GPU bill of each row of the CTE `usage` (columns gpu_type, is_gpu, gpu_seconds), as
        CTEs ending in `into`: every column of `usage`, gpu_seconds billed, plus priced_gpu_type,
        gpu_count, usd_per_second, is_price_unknown and estimated_cost_usd. fct_embedding_cost
        and fct_caption_cost both bill through here, so a GPU second costs the same in each. -#}
gpu_price_list as (

    select
        {{ gpu_price_key('gpu_type') }} as gpu_key,
        gpu_type as priced_gpu_type,
        usd_per_second

    from {{ ref('gpu_prices') }}

),

gpu_priced as (

    select
        {{ usage }}.*,
        {{ gpu_count(usage ~ '.gpu_type') }} as gpu_count,
        gpu_price_list.priced_gpu_type,
        gpu_price_list.usd_per_second

    from {{ usage }}
    left join gpu_price_list
        on {{ gpu_price_key(usage ~ '.gpu_type') }} = gpu_price_list.gpu_key

),

gpu_billed as (

    select
        -- GPU time is what we pay for; a CPU run has none, whatever it recorded.
        * replace (
            case when is_gpu then priced_gpu_type end as priced_gpu_type,
            case when is_gpu then gpu_count else 0 end as gpu_count,
            case when is_gpu then coalesce(gpu_seconds, 0) else 0 end as gpu_seconds,
            case when is_gpu then usd_per_second else 0 end as usd_per_second
        ),
        -- Reads the price as joined (the replaced column is 0 on CPU, never null).
        is_gpu and usd_per_second is null as is_price_unknown

    from gpu_priced

),

{{ into }} as (

    select
        *,
        -- CPU runs cost 0; a GPU with no price in the gpu_prices seed gets null, never 0, so an
        -- unpriced GPU cannot pass for a free one.
        case
            when not is_gpu then 0.0
            else round(gpu_seconds * gpu_count * usd_per_second, 9)
        end as estimated_cost_usd

    from gpu_billed

)
{%- endmacro %}
