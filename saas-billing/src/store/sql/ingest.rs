//! The database-independent half of a batched ingestion: which records are
//! first occurrences of their key, which period bills each, and the
//! outcome of every record once the database said which rows it inserted
//! and which it already had.

use std::collections::{HashMap, HashSet};

use saas_core::TenantId;

use crate::error::BillingError;
use crate::ids::SubscriptionId;
use crate::metering::UsageEvent;
use crate::store::{IngestOutcome, UsageRecord};

/// A tenant and an idempotency key.
pub(crate) type Key = (TenantId, String);

/// A batch being ingested.
#[derive(Debug)]
pub(crate) struct IngestPlan {
    records: Vec<UsageRecord>,
    /// Index of the first record of each key, in batch order.
    first: Vec<usize>,
}

/// A row to insert: the record at `index`, billed in `billed_in`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRow<'a> {
    /// The record.
    pub(crate) record: &'a UsageRecord,
    /// The period whose invoice bills it.
    pub(crate) billed_in: i64,
}

impl IngestPlan {
    /// Plans `batch`.
    pub(crate) fn new(records: Vec<UsageRecord>) -> IngestPlan {
        let mut seen: HashSet<(TenantId, &str)> = HashSet::with_capacity(records.len());
        let mut first = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            let event = &record.event;
            if seen.insert((event.tenant_id, event.idempotency_key.as_str())) {
                first.push(index);
            }
        }
        IngestPlan { records, first }
    }

    /// Whether the batch is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The distinct (tenant, subscription) pairs whose seals decide
    /// `billed_in`, sorted (locks are taken in this order).
    pub(crate) fn subscriptions(&self) -> Vec<(TenantId, SubscriptionId)> {
        let mut pairs: Vec<_> = self
            .first
            .iter()
            .map(|&i| {
                let e = &self.records[i].event;
                (e.tenant_id, e.subscription_id)
            })
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }

    /// The first record of each key with its billing period, given the
    /// subscriptions' sealed-through indices.
    pub(crate) fn rows(
        &self,
        sealed: &HashMap<(TenantId, SubscriptionId), i64>,
    ) -> Vec<NewRow<'_>> {
        self.first
            .iter()
            .map(|&i| {
                let record = &self.records[i];
                let e = &record.event;
                let billed_in = match sealed.get(&(e.tenant_id, e.subscription_id)) {
                    Some(&through) if record.period >= 0 && record.period <= through => {
                        through.saturating_add(1)
                    }
                    _ => record.period,
                };
                NewRow { record, billed_in }
            })
            .collect()
    }

    /// The planned rows the database did not insert: their keys were
    /// stored before (or by a concurrent call); read them back.
    pub(crate) fn not_inserted<'r>(
        rows: &'r [NewRow<'r>],
        inserted: &[Key],
    ) -> Vec<&'r UsageEvent> {
        if inserted.len() == rows.len() {
            return Vec::new();
        }
        let done: HashSet<(TenantId, &str)> =
            inserted.iter().map(|(t, k)| (*t, k.as_str())).collect();
        rows.iter()
            .map(|row| &row.record.event)
            .filter(|e| !done.contains(&(e.tenant_id, e.idempotency_key.as_str())))
            .collect()
    }

    /// One outcome per record, in order, from the keys inserted now and the
    /// rows the store already had (event and `billed_in`).
    pub(crate) fn outcomes(
        &self,
        rows: &[NewRow<'_>],
        inserted: &[Key],
        existing: &[(UsageEvent, i64)],
        backend: &'static str,
    ) -> Vec<Result<IngestOutcome, BillingError>> {
        let planned: HashMap<(TenantId, &str), &NewRow<'_>> = rows
            .iter()
            .map(|row| {
                let e = &row.record.event;
                ((e.tenant_id, e.idempotency_key.as_str()), row)
            })
            .collect();
        // key → (the stored payload, its billing period, stored by this call)
        let mut stored: HashMap<(TenantId, &str), (&UsageEvent, i64, bool)> =
            HashMap::with_capacity(rows.len());
        for (tenant, key) in inserted {
            if let Some(row) = planned.get(&(*tenant, key.as_str())) {
                let e = &row.record.event;
                stored.insert(
                    (e.tenant_id, e.idempotency_key.as_str()),
                    (e, row.billed_in, true),
                );
            }
        }
        for (event, billed_in) in existing {
            stored.insert(
                (event.tenant_id, event.idempotency_key.as_str()),
                (event, *billed_in, false),
            );
        }
        let mut recorded: HashSet<(TenantId, &str)> = HashSet::new();
        self.records
            .iter()
            .map(|record| {
                let e = &record.event;
                let key = (e.tenant_id, e.idempotency_key.as_str());
                match stored.get(&key) {
                    Some(&(_, billed_in, true)) if recorded.insert(key) => {
                        Ok(IngestOutcome::Recorded { billed_in })
                    }
                    Some(&(original, billed_in, _)) if original == e => {
                        Ok(IngestOutcome::Duplicate { billed_in })
                    }
                    Some(_) => Err(BillingError::IdempotencyConflict {
                        key: e.idempotency_key.clone(),
                    }),
                    // Neither inserted nor found: removed concurrently.
                    None => Err(BillingError::Backend {
                        backend,
                        retryable: true,
                        message: format!(
                            "usage key {:?} conflicted but its row was not found",
                            e.idempotency_key
                        ),
                    }),
                }
            })
            .collect()
    }
}
