//! The settings every foundation host reads at startup — where the data
//! is, the runtime role, the address to listen on, the token secret —
//! from the environment, with values that never show a secret in a log.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// The shortest token secret accepted: HS256 wants a key at least as
/// long as its 256-bit hash.
pub const MIN_SECRET_BYTES: usize = 32;

/// A secret (a token signing key): its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret of these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// 32 bytes from two random (v4) UUIDs — 244 random bits from the
    /// operating system's generator: tokens signed with it do not outlive
    /// the process.
    pub fn random() -> Self {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        Secret([a.as_bytes().as_slice(), b.as_bytes()].concat())
    }

    /// The secret's bytes, for the code that signs or verifies with it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A PostgreSQL URL (`postgres://` or `postgresql://`) whose `Debug` and
/// `Display` hide the password and the query (which may carry one).
///
/// ```
/// use saas_foundation::config::DatabaseUrl;
///
/// let url: DatabaseUrl = "postgres://app:s3cret@db:5432/app?sslpassword=x".parse()?;
/// assert_eq!(url.to_string(), "postgres://app:<redacted>@db:5432/app?<redacted>");
/// assert_eq!(url.expose(), "postgres://app:s3cret@db:5432/app?sslpassword=x");
/// # Ok::<(), saas_foundation::config::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The whole URL, password included, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = ConfigError;

    fn from_str(url: &str) -> Result<Self, ConfigError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl(url.to_owned()));
        }
        Err(ConfigError::invalid(
            "the database URL",
            "it must start with postgres:// (leave it unset for SQLite files)",
        ))
    }
}

impl fmt::Display for DatabaseUrl {
    /// The URL with the password of its user info and its whole query and
    /// fragment hidden. The parts are found as a URL parser finds them —
    /// the authority ends at the first `/`, `?` or `#`, the user info at
    /// the authority's last `@` — and a URL whose parts do not make sense
    /// that way (a port that is not a number, an `@` in the path: a
    /// password with an unescaped `/`, `?` or `#`) is hidden whole after
    /// its scheme.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let (path, hidden) = match tail.find(['?', '#']) {
            Some(at) => (&tail[..at], true),
            None => (tail, false),
        };
        if !port_is_a_number(host) || path.contains('@') {
            return write!(f, "{scheme}://<redacted>");
        }
        write!(f, "{scheme}://")?;
        match userinfo.map(|u| u.split_once(':')) {
            Some(Some((user, _password))) => write!(f, "{user}:<redacted>@")?,
            Some(None) => write!(f, "{}@", userinfo.unwrap_or_default())?,
            None => {}
        }
        write!(f, "{host}{path}")?;
        if hidden {
            f.write_str("?<redacted>")?;
        }
        Ok(())
    }
}

/// Whether `host` (`name`, `name:port`, `[v6]` or `[v6]:port`) has no
/// port or a numeric one.
fn port_is_a_number(host: &str) -> bool {
    let after_address = match host.rfind(']') {
        Some(at) => &host[at + 1..],
        None => host,
    };
    match after_address.split_once(':') {
        Some((_, port)) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// A setting that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} is invalid: {reason}")]
pub struct ConfigError {
    setting: String,
    reason: String,
}

impl ConfigError {
    fn invalid(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.into(),
            reason: reason.into(),
        }
    }

    /// The setting (an environment variable's name when read from one).
    pub fn setting(&self) -> &str {
        &self.setting
    }
}

/// A host's settings. `Debug` hides the database password and the secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The PostgreSQL server holding the catalog, the billing tables and
    /// the shared tenant tables, connected to as an administrator; `None`:
    /// SQLite files in [`Settings::data_dir`].
    pub database_url: Option<DatabaseUrl>,
    /// Where the SQLite files live when there is no server.
    pub data_dir: PathBuf,
    /// The login-less role scoped queries run as on PostgreSQL.
    pub runtime_role: String,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The HS256 secret tokens are signed with.
    pub jwt_secret: Secret,
    /// Where `Host::export_traces` (feature `otlp`) sends traces
    /// (an OTLP/HTTP endpoint such as `http://127.0.0.1:4318/v1/traces`);
    /// `None`: to standard output.
    pub otlp_endpoint: Option<String>,
}

