//! Placement, names and the status table.

use proptest::prelude::*;
use saas_core::{TenantId, TenantSlug, TenantStatus};
use saas_tenancy::{
    ClusterName, NewTenant, Placement, Strategy, TenantObjectName, transition_allowed,
};

#[test]
fn object_names_derive_from_the_tenant_id_only() {
    let id = TenantId::new();
    let name = TenantObjectName::for_tenant(id);
    assert_eq!(name.as_str(), format!("t_{}", id.simple()));
    assert_eq!(name.quoted(), format!("\"t_{}\"", id.simple()));
    assert_eq!(TenantObjectName::parse(name.as_str()).unwrap(), name);
    for bad in [
        "public",
        "t_",
        "x\"; drop schema public; --",
        "t_0123456789abcdef0123456789ABCDEF",
        "t_0123456789abcdef0123456789abcde\"",
    ] {
        assert!(TenantObjectName::parse(bad).is_err(), "{bad}");
    }
}

proptest! {
    #[test]
    fn only_derived_object_names_parse(s in "\\PC{0,40}") {
        if let Ok(name) = TenantObjectName::parse(&s) {
            prop_assert!(name.as_str().starts_with("t_"));
            prop_assert!(name.as_str()[2..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
    }
}

#[test]
fn placements_round_trip_through_their_stored_parts() {
    let cluster = ClusterName::new("eu-1").unwrap();
    let id = TenantId::new();
    for strategy in [Strategy::Shared, Strategy::Schema, Strategy::Database] {
        let p = Placement::derive(strategy, cluster.clone(), id);
        let back = Placement::from_parts(
            p.strategy().as_str(),
            p.cluster().as_str(),
            p.object_name().map(|n| n.as_str()),
        )
        .unwrap();
        assert_eq!(back, p);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Placement>(&json).unwrap(), p);
    }
    assert!(Placement::from_parts("shared", "eu-1", Some("t_x")).is_err());
    assert!(Placement::from_parts("schema", "eu-1", None).is_err());
    assert!(Placement::from_parts("sharded", "eu-1", None).is_err());
    assert!(Placement::from_parts("shared", "EU 1", None).is_err());
}

#[test]
fn cluster_names_are_validated() {
    assert!(ClusterName::new("main").is_ok());
    assert!(ClusterName::new("eu_west-2").is_ok());
    for bad in ["", "Main", "1st", "a b", "a;drop", &"a".repeat(64)] {
        assert!(ClusterName::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn new_tenants_validate_display_names() {
    let slug = TenantSlug::parse("acme").unwrap();
    let main = ClusterName::new("main").unwrap();
    for bad in ["", "   ", "bell\u{7}", &"x".repeat(201)] {
        assert!(
            NewTenant::new(slug.clone(), bad, Strategy::Shared, main.clone()).is_err(),
            "{bad:?}"
        );
    }
    let t = NewTenant::new(slug, "Acme", Strategy::Database, main).unwrap();
    assert_eq!(
        t.placement().object_name().unwrap(),
        &TenantObjectName::for_tenant(t.id())
    );
}

#[test]
fn the_transition_table() {
    use TenantStatus::*;
    let all = [Provisioning, Active, Suspended, Moving, Deleting, Deleted];
    let allowed = [
        (Provisioning, Active),
        (Provisioning, Deleting),
        (Active, Suspended),
        (Active, Moving),
        (Active, Deleting),
        (Suspended, Active),
        (Suspended, Deleting),
        (Moving, Active),
        (Deleting, Deleted),
    ];
    for from in all {
        for to in all {
            let expected = from == to || allowed.contains(&(from, to));
            assert_eq!(transition_allowed(from, to), expected, "{from} → {to}");
        }
    }
}
