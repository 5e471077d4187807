with source as (

    select * from {{ source('tessera', 'prune_runs') }}

),

renamed as (

    select
        run_id,
        collection,
        expired as points_expired,
        deleted as points_deleted,
        dry_run as is_dry_run,
        seconds as prune_seconds,
        timezone('UTC', started_at) as started_at

    from source

)

select * from renamed
