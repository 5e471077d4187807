{% macro gpu_price_key(column) -%}
    {#- The gpu_prices key for a GPU name as Modal spells it (L4, A100-80GB, H100:2) or as CUDA
        reports it (NVIDIA L4, Tesla T4, NVIDIA A100-SXM4-80GB, NVIDIA H100 80GB HBM3).
        A plain A100 is the 40 GB part, as on Modal. -#}
    {%- set name = "regexp_replace(upper(trim(" ~ column ~ ")), '^(NVIDIA|TESLA)\\s+', '')" -%}
    case
        when {{ name }} like 'A100%80GB%' then 'A100-80GB'
        when {{ name }} like 'A100%' then 'A100-40GB'
        else nullif(regexp_extract({{ name }}, '^[A-Z0-9]+'), '')
    end
{%- endmacro %}

{% macro gpu_count(column) -%}
    {#- Modal bills every GPU of a container: "H100:2" is two. -#}
    coalesce(try_cast(nullif(regexp_extract({{ column }}, ':(\d+)\s*$', 1), '') as integer), 1)
{%- endmacro %}
