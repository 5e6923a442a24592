//! How busy each tenant has been lately: the registry's measure for
//! which tenants deserve a pool of their own once the budget is full.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use saas_core::TenantId;

/// Tenants remembered at most; past it the coldest memories go first.
const MAX_TRACKED: usize = 16_384;

/// Per-tenant use counts that halve every `half_life`: at a steady rate a
/// tenant's heat is about 1 / ln 2 ≈ 1.44 times its uses per `half_life`, and
/// a burst long past counts for nothing.
#[derive(Debug)]
pub(super) struct Heat {
    half_life: Duration,
    tenants: HashMap<TenantId, (f64, Instant)>,
}

impl Heat {
    pub(super) fn new(half_life: Duration) -> Self {
        Heat {
            half_life,
            tenants: HashMap::new(),
        }
    }

    /// Counts one use of `tenant` now; returns its heat.
    pub(super) fn touch(&mut self, tenant: TenantId, now: Instant) -> f64 {
        if self.tenants.len() >= MAX_TRACKED && !self.tenants.contains_key(&tenant) {
            self.forget_cold(now);
        }
        let half_life = self.half_life;
        let (heat, at) = self.tenants.entry(tenant).or_insert((0.0, now));
        *heat = decayed(*heat, now.saturating_duration_since(*at), half_life) + 1.0;
        *at = now;
        *heat
    }

    /// `tenant`'s heat now, without counting a use.
    pub(super) fn of(&self, tenant: TenantId, now: Instant) -> f64 {
        self.tenants.get(&tenant).map_or(0.0, |(heat, at)| {
            decayed(*heat, now.saturating_duration_since(*at), self.half_life)
        })
    }

    /// Drops the tenants whose heat has decayed below one use; if that
    /// frees too little (every tenant is busy), the colder half.
    fn forget_cold(&mut self, now: Instant) {
        let half_life = self.half_life;
        self.tenants.retain(|_, (heat, at)| {
            decayed(*heat, now.saturating_duration_since(*at), half_life) >= 1.0
        });
        if self.tenants.len() >= MAX_TRACKED / 2 {
            let mut heats: Vec<f64> = self.tenants.values().map(|(h, _)| *h).collect();
            let middle = heats.len() / 2;
            let (_, median, _) = heats.select_nth_unstable_by(middle, f64::total_cmp);
            let median = *median;
            self.tenants.retain(|_, (heat, _)| *heat > median);
        }
    }
}

fn decayed(heat: f64, elapsed: Duration, half_life: Duration) -> f64 {
    if half_life.is_zero() {
        return 0.0;
    }
    heat * 0.5f64.powf(elapsed.as_secs_f64() / half_life.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_counts_recent_uses_and_halves_every_half_life() {
        let start = Instant::now();
        let mut heat = Heat::new(Duration::from_secs(1));
        let tenant = TenantId::new();
        for _ in 0..8 {
            heat.touch(tenant, start);
        }
        assert!((heat.of(tenant, start) - 8.0).abs() < 1e-9);
        let later = start + Duration::from_secs(1);
        assert!((heat.of(tenant, later) - 4.0).abs() < 1e-9);
        assert_eq!(heat.of(TenantId::new(), later), 0.0);
    }

    #[test]
    fn memory_stays_bounded() {
        let start = Instant::now();
        let mut heat = Heat::new(Duration::from_secs(1));
        for _ in 0..(MAX_TRACKED + 10) {
            heat.touch(TenantId::new(), start);
        }
        assert!(heat.tenants.len() <= MAX_TRACKED);
    }
}
