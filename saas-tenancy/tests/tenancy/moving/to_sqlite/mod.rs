//! PostgreSQL → SQLite (`PgTenancy::move_tenant_to_sqlite`), the two
//! tenancies sharing the PostgreSQL catalog: a row tenant into the SQLite
//! shared file, a schema and a database tenant into tenant files, eight
//! writers throughout (routed by the record: PostgreSQL until it refuses
//! the tenant with `PlacementNotServedHere`, SQLite after), every type of
//! the mapping read back through the SQLite tenancy, other PostgreSQL
//! processes — one following moves, one not — refused afterwards, the
//! source unchanged after the fence, neighbours (on PostgreSQL and in the
//! SQLite shared file) untouched; stopped moves resumed or aborted;
//! unsupported and unmatched columns refused before the fence.

mod fixture;
mod kill;
mod online;
mod writers;