impl Settings {
    /// Settings read from variables named `{prefix}_…`, with these
    /// defaults until changed: no database URL (SQLite files), data
    /// directory `{app}-data` and runtime role `{app}_runtime` (`{app}`:
    /// the prefix in lower case, other characters than letters, digits
    /// and `_` as `_`; `app` for an empty prefix), listening on
    /// `127.0.0.1:3000`, a [random](Secret::random) secret, traces to
    /// standard output.
    ///
    /// ```
    /// use saas_foundation::config::Settings;
    ///
    /// let vars = [("NOTES_LISTEN", "0.0.0.0:8080")];
    /// let settings = Settings::from_prefix("NOTES")
    ///     .read(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))?;
    /// assert_eq!(settings.listen.port(), 8080);
    /// assert_eq!(settings.data_dir, std::path::Path::new("notes-data"));
    /// assert_eq!(settings.runtime_role, "notes_runtime");
    /// assert!(settings.database_url.is_none());
    /// # Ok::<(), saas_foundation::config::ConfigError>(())
    /// ```
    pub fn from_prefix(prefix: &str) -> SettingsReader {
        let app: String = prefix
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '_') => c,
                _ => '_',
            })
            .collect();
        let app = if app.is_empty() {
            "app".to_owned()
        } else {
            app
        };
        SettingsReader {
            prefix: prefix.to_owned(),
            database_url: None,
            data_dir: PathBuf::from(format!("{app}-data")),
            runtime_role: format!("{app}_runtime"),
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        }
    }
}

/// Reads [`Settings`]: `{prefix}_DATABASE_URL`, `{prefix}_DATA_DIR`,
/// `{prefix}_RUNTIME_ROLE`, `{prefix}_LISTEN`, `{prefix}_JWT_SECRET` (at
/// least [`MIN_SECRET_BYTES`]) and `{prefix}_OTLP_ENDPOINT`, each falling
/// back to its default when unset.
#[derive(Debug, Clone)]
pub struct SettingsReader {
    prefix: String,
    database_url: Option<DatabaseUrl>,
    data_dir: PathBuf,
    runtime_role: String,
    listen: SocketAddr,
}

impl SettingsReader {
    /// The database URL when `{prefix}_DATABASE_URL` is unset (default:
    /// none, SQLite files).
    pub fn default_database_url(mut self, url: DatabaseUrl) -> Self {
        self.database_url = Some(url);
        self
    }

    /// The data directory when `{prefix}_DATA_DIR` is unset.
    pub fn default_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// The runtime role when `{prefix}_RUNTIME_ROLE` is unset.
    pub fn default_runtime_role(mut self, role: &str) -> Self {
        self.runtime_role = role.to_owned();
        self
    }

    /// The address when `{prefix}_LISTEN` is unset.
    pub fn default_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Reads the process's environment.
    ///
    /// # Errors
    /// As [`SettingsReader::read`]; a variable that is not Unicode is
    /// invalid too.
    pub fn from_env(self) -> Result<Settings, ConfigError> {
        let mut not_unicode = None;
        let settings = self.read(|name| match std::env::var(name) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                not_unicode = Some(name.to_owned());
                None
            }
        });
        match not_unicode {
            Some(name) => Err(ConfigError::invalid(name, "it is not valid Unicode")),
            None => settings,
        }
    }

    /// Reads the variables `var` returns (`None`: unset).
    ///
    /// # Errors
    /// [`ConfigError`] naming the variable: a URL that is not
    /// PostgreSQL's, an address that does not parse, a secret shorter than
    /// [`MIN_SECRET_BYTES`].
    pub fn read(
        self,
        mut var: impl FnMut(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let prefix = self.prefix;
        let mut get = |name: &str| {
            let name = format!("{prefix}_{name}");
            (var(&name), name)
        };
        let database_url = match get("DATABASE_URL") {
            (Some(url), name) => Some(
                url.parse()
                    .map_err(|e: ConfigError| ConfigError { setting: name, ..e })?,
            ),
            (None, _) => self.database_url,
        };
        let listen = match get("LISTEN") {
            (Some(addr), name) => addr.parse().map_err(|e| {
                ConfigError::invalid(name, format!("{e}; write it as 127.0.0.1:3000"))
            })?,
            (None, _) => self.listen,
        };
        let jwt_secret = match get("JWT_SECRET") {
            (Some(secret), _) if secret.len() >= MIN_SECRET_BYTES => Secret::new(secret),
            (Some(_), name) => {
                return Err(ConfigError::invalid(
                    name,
                    format!("it must be at least {MIN_SECRET_BYTES} bytes"),
                ));
            }
            (None, _) => Secret::random(),
        };
        Ok(Settings {
            database_url,
            data_dir: get("DATA_DIR").0.map_or(self.data_dir, PathBuf::from),
            runtime_role: get("RUNTIME_ROLE").0.unwrap_or(self.runtime_role),
            listen,
            jwt_secret,
            otlp_endpoint: get("OTLP_ENDPOINT").0.filter(|e| !e.is_empty()),
        })
    }
}
