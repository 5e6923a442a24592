use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use saas_core::{SharedClock, SystemClock, TenantId, TenantSlug, TenantStatus};

use super::{Catalog, check_transition, cut_over_outcome};
use crate::error::TenancyError;
use crate::placement::Placement;
use crate::record::{ListOptions, NewTenant, TenantPage, TenantRecord};

/// A catalog held in memory: for tests, examples and single-process tools.
#[derive(Debug)]
pub struct InMemoryCatalog {
    state: RwLock<State>,
    clock: SharedClock,
}

#[derive(Debug, Default)]
struct State {
    by_id: BTreeMap<TenantId, TenantRecord>,
    by_slug: HashMap<TenantSlug, TenantId>,
}

impl Default for InMemoryCatalog {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl InMemoryCatalog {
    /// An empty catalog reading time from `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            state: RwLock::new(State::default()),
            clock,
        }
    }
}

#[async_trait]
impl Catalog for InMemoryCatalog {
    async fn create(&self, tenant: NewTenant) -> Result<TenantRecord, TenancyError> {
        let record = tenant.into_record(self.clock.now());
        let mut s = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if s.by_id.contains_key(&record.id) || s.by_slug.contains_key(&record.slug) {
            return Err(TenancyError::AlreadyExists {
                slug: record.slug.to_string(),
            });
        }
        s.by_slug.insert(record.slug.clone(), record.id);
        s.by_id.insert(record.id, record.clone());
        Ok(record)
    }

    async fn get(&self, id: TenantId) -> Result<Option<TenantRecord>, TenancyError> {
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Ok(s.by_id.get(&id).cloned())
    }

    async fn get_by_slug(&self, slug: &TenantSlug) -> Result<Option<TenantRecord>, TenancyError> {
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Ok(s.by_slug.get(slug).and_then(|id| s.by_id.get(id)).cloned())
    }

    async fn list(&self, options: &ListOptions) -> Result<TenantPage, TenancyError> {
        options.validate()?;
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let tenants: Vec<TenantRecord> = s
            .by_id
            .values()
            .filter(|r| options.matches(r))
            .take(options.limit + 1)
            .cloned()
            .collect();
        Ok(TenantPage::from_overfetch(tenants, options.limit))
    }

    async fn set_status(
        &self,
        id: TenantId,
        to: TenantStatus,
    ) -> Result<TenantRecord, TenancyError> {
        let now = crate::record::catalog_time(self.clock.now());
        let mut s = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let record = s
            .by_id
            .get_mut(&id)
            .ok_or_else(|| TenancyError::TenantNotFound(format!("with id {id}")))?;
        check_transition(record, to)?;
        if record.status != to {
            record.status = to;
            record.updated_at = now;
        }
        Ok(record.clone())
    }

    async fn cut_over(
        &self,
        id: TenantId,
        from: &Placement,
        to: &Placement,
    ) -> Result<TenantRecord, TenancyError> {
        let now = crate::record::catalog_time(self.clock.now());
        let mut s = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let Some(record) = s.by_id.get_mut(&id) else {
            return cut_over_outcome(None, id, from, to);
        };
        if record.status == TenantStatus::Moving && record.placement == *from {
            record.status = TenantStatus::Active;
            record.placement = to.clone();
            record.updated_at = now;
            return Ok(record.clone());
        }
        cut_over_outcome(Some(record.clone()), id, from, to)
    }
}
