//! Integration tests of saas-billing's public API: worked examples with
//! literal numbers, property tests, the store conformance suites and the
//! no-floating-point check.

// Helpers outside #[test] functions unwrap too; a panic is a test failure.
#![allow(clippy::unwrap_used)]

#[path = "billing/addons.rs"]
mod addons;
#[path = "billing/aggregation.rs"]
mod aggregation;
#[path = "billing/anchor.rs"]
mod anchor;
#[path = "billing/batch.rs"]
mod batch;
#[path = "billing/calendar.rs"]
mod calendar;
#[path = "billing/charge.rs"]
mod charge;
#[path = "billing/credit_notes.rs"]
mod credit_notes;
#[path = "billing/discounts.rs"]
mod discounts;
#[path = "billing/entitlements.rs"]
mod entitlements;
#[path = "billing/fixtures.rs"]
mod fixtures;
#[path = "billing/in_transaction.rs"]
mod in_transaction;
#[path = "billing/invoicing.rs"]
mod invoicing;
#[path = "billing/lagging_cycle.rs"]
mod lagging_cycle;
#[path = "billing/leases.rs"]
mod leases;
#[path = "billing/metered_addons.rs"]
mod metered_addons;
#[path = "billing/metered_addons_timing.rs"]
mod metered_addons_timing;
#[path = "billing/metering.rs"]
mod metering;
#[path = "billing/metrics.rs"]
mod metrics;
#[path = "billing/money.rs"]
mod money;
#[path = "billing/no_float.rs"]
mod no_float;
#[path = "billing/payments.rs"]
mod payments;
#[path = "billing/prepaid.rs"]
mod prepaid;
#[path = "billing/properties.rs"]
mod properties;
#[path = "billing/quota_grants.rs"]
mod quota_grants;
#[path = "billing/quotas.rs"]
mod quotas;
#[path = "billing/quotas_in_transaction.rs"]
mod quotas_in_transaction;
#[path = "billing/redis_quotas.rs"]
mod redis_quotas;
#[path = "billing/reexports.rs"]
mod reexports;
#[path = "billing/restore.rs"]
mod restore;
#[path = "billing/sql_scenario.rs"]
mod sql_scenario;
#[path = "billing/sql_stores.rs"]
mod sql_stores;
#[path = "billing/sqlite_tenant_ids.rs"]
mod sqlite_tenant_ids;
#[path = "billing/stores.rs"]
mod stores;
#[path = "billing/subscriptions.rs"]
mod subscriptions;
#[path = "billing/taxes.rs"]
mod taxes;
#[path = "billing/year.rs"]
mod year;
