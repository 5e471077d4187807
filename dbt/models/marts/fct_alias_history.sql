-- Which collection (and model) each alias pointed at, from when to when, and what it scored.
with migrations as (

    select * from {{ ref('fct_migrations') }}

),

changes as (

    select
        *,
        row_number() over (partition by alias order by finished_at, migration_id) as change_number
    from migrations
    where is_alias_change

),

-- Every nDCG@10 a migration measured for a collection, as the live or as the shadow side.
scores as (

    select from_collection as collection, live_ndcg_at_10 as ndcg_at_10, finished_at as measured_at
    from migrations
    where live_ndcg_at_10 is not null

    union all

    select to_collection, shadow_ndcg_at_10, finished_at
    from migrations
    where shadow_ndcg_at_10 is not null

),

periods as (

    select
        alias,
        to_collection as collection,
        to_model as model_id,
        finished_at as valid_from,
        decision as started_by,
        migration_id
    from changes

    union all

    -- What each alias served before its first recorded change (since it was created).
    select
        alias,
        from_collection,
        from_model,
        cast(null as timestamp),
        'before_first_migration',
        cast(null as varchar)
    from changes
    where change_number = 1

),

bounded as (

    select
        *,
        lead(valid_from) over (partition by alias order by valid_from nulls first) as valid_to
    from periods

),

final as (

    select
        b.alias || '/' || coalesce(strftime(b.valid_from, '%Y-%m-%dT%H:%M:%S.%f'), 'start')
            as alias_period_id,
        b.alias,
        b.collection,
        b.model_id,
        b.valid_from,
        b.valid_to,
        b.valid_to is null as is_current,
        b.started_by,
        b.migration_id,
        (
            select s.ndcg_at_10
            from scores as s
            where s.collection = b.collection
                and s.measured_at <= coalesce(b.valid_from, b.valid_to)
            order by s.measured_at desc
            limit 1
        ) as ndcg_at_10

    from bounded as b

)

select * from final
