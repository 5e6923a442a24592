//! The leak harness itself must fail on a leak: in-memory targets, each
//! with one isolation bug, are caught; the same target without the bug
//! passes (so the failures are the bugs', not the harness's).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use saas_core::{TenantContext, TenantId, TenantSlug};
use saas_tenancy::testing::leak::{LeakRow, LeakTarget, run_leak_harness};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// Reads return every tenant's rows.
    ReadsIgnoreTheScope,
    /// Key lookups are not scoped.
    LookupsIgnoreTheScope,
    /// A forged row is stored where the victim sees it.
    ForgeriesLand,
    /// Updates reach every tenant's rows.
    UpdatesIgnoreTheScope,
    /// Deletes reach every tenant's rows.
    DeletesIgnoreTheScope,
    /// A connection without a tenant sees everything.
    NoTenantSeesAll,
}

/// Rows as (stored for, claimed tenant column, key, value).
struct MemoryTarget {
    rows: Mutex<Vec<(TenantId, TenantId, i64, String)>>,
    bug: Bug,
}

impl MemoryTarget {
    fn visible(&self, ctx: &TenantContext, everything: bool) -> Vec<LeakRow> {
        let rows = self.rows.lock().unwrap();
        rows.iter()
            .filter(|r| everything || r.0 == ctx.tenant_id())
            .map(|r| (r.1, r.2, r.3.clone()))
            .collect()
    }
}

#[async_trait]
impl LeakTarget for MemoryTarget {
    async fn insert(
        &self,
        ctx: &TenantContext,
        claimed: TenantId,
        key: i64,
        value: &str,
    ) -> Result<bool, String> {
        tokio::task::yield_now().await;
        let owner = if self.bug == Bug::ForgeriesLand {
            claimed
        } else {
            ctx.tenant_id()
        };
        let row = (owner, claimed, key, value.to_owned());
        self.rows.lock().unwrap().push(row);
        Ok(true)
    }

    async fn read_all(&self, ctx: &TenantContext) -> Result<Vec<LeakRow>, String> {
        tokio::task::yield_now().await;
        Ok(self.visible(ctx, self.bug == Bug::ReadsIgnoreTheScope))
    }

    async fn read_key(&self, ctx: &TenantContext, key: i64) -> Result<Vec<LeakRow>, String> {
        tokio::task::yield_now().await;
        let all = self.visible(ctx, self.bug == Bug::LookupsIgnoreTheScope);
        Ok(all.into_iter().filter(|r| r.1 == key).collect())
    }

    async fn update_all(&self, ctx: &TenantContext, value: &str) -> Result<u64, String> {
        tokio::task::yield_now().await;
        let everything = self.bug == Bug::UpdatesIgnoreTheScope;
        let mut affected = 0;
        for row in self.rows.lock().unwrap().iter_mut() {
            if everything || row.0 == ctx.tenant_id() {
                row.3 = value.to_owned();
                affected += 1;
            }
        }
        Ok(affected)
    }

    async fn delete_key(&self, ctx: &TenantContext, key: i64) -> Result<u64, String> {
        tokio::task::yield_now().await;
        let everything = self.bug == Bug::DeletesIgnoreTheScope;
        let mut rows = self.rows.lock().unwrap();
        let before = rows.len();
        rows.retain(|r| !(r.2 == key && (everything || r.0 == ctx.tenant_id())));
        Ok((before - rows.len()) as u64)
    }

    async fn unscoped_count(&self, _tenants: &[TenantContext]) -> Result<i64, String> {
        tokio::task::yield_now().await;
        let rows = self.rows.lock().unwrap();
        Ok(if self.bug == Bug::NoTenantSeesAll {
            rows.len() as i64
        } else {
            0
        })
    }

    async fn clear(&self, ctx: &TenantContext) -> Result<(), String> {
        self.rows.lock().unwrap().retain(|r| r.0 != ctx.tenant_id());
        Ok(())
    }
}

fn run(bug: Bug) -> Result<(), String> {
    let runtime = crate::fixtures::harness_runtime();
    let tenants = ["leak-a", "leak-b", "leak-c"]
        .into_iter()
        .map(|slug| TenantContext::new(TenantId::new(), TenantSlug::parse(slug).unwrap()))
        .collect();
    let target = MemoryTarget {
        rows: Mutex::new(Vec::new()),
        bug,
    };
    run_leak_harness(runtime.handle(), Arc::new(target), tenants, 300)
}

#[test]
fn a_target_without_a_bug_passes() {
    run(Bug::None).unwrap();
}

/// Each bug is caught by a check that sees a leak (the harness's own
/// messages), not by a setup error or a crashed task.
#[test]
fn every_kind_of_leak_fails_the_harness() {
    // What a tenant sees change when another tenant's rows leak into its
    // reads, lookups, updates or deletes.
    let seen_by_a_tenant = ["read ", "looked up key", "updated ", "deleted "];
    for (bug, caught_by) in [
        (Bug::ReadsIgnoreTheScope, &["read "][..]),
        (Bug::LookupsIgnoreTheScope, &["looked up key"][..]),
        (Bug::ForgeriesLand, &seen_by_a_tenant[..]),
        (Bug::UpdatesIgnoreTheScope, &["updated ", "read "][..]),
        (Bug::DeletesIgnoreTheScope, &seen_by_a_tenant[..]),
        (
            Bug::NoTenantSeesAll,
            &["a connection without a tenant saw"][..],
        ),
    ] {
        let failure = run(bug).expect_err(&format!("{bug:?} went unnoticed"));
        assert!(
            caught_by.iter().any(|check| failure.contains(check)),
            "{bug:?} failed for another reason: {failure}"
        );
    }
}
