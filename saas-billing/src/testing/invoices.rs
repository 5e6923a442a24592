//! The [`InvoiceStore`] contract.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::TimeDelta;
use saas_core::{ErrorKind, TenantId};

use super::fixtures::{draft, finalization, issuer, start};
use crate::{BillingError, InvoiceStatus, InvoiceStore, SubscriptionId};

/// A created draft reads back by id and by (subscription, period).
pub async fn create_then_get_and_find(store: Arc<dyn InvoiceStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let invoice = store.create(draft(tenant, sub, 0)).await.unwrap();
    assert_eq!(store.get(tenant, invoice.id).await.unwrap(), invoice);
    assert_eq!(
        store.find(tenant, sub, 0).await.unwrap(),
        Some(invoice.clone())
    );
    assert_eq!(store.find(tenant, sub, 1).await.unwrap(), None);
    assert_eq!(store.list(tenant, sub).await.unwrap(), [invoice]);
}

/// A second invoice for one subscription and period is `AlreadyExists`.
pub async fn one_invoice_per_subscription_and_period(store: Arc<dyn InvoiceStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    store.create(draft(tenant, sub, 0)).await.unwrap();
    let err = store.create(draft(tenant, sub, 0)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    store.create(draft(tenant, sub, 1)).await.unwrap();
    assert_eq!(store.list(tenant, sub).await.unwrap().len(), 2);
}

/// Of racing creations for one period, exactly one is stored.
pub async fn racing_creations_store_one(store: Arc<dyn InvoiceStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.create(draft(tenant, sub, 7)).await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.list(tenant, sub).await.unwrap().len(), 1);
}

/// After finalization, updates and a second finalization are refused
/// with `InvoiceFinalized` and change nothing.
pub async fn finalized_invoices_are_immutable(store: Arc<dyn InvoiceStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let invoice = store.create(draft(tenant, sub, 0)).await.unwrap();
    let at = start() + TimeDelta::days(1);
    let done = store
        .finalize(tenant, invoice.id, finalization(Vec::new(), at, &issuer()))
        .await
        .unwrap();
    assert_eq!(done.status, InvoiceStatus::Finalized);
    assert_eq!(done.finalized_at, Some(at));
    let err = store
        .update_draft(tenant, invoice.id, Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BillingError::InvoiceFinalized { .. }));
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = store
        .finalize(tenant, invoice.id, finalization(Vec::new(), at, &issuer()))
        .await
        .unwrap_err();
    assert!(matches!(err, BillingError::InvoiceFinalized { .. }));
    assert_eq!(store.get(tenant, invoice.id).await.unwrap(), done);
}

/// `drafts_due` lists drafts whose `finalize_after` has passed.
pub async fn drafts_due_are_unfinalized_and_due(store: Arc<dyn InvoiceStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let mut later = draft(tenant, sub, 1);
    later.finalize_after = start() + TimeDelta::days(30);
    let now = store.create(draft(tenant, sub, 0)).await.unwrap();
    let later = store.create(later).await.unwrap();
    let due = store.drafts_due(start(), 100).await.unwrap();
    assert!(due.iter().any(|i| i.id == now.id));
    assert!(!due.iter().any(|i| i.id == later.id));
    store
        .finalize(tenant, now.id, finalization(Vec::new(), start(), &issuer()))
        .await
        .unwrap();
    assert!(
        !store
            .drafts_due(start(), 100)
            .await
            .unwrap()
            .iter()
            .any(|i| i.id == now.id)
    );
}

/// Another tenant's invoice is `NotFound`.
pub async fn other_tenants_invoice_is_not_found(store: Arc<dyn InvoiceStore>) {
    let (tenant, sub) = (TenantId::new(), SubscriptionId::new());
    let invoice = store.create(draft(tenant, sub, 0)).await.unwrap();
    let other = TenantId::new();
    assert_eq!(
        store.get(other, invoice.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(store.find(other, sub, 0).await.unwrap(), None);
    let err = store
        .update_draft(other, invoice.id, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}
