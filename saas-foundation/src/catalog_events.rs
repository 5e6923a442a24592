//! Tenant lifecycle and subscription events committed with the change.
//!
//! A lifecycle hook runs after the change has committed, so a crash in
//! between loses the event. Here the database writes the event instead:
//! triggers on the tenant catalog (`saas_tenants`) and on billing's
//! `billing_subscriptions` insert one row into saas-events' outbox table
//! in the same transaction as the change — whatever code path makes it
//! (the tenancy's operations, billing's stores, an operator's SQL). A
//! change that rolls back leaves no event; a committed one stays in the
//! outbox until the ordinary relay has delivered it. Delivery is
//! at least once, so consumers deduplicate through saas-events' inbox
//! (the event id is fixed when the row is written).
//!
//! Run the installer at every start, after the catalog's and billing's
//! own migrations: it is idempotent and replaces older trigger versions.
//!
//! Keep the outbox away from row tenants' shared tables: deleting a row
//! tenant purges its rows from every table there with a `tenant_id`
//! column, which would take the tenant's pending events — its deletion
//! events included — with its data. On PostgreSQL give the outbox a schema
//! of its own ([`PgCatalogEvents::new`]); on SQLite keep the catalog in a
//! file of its own, apart from the tenancy's shared file (as
//! `SqliteTenancy`'s setup does).
//!
//! | change | topic | type |
//! |---|---|---|
//! | tenant row inserted | [`TENANT_TOPIC`] | [`TENANT_CREATED`] |
//! | status `provisioning` → `active` | [`TENANT_TOPIC`] | [`TENANT_PROVISIONED`] |
//! | status → `deleted` (data gone) | [`TENANT_TOPIC`] | [`TENANT_DELETED`] |
//! | any other status change | [`TENANT_TOPIC`] | [`TENANT_STATUS_CHANGED`] |
//! | tenant row deleted (record purged) | [`TENANT_TOPIC`] | [`TENANT_REMOVED`] |
//! | subscription inserted | [`BILLING_TOPIC`] | [`SUBSCRIPTION_CREATED`] |
//! | subscription status changed | [`BILLING_TOPIC`] | [`SUBSCRIPTION_STATUS_CHANGED`] |
//!
//! Every event carries the tenant (`tenantid`), `time`, a random `id` and
//! JSON `data`: for tenants `{"id", "slug", "strategy", "cluster", "from",
//! "to"}` (`from` is null on creation, `to` on removal), for
//! subscriptions `{"id", "tenant_id", "plan", "from", "to"}`. The
//! `subject` is the tenant's or the subscription's id.
//!
//! A status written again unchanged (a repeated suspend) writes no event.
//! Plan changes, seats and invoices are not covered: they are not visible
//! as a column change the trigger could name honestly.

#[cfg(feature = "postgres")]
mod pg_sql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PgCatalogEvents;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteCatalogEvents;

/// The topic of tenant lifecycle events.
pub const TENANT_TOPIC: &str = "saas.tenants";
/// The topic of subscription events.
pub const BILLING_TOPIC: &str = "saas.billing";
/// The `source` of tenant lifecycle events.
pub const TENANT_SOURCE: &str = "/saas/tenancy";
/// The `source` of subscription events.
pub const BILLING_SOURCE: &str = "/saas/billing";

/// A tenant was added to the catalog (status `provisioning`, usually).
pub const TENANT_CREATED: &str = "saas.tenant.created";
/// A tenant's storage exists and it became `active`.
pub const TENANT_PROVISIONED: &str = "saas.tenant.provisioned";
/// A tenant's status changed (suspended, resumed, deleting, moving…).
pub const TENANT_STATUS_CHANGED: &str = "saas.tenant.status_changed";
/// A tenant's data is gone (status `deleted`).
pub const TENANT_DELETED: &str = "saas.tenant.deleted";
/// A tenant's catalog record itself was deleted.
pub const TENANT_REMOVED: &str = "saas.tenant.removed";
/// A subscription was created.
pub const SUBSCRIPTION_CREATED: &str = "saas.billing.subscription.created";
/// A subscription's status changed.
pub const SUBSCRIPTION_STATUS_CHANGED: &str = "saas.billing.subscription.status_changed";

/// A sqlx error as saas-events' backend error.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn backend_error(backend: &'static str, error: sqlx::Error) -> saas_events::EventError {
    // Only a lost connection or a busy pool may pass on a second try; a
    // refused statement (missing table, privilege) will not.
    let retryable = matches!(
        error,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
    );
    saas_events::EventError::Backend {
        backend,
        retryable,
        source: Box::new(error),
    }
}
