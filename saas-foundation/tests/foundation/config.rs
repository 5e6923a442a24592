//! Settings read from `PREFIX_*` variables: defaults, errors that name
//! the variable, and a `Debug` that shows no password or secret.

use std::collections::HashMap;

use saas_foundation::config::{DatabaseUrl, MIN_SECRET_BYTES, Secret, Settings};

fn vars(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn unset_variables_take_the_defaults_and_set_ones_win() {
    let defaults = Settings::from_prefix("APP")
        .default_data_dir("app-data")
        .default_runtime_role("app_rt")
        .default_database_url("postgres://localhost/app".parse().unwrap());
    let settings = defaults.clone().read(vars(&[])).unwrap();
    assert_eq!(settings.data_dir, std::path::Path::new("app-data"));
    assert_eq!(settings.runtime_role, "app_rt");
    assert_eq!(settings.listen.to_string(), "127.0.0.1:3000");
    let url = settings.database_url.unwrap();
    assert_eq!(url.expose(), "postgres://localhost/app");
    assert_eq!(settings.jwt_secret.expose().len(), MIN_SECRET_BYTES);

    let secret = "s".repeat(MIN_SECRET_BYTES);
    let settings = defaults
        .read(vars(&[
            ("APP_DATABASE_URL", "postgresql://db/other"),
            ("APP_DATA_DIR", "/srv/data"),
            ("APP_RUNTIME_ROLE", "other_rt"),
            ("APP_LISTEN", "0.0.0.0:8080"),
            ("APP_JWT_SECRET", &secret),
            ("OTHER_LISTEN", "not read"),
        ]))
        .unwrap();
    assert_eq!(
        settings.database_url.unwrap().expose(),
        "postgresql://db/other"
    );
    assert_eq!(settings.data_dir, std::path::Path::new("/srv/data"));
    assert_eq!(settings.runtime_role, "other_rt");
    assert_eq!(settings.listen.port(), 8080);
    assert_eq!(settings.jwt_secret.expose(), secret.as_bytes());
}

#[test]
fn random_secrets_differ() {
    assert_ne!(Secret::random(), Secret::random());
}

#[test]
fn an_invalid_variable_is_named_in_the_error() {
    for (name, value) in [
        ("APP_LISTEN", "localhost"),
        ("APP_JWT_SECRET", "too short"),
        ("APP_DATABASE_URL", "mysql://db/app"),
        ("APP_DATABASE_URL", "sqlite://app.db"),
    ] {
        let error = Settings::from_prefix("APP")
            .read(vars(&[(name, value)]))
            .unwrap_err();
        assert_eq!(error.setting(), name);
        assert!(error.to_string().contains(name), "{error}");
    }
}

/// The settings hold the database password and the token secret; their
/// Debug output shows neither, and still shows what helps an operator.
#[test]
fn settings_debug_hides_the_password_and_the_jwt_secret() {
    let secret = "jwt-Secret-that-is-32-bytes-long!";
    for (url, password) in [
        (
            "postgres://notes_admin:pw-Sekr1t-42@db.internal:5432/notes",
            "pw-Sekr1t-42",
        ),
        (
            "postgres://notes_admin:pw-S@kr1t@42@db.internal:5432/notes",
            "kr1t",
        ),
        (
            "postgres://notes_admin@db.internal:5432/notes?sslmode=require&password=pw-Sekr1t-42",
            "pw-Sekr1t-42",
        ),
        (
            "postgres://notes_admin@db.internal:5432/notes?password=pw@Sekr1t-42",
            "Sekr1t-42",
        ),
        (
            "postgres://notes_admin:pw@db.internal:5432/notes#pw-Sekr1t-42",
            "Sekr1t-42",
        ),
    ] {
        let settings = Settings::from_prefix("NOTES")
            .default_runtime_role("notes_runtime")
            .read(vars(&[
                ("NOTES_DATABASE_URL", url),
                ("NOTES_JWT_SECRET", secret),
            ]))
            .unwrap();
        let shown = settings.database_url.clone().unwrap();
        for text in [
            format!("{settings:?}"),
            format!("{settings:#?}"),
            shown.to_string(),
        ] {
            assert!(!text.contains(password), "password shown: {text}");
            assert!(!text.contains("jwt-Secret"), "secret shown: {text}");
            for expected in ["notes_admin", "db.internal", "5432"] {
                assert!(text.contains(expected), "{expected} missing from {text}");
            }
        }
        assert!(format!("{settings:?}").contains("notes_runtime"));
        assert_eq!(shown.expose(), url, "the URL itself is kept whole");
    }
    let url: DatabaseUrl = "postgres://db/app".parse().unwrap();
    assert_eq!(url.to_string(), "postgres://db/app");
}

/// A password with an unescaped `/`, `?` or `#` makes the URL's parts
/// ambiguous: everything after the scheme is hidden.
#[test]
fn an_ambiguous_url_is_hidden_whole() {
    for url in [
        "postgres://notes_admin:pw/Sek?r1t@42@db.internal:5432/notes",
        "postgres://u:pa?ss-Sekr1t@db/app",
        "postgres://u:pa#ss-Sekr1t@db/app",
        "postgres://u:pa/ss-Sekr1t@db/app",
    ] {
        let url: DatabaseUrl = url.parse().unwrap();
        assert_eq!(url.to_string(), "postgres://<redacted>");
        assert!(!format!("{url:?}").contains("Sekr1t"));
    }
    let v6: DatabaseUrl = "postgres://u:pw@[::1]:5432/app".parse().unwrap();
    assert_eq!(v6.to_string(), "postgres://u:<redacted>@[::1]:5432/app");
}
