//! The leak-test harness: generated, concurrent sequences of inserts,
//! reads, updates, deletes and raw SQL by several tenants, checked against
//! a model after every step. Any row a tenant reads, changes or deletes
//! that it did not write itself is a leak and fails the case. Between
//! them, tenants run session-level raw SQL through their handles
//! ([`SessionTamper`]: settings, role and search path, `PREPARE`,
//! `DEALLOCATE ALL`, replaced cached statements, `LISTEN`, advisory locks,
//! temporary tables, held cursors, a refused `COPY`, a transaction left
//! open); a target whose later handles meet any of it fails the case.
//!
//! The harness drives a [`LeakTarget`]: one backend × placement pointing at
//! one of the host's tenant tables. [`pg::PgLeakTarget`](super::pg_leak)
//! drives a `PgTenancy`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use saas_core::{TenantContext, TenantId};

/// A row as the harness sees it: (tenant column, key, value).
pub type LeakRow = (TenantId, i64, String);

/// One backend × placement under test, on a table with a tenant column, an
/// integer key and a text value. Every method except `unscoped_count` acts
/// through the tenant's scoped handle, with SQL that does **not** filter
/// by tenant — isolation must come from the scope.
#[async_trait]
pub trait LeakTarget: Send + Sync {
    /// Inserts a row whose tenant column says `claimed` (another tenant's
    /// id for a forged write). `Ok(false)`: the write was refused.
    async fn insert(
        &self,
        ctx: &TenantContext,
        claimed: TenantId,
        key: i64,
        value: &str,
    ) -> Result<bool, String>;

    /// Every row visible to the tenant.
    async fn read_all(&self, ctx: &TenantContext) -> Result<Vec<LeakRow>, String>;

    /// Rows with `key`, looked up with raw SQL.
    async fn read_key(&self, ctx: &TenantContext, key: i64) -> Result<Vec<LeakRow>, String>;

    /// Sets every visible row's value; returns rows affected.
    async fn update_all(&self, ctx: &TenantContext, value: &str) -> Result<u64, String>;

    /// Deletes rows with `key`; returns rows affected.
    async fn delete_key(&self, ctx: &TenantContext, key: i64) -> Result<u64, String>;

    /// Rows of `tenants` that a connection without a tenant scope sees,
    /// looking wherever each tenant's placement keeps its data (must be
    /// 0). Where the design makes a placement unreachable without a scope
    /// (a schema the runtime role may not read, a database it is not
    /// connected to), the target checks that the access is refused and
    /// returns `Err` if it is not.
    async fn unscoped_count(&self, tenants: &[TenantContext]) -> Result<i64, String>;

    /// Deletes every row of the tenant (between cases).
    async fn clear(&self, ctx: &TenantContext) -> Result<(), String>;

    /// Runs `tamper`'s session-level raw SQL through a scoped handle of
    /// the tenant (a transaction that commits when `via_transaction`,
    /// else a connection), as hostile or buggy host code would, and ends
    /// the handle. It must not fail because of the tampering itself (a
    /// refused `COPY` is the point of that case). What it leaves must not
    /// reach the next user of the connection: the rows other tenants read
    /// show it, and a target may check its sessions for leftovers too
    /// (`PgLeakTarget::read_all` does, and fails when it meets any).
    /// Targets without sessions (in-memory ones) keep the default, which
    /// does nothing.
    async fn tamper(
        &self,
        ctx: &TenantContext,
        tamper: SessionTamper,
        via_transaction: bool,
    ) -> Result<(), String> {
        let _ = (ctx, tamper, via_transaction);
        Ok(())
    }
}

