//! The fleet-migration schedule both backends share: canaries one at a
//! time (a failing canary stops the run), then a bounded fan-out in this
//! task, every attempt counted into a [`MigrationReport`] and reported as
//! progress. A backend supplies only how one tenant migrates.

use std::future::Future;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use saas_core::{TenantId, TenantStatus};

use crate::error::TenancyError;
use crate::migration::{MigrationOptions, MigrationProgress, MigrationReport};
use crate::observe;
use crate::record::TenantRecord;

/// What one tenant's attempt came to.
pub(crate) enum Attempt {
    /// Migrated (version reached, whether anything was applied) or failed.
    Done(Result<(i64, bool), TenancyError>),
    /// Deleted (or no longer active or suspended) since the run listed it:
    /// reported as not attempted.
    Gone,
}

/// Statuses whose storage a fleet migration migrates (a suspended tenant
/// comes back at the latest version).
pub(crate) fn is_migratable(status: TenantStatus) -> bool {
    matches!(status, TenantStatus::Active | TenantStatus::Suspended)
}

/// One tenant's attempt as each backend's migration ledger
/// (`saas_tenant_migrations`) records it; both times come from the
/// injected clock (never the server's `now()`).
pub(crate) struct LedgerEntry {
    pub(crate) tenant: TenantId,
    /// The version reached; `None` when the attempt failed.
    pub(crate) version: Option<i64>,
    /// `applied`, `current` (nothing to apply) or `failed`.
    pub(crate) status: &'static str,
    pub(crate) error: Option<String>,
    pub(crate) started: DateTime<Utc>,
    pub(crate) finished: DateTime<Utc>,
}

impl LedgerEntry {
    /// The entry of `tenant`'s attempt, started at `started`, finished at
    /// `finished` with `outcome` (the version reached and whether anything
    /// was applied, or the failure).
    pub(crate) fn new(
        tenant: TenantId,
        outcome: &Result<(i64, bool), TenancyError>,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
    ) -> Self {
        let (version, status, error) = match outcome {
            Ok((v, true)) => (Some(*v), "applied", None),
            Ok((v, false)) => (Some(*v), "current", None),
            Err(e) => (None, "failed", Some(e.to_string())),
        };
        Self {
            tenant,
            version,
            status,
            error,
            started,
            finished,
        }
    }
}

/// Migrates `tenants` with `migrate`, canaries first, then at most `limit`
/// at once (the caller ties `limit` to its connection budget). An error
/// from `migrate` itself (not a tenant's failure: e.g. the run cannot
/// write its ledger) ends the run with that error.
pub(crate) async fn run<'a, F, Fut>(
    tenants: &'a [TenantRecord],
    options: &MigrationOptions,
    limit: usize,
    migrate: F,
) -> Result<MigrationReport, TenancyError>
where
    F: Fn(&'a TenantRecord) -> Fut,
    Fut: Future<Output = Result<Attempt, TenancyError>> + 'a,
{
    let mut report = MigrationReport {
        total: tenants.len(),
        ..MigrationReport::default()
    };
    // The remaining-tenants gauge goes back to zero however the run ends.
    let _remaining = observe::FleetRun::start(tenants.len());
    let mut done = 0;
    let canaries = options.canaries.min(tenants.len());
    let (first, rest) = tenants.split_at(canaries);
    for (i, record) in first.iter().enumerate() {
        let attempt = migrate(record).await?;
        let failed = matches!(attempt, Attempt::Done(Err(_)));
        note(options, &mut report, record.id, attempt, &mut done);
        if failed {
            report
                .not_attempted
                .extend(tenants[i + 1..].iter().map(|t| t.id));
            return Ok(report);
        }
    }
    let limit = limit.max(1);
    let mut running = FuturesUnordered::new();
    let mut queue = rest.iter();
    let mut stopped = false;
    loop {
        while !stopped && running.len() < limit {
            let Some(record) = queue.next() else { break };
            let attempt = migrate(record);
            running.push(async move { (record.id, attempt.await) });
        }
        let Some((id, attempt)) = running.next().await else {
            break;
        };
        let attempt = attempt?;
        if matches!(attempt, Attempt::Done(Err(_))) && options.stop_on_first_failure {
            stopped = true;
        }
        note(options, &mut report, id, attempt, &mut done);
    }
    report.not_attempted.extend(queue.map(|t| t.id));
    Ok(report)
}

/// Counts one attempt into the report, logs it and calls the progress
/// callback.
fn note(
    options: &MigrationOptions,
    report: &mut MigrationReport,
    tenant: TenantId,
    attempt: Attempt,
    done: &mut usize,
) {
    let outcome = match attempt {
        Attempt::Gone => {
            report.not_attempted.push(tenant);
            return;
        }
        Attempt::Done(outcome) => outcome,
    };
    *done += 1;
    let progress = match outcome {
        Ok((version, changed)) => {
            if changed {
                report.migrated.push(tenant);
            } else {
                report.up_to_date.push(tenant);
            }
            Ok(version)
        }
        Err(e) => {
            report.failed.push((tenant, e.to_string()));
            Err(e.to_string())
        }
    };
    tracing::info!(%tenant, done = *done, total = report.total, ok = progress.is_ok(), "tenant migration");
    let outcome = match &progress {
        Ok(_) if report.migrated.last() == Some(&tenant) => "applied",
        Ok(_) => "current",
        Err(_) => "failed",
    };
    observe::tenant_migrated(outcome, report.total.saturating_sub(*done));
    if let Some(f) = &options.progress {
        f(&MigrationProgress {
            done: *done,
            total: report.total,
            tenant,
            outcome: progress,
        });
    }
}
