use chrono::{Duration, TimeZone, Utc};
use saas_core::{
    Clock, Error, ErrorKind, Extensions, ManualClock, Principal, TenantContext, TenantId,
    TenantKey, TenantSlug, TenantStatus,
};

#[test]
fn tenant_ids_are_v7_and_round_trip() {
    let id = TenantId::new();
    assert_eq!(id.as_uuid().get_version_num(), 7);
    let text = id.to_string();
    assert_eq!(text.parse::<TenantId>().unwrap(), id);
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{text}\""));
    assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), id);
    assert_eq!(id.simple().len(), 32);
    assert!(id.simple().chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn later_ids_sort_after_earlier_ones() {
    let a = TenantId::new();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let b = TenantId::new();
    assert!(a < b, "v7 ids are time-ordered");
}

#[test]
fn malformed_and_nil_ids_are_invalid_input() {
    for bad in [
        "",
        "acme",
        "00000000-0000-0000-0000-000000000000",
        "x\"; drop schema public; --",
    ] {
        let err = bad.parse::<TenantId>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
}

#[test]
fn tenant_keys_tell_ids_from_slugs() {
    let id = TenantId::new();
    assert_eq!(
        TenantKey::parse(&id.to_string()).unwrap(),
        TenantKey::Id(id)
    );
    assert_eq!(
        TenantKey::parse("acme").unwrap(),
        TenantKey::Slug(TenantSlug::parse("acme").unwrap())
    );
    assert!(TenantKey::parse("Robert'); DROP TABLE tenants;--").is_err());
}

#[test]
fn manual_clock_is_shared_and_moves_only_when_told() {
    let t0 = Utc.with_ymd_and_hms(2024, 2, 28, 23, 0, 0).unwrap();
    let clock = ManualClock::new(t0);
    let other = clock.clone();
    assert_eq!(clock.now(), t0);
    assert_eq!(clock.now(), t0, "time does not pass by itself");
    other.advance(Duration::hours(2));
    assert_eq!(
        clock.now(),
        Utc.with_ymd_and_hms(2024, 2, 29, 1, 0, 0).unwrap()
    );
    clock.set(t0 - Duration::days(1));
    assert_eq!(other.now(), t0 - Duration::days(1));
}

#[test]
fn only_transient_kinds_are_retryable() {
    use ErrorKind::*;
    for kind in [Unavailable, Timeout] {
        assert!(kind.is_retryable());
    }
    for kind in [
        NotFound,
        AlreadyExists,
        Conflict,
        InvalidInput,
        Unauthorized,
        Forbidden,
        Unsupported,
        Internal,
    ] {
        assert!(!kind.is_retryable(), "{kind}");
    }
    let err =
        Error::new(NotFound, "no tenant acme").with_source(std::io::Error::other("underlying"));
    assert_eq!(err.to_string(), "not_found: no tenant acme");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn context_carries_principal_and_extensions() {
    #[derive(Debug, PartialEq)]
    struct Plan(&'static str);

    let mut ext = Extensions::new();
    ext.insert(Plan("pro"));
    let mut ctx = TenantContext::new(TenantId::new(), TenantSlug::parse("acme").unwrap())
        .with_principal(Principal::new("u1").with_role("admin").with_scope("read"));
    ctx.extensions_mut().extend(&ext);
    let copy = ctx.clone();
    assert_eq!(copy.extensions().get::<Plan>(), Some(&Plan("pro")));
    assert_eq!(copy.extensions().get::<String>(), None);
    let p = copy.principal().unwrap();
    assert!(p.has_role("admin") && !p.has_role("owner"));
    assert!(p.has_scope("read") && !p.has_scope("write"));
}

#[test]
fn only_active_tenants_are_servable() {
    assert!(TenantStatus::Active.is_servable());
    for s in [
        TenantStatus::Provisioning,
        TenantStatus::Suspended,
        TenantStatus::Moving,
        TenantStatus::Deleting,
        TenantStatus::Deleted,
    ] {
        assert!(!s.is_servable(), "{s}");
    }
}