/// Session-level state that raw SQL through a scoped handle can leave on
/// its connection (see [`LeakTarget::tamper`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionTamper {
    /// A custom setting, the time zone and read-only transaction
    /// characteristics, set for the session.
    Settings,
    /// The tenant setting itself, set for the session.
    TenantSetting,
    /// Role and search path, set for the session (a schema tenant's own;
    /// a search path without the shared tables for others).
    RoleAndSearchPath,
    /// A statement prepared with SQL `PREPARE`.
    Prepare,
    /// `DEALLOCATE ALL` after sqlx has cached statements.
    DeallocateAll,
    /// The statements sqlx has cached replaced by ones that return a
    /// forged row (the exfiltration path of a shared statement cache).
    ReplaceCachedStatements,
    /// `LISTEN` on a channel.
    Listen,
    /// A session-level advisory lock.
    AdvisoryLock,
    /// A temporary table without `ON COMMIT DROP`.
    TemporaryTable,
    /// A cursor held past commit (transactions only).
    HeldCursor,
    /// A refused `COPY … TO STDOUT` through the raw copy API.
    RefusedCopy,
    /// A transaction begun with raw SQL and never ended (connections only).
    OpenTransaction,
}

impl SessionTamper {
    /// Every kind, for generators.
    pub const ALL: [SessionTamper; 12] = [
        SessionTamper::Settings,
        SessionTamper::TenantSetting,
        SessionTamper::RoleAndSearchPath,
        SessionTamper::Prepare,
        SessionTamper::DeallocateAll,
        SessionTamper::ReplaceCachedStatements,
        SessionTamper::Listen,
        SessionTamper::AdvisoryLock,
        SessionTamper::TemporaryTable,
        SessionTamper::HeldCursor,
        SessionTamper::RefusedCopy,
        SessionTamper::OpenTransaction,
    ];
}

/// The statements a [`LeakTarget`] runs on a host table. None filters by
/// tenant: isolation must come from the scope.
#[cfg(feature = "_sql")]
#[derive(Debug, Clone)]
pub(crate) struct LeakStatements {
    pub(crate) insert: String,
    pub(crate) read_all: String,
    pub(crate) read_key: String,
    pub(crate) update_all: String,
    pub(crate) delete_key: String,
    pub(crate) count: String,
    pub(crate) clear: String,
}

#[cfg(feature = "_sql")]
impl LeakStatements {
    /// For the quoted `table(tenant, key, value)`; `param(n)` spells the
    /// n-th bind parameter in the backend's syntax.
    pub(crate) fn new(t: &str, c: &str, k: &str, v: &str, param: fn(usize) -> String) -> Self {
        let (p1, p2, p3) = (param(1), param(2), param(3));
        Self {
            insert: format!("INSERT INTO {t} ({c}, {k}, {v}) VALUES ({p1}, {p2}, {p3})"),
            read_all: format!("SELECT {c}, {k}, {v} FROM {t}"),
            read_key: format!("SELECT {c}, {k}, {v} FROM {t} WHERE {k} = {p1}"),
            update_all: format!("UPDATE {t} SET {v} = {p1}"),
            delete_key: format!("DELETE FROM {t} WHERE {k} = {p1}"),
            count: format!("SELECT count(*) FROM {t}"),
            clear: format!("DELETE FROM {t}"),
        }
    }
}

/// One generated step.
#[derive(Debug, Clone)]
pub enum LeakOp {
    /// Tenant `tenant` inserts an honest row.
    Insert {
        /// Index of the acting tenant.
        tenant: usize,
    },
    /// Tenant `tenant` inserts a row claiming to belong to `victim`.
    ForgedInsert {
        /// Index of the acting tenant.
        tenant: usize,
        /// Index of the tenant it pretends to be.
        victim: usize,
    },
    /// Tenant reads everything it can see.
    ReadAll {
        /// Index of the acting tenant.
        tenant: usize,
    },
    /// Tenant looks a key up with raw SQL (keys of other tenants too).
    ReadKey {
        /// Index of the acting tenant.
        tenant: usize,
        /// Key, reduced modulo the keys used so far.
        key: usize,
    },
    /// Tenant updates everything it can see.
    UpdateAll {
        /// Index of the acting tenant.
        tenant: usize,
    },
    /// Tenant deletes a key (keys of other tenants too).
    DeleteKey {
        /// Index of the acting tenant.
        tenant: usize,
        /// Key, reduced modulo the keys used so far.
        key: usize,
    },
    /// A connection without a tenant counts the rows it sees.
    Unscoped,
    /// Tenant runs session-level raw SQL through a handle.
    Tamper {
        /// Index of the acting tenant.
        tenant: usize,
        /// What it leaves on the session.
        tamper: SessionTamper,
        /// Through a transaction (else a connection).
        via_transaction: bool,
    },
}

