#![doc = include_str!("../README.md")]
// Money is exact: binary floating point has no place in this crate. The
// test `no_float_types_in_src` also greps src/ for the float type names.
#![deny(clippy::float_arithmetic, clippy::float_cmp, clippy::float_cmp_const)]

mod allocate;
mod calendar;
mod charge;
mod currency;
mod error;
mod money;
mod rounding;

pub use calendar::{BillingCalendar, Cadence, Interval, Period};
pub use charge::{
    Charge, ChargeComponent, ChargeLine, ChargeModel, LimitApplied, Tier, TierTable,
    TierTableBuilder,
};
pub use currency::Currency;
pub use error::BillingError;
pub use money::Money;
pub use rounding::RoundingMode;

/// Re-exported so callers name the same `Decimal` and `Tz` types as the API.
pub use chrono_tz::Tz;
pub use rust_decimal::{Decimal, dec};

// The main types can cross threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Money>();
    assert_send_sync::<Currency>();
    assert_send_sync::<BillingCalendar>();
    assert_send_sync::<Charge>();
    assert_send_sync::<ChargeLine>();
    assert_send_sync::<BillingError>();
};
