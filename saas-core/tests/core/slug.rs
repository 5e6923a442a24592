use proptest::prelude::*;
use saas_core::{SlugError, SlugPolicy, TenantSlug};

/// An independent statement of RFC 1035/1123 label rules.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_accepted_slug_is_a_dns_label(s in "\\PC{0,70}") {
        if let Ok(slug) = TenantSlug::parse(&s) {
            prop_assert!(is_dns_label(slug.as_str()), "{:?}", s);
        }
    }

    #[test]
    fn ascii_noise_is_accepted_exactly_when_it_is_a_label(s in "[ -~]{0,70}") {
        let accepted = TenantSlug::parse(&s).is_ok();
        let punycode_form = s.get(2..4) == Some("--");
        prop_assert_eq!(accepted, is_dns_label(&s) && !punycode_form, "{:?}", s);
    }

    #[test]
    fn any_invalid_character_is_rejected(
        prefix in "[a-z0-9]{0,10}",
        bad in "[^a-z0-9-]",
        suffix in "[a-z0-9]{0,10}",
    ) {
        let s = format!("{prefix}{bad}{suffix}");
        let err = TenantSlug::parse(&s).unwrap_err();
        let named = matches!(
            err,
            SlugError::InvalidCharacter { .. } | SlugError::Uppercase { .. }
        );
        prop_assert!(named, "{:?} -> {:?}", s, err);
    }

    #[test]
    fn valid_labels_are_accepted_and_round_trip(s in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
        prop_assume!(s.get(2..4) != Some("--"));
        let slug = TenantSlug::parse(&s).unwrap();
        let json = serde_json::to_string(&slug).unwrap();
        prop_assert_eq!(serde_json::from_str::<TenantSlug>(&json).unwrap(), slug);
    }
}

#[test]
fn each_rule_has_its_own_error() {
    assert_eq!(TenantSlug::parse(""), Err(SlugError::Empty));
    assert_eq!(
        TenantSlug::parse(&"a".repeat(64)),
        Err(SlugError::TooLong { len: 64, max: 63 })
    );
    assert!(TenantSlug::parse(&"a".repeat(63)).is_ok());
    assert_eq!(
        TenantSlug::parse("acMe"),
        Err(SlugError::Uppercase { position: 2 })
    );
    assert_eq!(
        TenantSlug::parse("ac_me"),
        Err(SlugError::InvalidCharacter {
            character: '_',
            position: 2
        })
    );
    assert_eq!(
        TenantSlug::parse("ácme"),
        Err(SlugError::InvalidCharacter {
            character: 'á',
            position: 0
        })
    );
    assert_eq!(TenantSlug::parse("-acme"), Err(SlugError::LeadingHyphen));
    assert_eq!(TenantSlug::parse("acme-"), Err(SlugError::TrailingHyphen));
    assert_eq!(TenantSlug::parse("xn--acme"), Err(SlugError::PunycodeForm));
    assert!(TenantSlug::parse("a--b").is_ok(), "'--' elsewhere is fine");
}

#[test]
fn sql_shaped_slugs_are_rejected() {
    for s in [
        "x\"; drop schema public; --",
        "acme'--",
        "a b",
        "a.b",
        "a/b",
        "tenant\0",
    ] {
        assert!(TenantSlug::parse(s).is_err(), "{s:?}");
    }
}

#[test]
fn error_messages_name_the_rule() {
    let msg = TenantSlug::parse("Acme").unwrap_err().to_string();
    assert!(msg.contains("uppercase"), "{msg}");
    let msg = TenantSlug::parse("a b").unwrap_err().to_string();
    assert!(msg.contains("' '") && msg.contains("position 1"), "{msg}");
}

#[test]
fn reserved_names_are_a_policy_for_new_tenants() {
    let policy = SlugPolicy::default();
    assert!(matches!(
        policy.check_new("www"),
        Err(SlugError::Reserved { .. })
    ));
    assert!(matches!(
        policy.check_new("api"),
        Err(SlugError::Reserved { .. })
    ));
    // Syntax alone accepts them (existing data must stay readable).
    assert!(TenantSlug::parse("www").is_ok());

    let custom = SlugPolicy::default().unreserve("app").reserve("acme");
    assert!(custom.check_new("app").is_ok());
    assert!(custom.check_new("acme").is_err());
    assert!(SlugPolicy::without_reserved().check_new("www").is_ok());

    let strict = SlugPolicy::default()
        .with_min_len(3)
        .unwrap()
        .with_max_len(20)
        .unwrap();
    assert_eq!(
        strict.check_new("ab").unwrap_err(),
        SlugError::TooShort { len: 2, min: 3 }
    );
    assert_eq!(
        strict.check_new(&"a".repeat(21)).unwrap_err(),
        SlugError::TooLong { len: 21, max: 20 }
    );
    assert!(SlugPolicy::default().with_min_len(0).is_err());
    assert!(SlugPolicy::default().with_max_len(64).is_err());
}

#[test]
fn deserializing_an_invalid_slug_fails() {
    assert!(serde_json::from_str::<TenantSlug>("\"Bad Slug\"").is_err());
}