fn op_strategy(tenants: usize) -> impl Strategy<Value = LeakOp> {
    let t = 0..tenants;
    let t2 = t.clone();
    prop_oneof![
        3 => t.clone().prop_map(|tenant| LeakOp::Insert { tenant }),
        1 => (t.clone(), t.clone()).prop_map(|(tenant, victim)| LeakOp::ForgedInsert { tenant, victim }),
        2 => t.clone().prop_map(|tenant| LeakOp::ReadAll { tenant }),
        2 => (t.clone(), any::<usize>()).prop_map(|(tenant, key)| LeakOp::ReadKey { tenant, key }),
        1 => t.clone().prop_map(|tenant| LeakOp::UpdateAll { tenant }),
        2 => (t, any::<usize>()).prop_map(|(tenant, key)| LeakOp::DeleteKey { tenant, key }),
        1 => Just(LeakOp::Unscoped),
        2 => (t2, proptest::sample::select(SessionTamper::ALL.to_vec()), any::<bool>())
            .prop_map(|(tenant, tamper, via_transaction)| LeakOp::Tamper {
                tenant,
                tamper,
                via_transaction,
            }),
    ]
}

/// The rows each tenant has written and not deleted: key → (claimed, value).
type Model = BTreeMap<i64, (TenantId, String)>;

/// Runs `cases` generated cases against `target` with `tenants` (at least
/// two). Each case's steps are split by acting tenant and the tenants run
/// concurrently; every step is checked against the model.
pub fn run_leak_harness(
    runtime: &tokio::runtime::Handle,
    target: Arc<dyn LeakTarget>,
    tenants: Vec<TenantContext>,
    cases: u32,
) -> Result<(), String> {
    if tenants.len() < 2 {
        return Err("the leak harness needs at least two tenants".to_owned());
    }
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(op_strategy(tenants.len()), 1..24);
    let tenants = Arc::new(tenants);
    runner
        .run(&strategy, |ops| {
            runtime
                .block_on(run_case(Arc::clone(&target), Arc::clone(&tenants), ops))
                .map_err(TestCaseError::fail)
        })
        .map_err(|e| e.to_string())
}

async fn run_case(
    target: Arc<dyn LeakTarget>,
    tenants: Arc<Vec<TenantContext>>,
    ops: Vec<LeakOp>,
) -> Result<(), String> {
    for ctx in tenants.iter() {
        target.clear(ctx).await?;
    }
    // Keys are unique per case (the step's index + 1), so that a key names
    // one row in the whole case and cross-tenant lookups are meaningful.
    let key_count = ops.len().max(1);
    let mut per_tenant: Vec<Vec<(i64, LeakOp)>> = vec![Vec::new(); tenants.len()];
    let mut unscoped = 0;
    for (i, op) in ops.into_iter().enumerate() {
        let actor = match &op {
            LeakOp::Insert { tenant }
            | LeakOp::ForgedInsert { tenant, .. }
            | LeakOp::ReadAll { tenant }
            | LeakOp::ReadKey { tenant, .. }
            | LeakOp::UpdateAll { tenant }
            | LeakOp::DeleteKey { tenant, .. }
            | LeakOp::Tamper { tenant, .. } => *tenant,
            LeakOp::Unscoped => {
                unscoped += 1;
                continue;
            }
        };
        per_tenant[actor].push((i as i64 + 1, op));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (index, steps) in per_tenant.into_iter().enumerate() {
        let target = Arc::clone(&target);
        let tenants = Arc::clone(&tenants);
        tasks.spawn(async move {
            let model = run_tenant(&*target, &tenants, index, steps, key_count).await?;
            Ok::<_, String>((index, model))
        });
    }
    for _ in 0..unscoped {
        unscoped_sees_nothing(&*target, &tenants, "during the case").await?;
    }
    let mut models = vec![Model::new(); tenants.len()];
    while let Some(result) = tasks.join_next().await {
        let (index, model) = result.map_err(|e| format!("tenant task failed: {e}"))??;
        models[index] = model;
    }
    // Closing read-back, once every tenant is done: each sees exactly what
    // it wrote and kept, and nothing is visible without a tenant.
    for (ctx, model) in tenants.iter().zip(&models) {
        expect_rows(target.read_all(ctx).await?, model, ctx, "at the end")?;
    }
    unscoped_sees_nothing(&*target, &tenants, "at the end").await
}

async fn unscoped_sees_nothing(
    target: &dyn LeakTarget,
    tenants: &[TenantContext],
    when: &str,
) -> Result<(), String> {
    match target.unscoped_count(tenants).await? {
        0 => Ok(()),
        seen => Err(format!(
            "a connection without a tenant saw {seen} rows {when}"
        )),
    }
}

/// `seen` (any order) must be the tenant's model, row for row.
fn expect_rows(
    mut seen: Vec<LeakRow>,
    model: &Model,
    ctx: &TenantContext,
    when: &str,
) -> Result<(), String> {
    seen.sort_by_key(|r| r.1);
    let expected: Vec<LeakRow> = model
        .iter()
        .map(|(k, (t, v))| (*t, *k, v.clone()))
        .collect();
    if seen == expected {
        return Ok(());
    }
    Err(format!(
        "{} read {seen:?} {when}, expected {expected:?}",
        ctx.slug()
    ))
}

async fn run_tenant(
    target: &dyn LeakTarget,
    tenants: &[TenantContext],
    index: usize,
    steps: Vec<(i64, LeakOp)>,
    key_count: usize,
) -> Result<Model, String> {
    let ctx = &tenants[index];
    let me = ctx.tenant_id();
    let mut model = Model::new();
    let key_of = |k: usize| (k % key_count) as i64 + 1;
    for (key, op) in steps {
        let value = format!("v{key}-{}", ctx.slug());
        match op {
            LeakOp::Insert { .. } => {
                if !target.insert(ctx, me, key, &value).await? {
                    return Err(format!("{}: an honest insert was refused", ctx.slug()));
                }
                model.insert(key, (me, value));
            }
            LeakOp::ForgedInsert { victim, .. } => {
                let claimed = tenants[victim].tenant_id();
                // Refused (RLS WITH CHECK) or stored where only the writer
                // can see it (its own schema or database): never the victim's.
                if target.insert(ctx, claimed, key, &value).await? {
                    model.insert(key, (claimed, value));
                }
            }
            LeakOp::ReadAll { .. } => {
                expect_rows(target.read_all(ctx).await?, &model, ctx, "mid-case")?;
            }
            LeakOp::ReadKey { key: k, .. } => {
                let k = key_of(k);
                let seen = target.read_key(ctx, k).await?;
                let expected: Vec<LeakRow> = model
                    .get(&k)
                    .map(|(t, v)| vec![(*t, k, v.clone())])
                    .unwrap_or_default();
                if seen != expected {
                    return Err(format!(
                        "{} looked up key {k} and got {seen:?}, expected {expected:?}",
                        ctx.slug()
                    ));
                }
            }
            LeakOp::UpdateAll { .. } => {
                let affected = target.update_all(ctx, &value).await?;
                if affected != model.len() as u64 {
                    return Err(format!(
                        "{} updated {affected} rows, owns {}",
                        ctx.slug(),
                        model.len()
                    ));
                }
                for entry in model.values_mut() {
                    entry.1.clone_from(&value);
                }
            }
            LeakOp::DeleteKey { key: k, .. } => {
                let k = key_of(k);
                let affected = target.delete_key(ctx, k).await?;
                let expected = u64::from(model.remove(&k).is_some());
                if affected != expected {
                    return Err(format!(
                        "{} deleted {affected} rows with key {k}, owned {expected}",
                        ctx.slug()
                    ));
                }
            }
            LeakOp::Tamper {
                tamper,
                via_transaction,
                ..
            } => target.tamper(ctx, tamper, via_transaction).await?,
            LeakOp::Unscoped => {}
        }
    }
    Ok(model)
}
