//! A replication connection to the source database
//! (`replication=database`): the one place PostgreSQL hands out a
//! snapshot that matches a new logical slot's starting point exactly
//! (`CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT`). Rows copied under that
//! snapshot plus the changes the slot streams from its starting point are
//! every committed write exactly once — how Citus and pglogical start a
//! shard move, and what a subscription's own table sync does with a
//! temporary slot per table and PostgreSQL's background workers in
//! between (a fixed cost of a few hundred milliseconds per move).
//!
//! sqlx cannot open such a connection (its startup message carries no
//! `replication` parameter), so this speaks the few messages it needs —
//! startup, authentication (trust, password, MD5, SCRAM-SHA-256), one
//! simple query — with postgres-protocol's codec. It speaks no TLS (the
//! workspace builds sqlx without TLS too): a `replication_conninfo`
//! asking for TLS, or setting a keyword it does not honour, makes the
//! mover fall back to the table sync, and it sends a password in clear
//! text only where the connection info says `sslmode=disable`.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::postgres::PgClusterConfig;

/// Where and as whom the replication connection logs in.
#[derive(Clone)]
pub(super) struct Endpoint {
    address: Address,
    user: String,
    password: Option<String>,
    database: String,
    /// Whether a password may be sent in clear text (the server asking
    /// for `password` authentication): only where the connection info
    /// says `sslmode=disable` — libpq would otherwise have tried TLS.
    cleartext: bool,
}

/// Keywords of a connection info the mover's connection honours (or
/// that do not change where and how it connects); any other one makes
/// it fall back to the table sync rather than connect differently from
/// the subscription.
const KNOWN_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "sslmode",
    "application_name",
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "fallback_application_name",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Tcp(String, u16),
    /// A Unix socket directory and port (the socket is `.s.PGSQL.<port>`).
    Unix(PathBuf, u16),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish()
    }
}

impl Endpoint {
    /// The source cluster's replication endpoint for `database`: its
    /// `replication_conninfo` (host, port, user, password; the way a
    /// replication client reaches it) or, without one, host, port and
    /// user of its admin options with no password (sqlx does not give a
    /// configured password back). `Err` says why no replication
    /// connection can be made (the caller falls back to the table sync).
    pub(super) fn of(config: &PgClusterConfig, database: &str) -> Result<Self, String> {
        let admin = &config.admin;
        let mut endpoint = Endpoint {
            address: match admin.get_socket() {
                Some(dir) => Address::Unix(dir.clone(), admin.get_port()),
                None => Address::Tcp(admin.get_host().to_owned(), admin.get_port()),
            },
            user: admin.get_username().to_owned(),
            password: None,
            database: database.to_owned(),
            cleartext: false,
        };
        let Some(conninfo) = &config.replication_conninfo else {
            return Ok(endpoint);
        };
        let keys = parse_conninfo(conninfo)?;
        if let Some(key) = keys.keys().find(|k| !KNOWN_KEYWORDS.contains(&k.as_str())) {
            return Err(format!(
                "the replication connection info sets {key}, which the mover's own replication \
                 connection does not honour"
            ));
        }
        endpoint.cleartext = keys.get("sslmode").is_some_and(|m| m == "disable");
        if let Some(mode) = keys.get("sslmode")
            && !matches!(mode.as_str(), "disable" | "allow" | "prefer")
        {
            return Err(format!(
                "the replication connection info asks for TLS (sslmode={mode}), which the \
                 mover's own replication connection does not speak"
            ));
        }
        let host = keys.get("hostaddr").or_else(|| keys.get("host"));
        let port = match keys.get("port") {
            Some(p) => p
                .parse()
                .map_err(|_| format!("the replication connection info's port {p:?} is no port"))?,
            // Another host on libpq's default port; the admin's host on
            // the admin's port.
            None if host.is_some() => 5432,
            None => admin.get_port(),
        };
        if let Some(host) = host {
            endpoint.address = match host.starts_with('/') {
                true => Address::Unix(PathBuf::from(host), port),
                false => Address::Tcp(host.clone(), port),
            };
        } else {
            let (Address::Tcp(_, p) | Address::Unix(_, p)) = &mut endpoint.address;
            *p = port;
        }
        if let Some(user) = keys.get("user") {
            endpoint.user = user.clone();
        }
        endpoint.password = keys.get("password").cloned();
        Ok(endpoint)
    }
}

/// libpq `keyword=value` pairs (values optionally single-quoted, `\`
/// escaping inside quotes).
fn parse_conninfo(conninfo: &str) -> Result<BTreeMap<String, String>, String> {
    let bad = || "the replication connection info is not libpq `keyword=value` pairs".to_owned();
    let mut keys = BTreeMap::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(keys);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || key.is_empty() {
            return Err(bad());
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or_else(bad)?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(bad()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(if c == '\\' {
                    chars.next().ok_or_else(bad)?
                } else {
                    c
                });
            }
        }
        keys.insert(key, value);
    }
}

/// A slot created with an exported snapshot, valid while the connection
/// that made it stays open and idle.
#[derive(Debug)]
pub(super) struct ExportedSlot {
    /// The snapshot to `SET TRANSACTION SNAPSHOT` to.
    pub(super) snapshot: String,
}

/// Why creating the slot failed.
#[derive(Debug)]
pub(super) enum SlotError {
    /// Its consistent point waited past the lock timeout for transactions
    /// open on the server.
    LockTimeout,
    /// Anything else, as the server or the connection said it.
    Failed(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open replication connection, idle between commands.
pub(super) struct ReplicationConnection {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    /// The server's bound on the slot's wait; the client's is a little
    /// longer (a stalled server or network).
    lock_timeout: Duration,
}

impl ReplicationConnection {
    /// Connects and logs in; `lock_timeout` bounds the slot's wait for a
    /// consistent point. `Err` says why it could not (the caller falls
    /// back to the table sync).
    pub(super) async fn connect(
        endpoint: &Endpoint,
        lock_timeout: Duration,
    ) -> Result<Self, String> {
        let connecting = async {
            let stream: Box<dyn Stream> = match &endpoint.address {
                Address::Tcp(host, port) => {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    tcp.set_nodelay(true)?;
                    Box::new(tcp)
                }
                #[cfg(unix)]
                Address::Unix(dir, port) => Box::new(
                    tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?,
                ),
                #[cfg(not(unix))]
                Address::Unix(..) => {
                    return Err(io::Error::other("Unix sockets need a Unix system"));
                }
            };
            Ok::<_, io::Error>(stream)
        };
        let stream = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| "connecting took over 10 s".to_owned())?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut conn = ReplicationConnection {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            lock_timeout,
        };
        // PostgreSQL takes at most i32::MAX milliseconds.
        let millis = lock_timeout.as_millis().clamp(1, i32::MAX as u128);
        let options = format!("-c lock_timeout={millis}");
        let params = [
            ("user", endpoint.user.as_str()),
            ("database", endpoint.database.as_str()),
            ("replication", "database"),
            ("application_name", "saas_tenancy_move"),
            ("options", options.as_str()),
        ];
        tokio::time::timeout(Duration::from_secs(10), conn.login(&params, endpoint))
            .await
            .map_err(|_| format!("logging in as {:?} took over 10 s", endpoint.user))?
            .map_err(|e| format!("cannot log in as {:?}: {e}", endpoint.user))?;
        conn.lock_timeout = lock_timeout;
        Ok(conn)
    }

    async fn login(&mut self, params: &[(&str, &str)], endpoint: &Endpoint) -> Result<(), String> {
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out).map_err(|e| e.to_string())?;
        self.send(&out).await?;
        let password = || {
            endpoint.password.as_deref().ok_or_else(|| {
                "the server asks for a password and none is known (set it in \
                 PgClusterConfig::with_replication_conninfo)"
                    .to_owned()
            })
        };
        let mut scram: Option<ScramSha256> = None;
        let mut scram_verified = false;
        loop {
            match self.next().await? {
                Message::AuthenticationOk if scram.is_some() && !scram_verified => {
                    return Err(
                        "the server ended SCRAM without proving it knows the password".to_owned(),
                    );
                }
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword if !endpoint.cleartext => {
                    return Err("the server asks for the password in clear text, and the \
                                connection is not encrypted (say sslmode=disable in the \
                                replication connection info to allow it)"
                        .to_owned());
                }
                Message::AuthenticationCleartextPassword => {
                    let mut out = BytesMut::new();
                    frontend::password_message(password()?.as_bytes(), &mut out)
                        .map_err(|e| e.to_string())?;
                    self.send(&out).await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(
                        endpoint.user.as_bytes(),
                        password()?.as_bytes(),
                        body.salt(),
                    );
                    let mut out = BytesMut::new();
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(|e| e.to_string())?;
                    self.send(&out).await?;
                }
                Message::AuthenticationSasl(body) => {
                    let offered: Vec<String> = body
                        .mechanisms()
                        .map(|m| Ok(m.to_owned()))
                        .collect()
                        .map_err(|e: io::Error| e.to_string())?;
                    if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(format!("the server offers only {offered:?}"));
                    }
                    let state =
                        ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                    let mut out = BytesMut::new();
                    frontend::sasl_initial_response(SCRAM_SHA_256, state.message(), &mut out)
                        .map_err(|e| e.to_string())?;
                    self.send(&out).await?;
                    scram = Some(state);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let state = scram.as_mut().ok_or("an unexpected SASL message")?;
                    state.update(body.data()).map_err(|e| e.to_string())?;
                    let mut out = BytesMut::new();
                    frontend::sasl_response(state.message(), &mut out)
                        .map_err(|e| e.to_string())?;
                    self.send(&out).await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let state = scram.as_mut().ok_or("an unexpected SASL message")?;
                    state.finish(body.data()).map_err(|e| e.to_string())?;
                    scram_verified = true;
                }
                Message::ErrorResponse(body) => return Err(server_error(body.fields()).1),
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                _ => return Err("an unexpected message while logging in".to_owned()),
            }
        }
    }

    /// The server's system identifier and the connection's database
    /// (`IDENTIFY_SYSTEM`): the caller checks they are the source's.
    pub(super) async fn identify(&mut self) -> Result<(String, Option<String>), String> {
        let rows = self
            .command("IDENTIFY_SYSTEM", Duration::from_secs(10))
            .await
            .map_err(|(_, message)| format!("IDENTIFY_SYSTEM failed: {message}"))?;
        let row = rows.first().ok_or("IDENTIFY_SYSTEM returned no row")?;
        let system = row.first().cloned().flatten().unwrap_or_default();
        Ok((system, row.get(3).cloned().flatten()))
    }

    /// Creates the logical slot `name` (pgoutput) and exports its
    /// snapshot; the connection must then stay open and idle until the
    /// snapshot is imported.
    pub(super) async fn create_slot(&mut self, name: &str) -> Result<ExportedSlot, SlotError> {
        // Slot names are the mover's own: `saas_mv_` and hex digits. The
        // server's lock timeout bounds the wait; this, a stalled server.
        let sql = format!("CREATE_REPLICATION_SLOT \"{name}\" LOGICAL pgoutput EXPORT_SNAPSHOT");
        let within = self.lock_timeout.saturating_add(Duration::from_secs(30));
        let rows = self
            .command(&sql, within)
            .await
            .map_err(|(code, message)| match code.as_str() {
                "55P03" => SlotError::LockTimeout,
                _ => SlotError::Failed(message),
            })?;
        // slot_name, consistent_point, snapshot_name, output_plugin
        rows.first()
            .and_then(|row| row.get(2).cloned().flatten())
            .map(|snapshot| ExportedSlot { snapshot })
            .ok_or_else(|| SlotError::Failed("the server exported no snapshot".to_owned()))
    }

    /// Runs one replication command (simple query) within `within`: its
    /// rows as text, or the server's SQLSTATE and message (the error the
    /// server reported before closing, when it closed).
    async fn command(
        &mut self,
        sql: &str,
        within: Duration,
    ) -> Result<Vec<Vec<Option<String>>>, (String, String)> {
        let run = async {
            let mut out = BytesMut::new();
            frontend::query(sql, &mut out).map_err(|e| (String::new(), e.to_string()))?;
            self.send(&out).await.map_err(|e| (String::new(), e))?;
            let (mut rows, mut failure) = (Vec::new(), None);
            loop {
                let message = match self.next().await {
                    Ok(message) => message,
                    Err(e) => return Err(failure.unwrap_or((String::new(), e))),
                };
                match message {
                    Message::DataRow(body) => {
                        let buffer = body.buffer();
                        let fields: Vec<Option<String>> = body
                            .ranges()
                            .map(|r| {
                                Ok(r.and_then(|r| buffer.get(r))
                                    .map(|b| String::from_utf8_lossy(b).into_owned()))
                            })
                            .collect()
                            .map_err(|e: io::Error| (String::new(), e.to_string()))?;
                        rows.push(fields);
                    }
                    Message::ErrorResponse(body) => failure = Some(server_error(body.fields())),
                    Message::ReadyForQuery(_) => break,
                    _ => {}
                }
            }
            match failure {
                Some(failure) => Err(failure),
                None => Ok(rows),
            }
        };
        tokio::time::timeout(within, run).await.map_err(|_| {
            (
                String::new(),
                format!("no answer to {sql} within {within:?}"),
            )
        })?
    }

    /// Says goodbye (the snapshot ends with the connection).
    pub(super) async fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.send(&out).await;
        let _ = self.stream.shutdown().await;
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("the connection failed: {e}"))?;
        self.stream
            .flush()
            .await
            .map_err(|e| format!("the connection failed: {e}"))
    }

    async fn next(&mut self) -> Result<Message, String> {
        loop {
            if let Some(message) = Message::parse(&mut self.buf).map_err(|e| e.to_string())? {
                return Ok(message);
            }
            let read = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("the connection failed: {e}"))?;
            if read == 0 {
                return Err("the server closed the connection".to_owned());
            }
        }
    }
}

/// An error response's SQLSTATE and "SEVERITY: message (detail)".
fn server_error(
    mut fields: postgres_protocol::message::backend::ErrorFields<'_>,
) -> (String, String) {
    let (mut code, mut message, mut detail) = (String::new(), String::new(), None);
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            _ => {}
        }
    }
    let text = match detail {
        Some(d) => format!("{message} ({d}) [{code}]"),
        None => format!("{message} [{code}]"),
    };
    (code, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_values_may_be_quoted_and_escaped() {
        let Ok(keys) = parse_conninfo("host=db port = 6543 user='o\\'neil' password='s p' x=a\\ b")
        else {
            panic!("parses");
        };
        assert_eq!(keys.get("host").map(String::as_str), Some("db"));
        assert_eq!(keys.get("port").map(String::as_str), Some("6543"));
        assert_eq!(keys.get("user").map(String::as_str), Some("o'neil"));
        assert_eq!(keys.get("password").map(String::as_str), Some("s p"));
        assert_eq!(keys.get("x").map(String::as_str), Some("a b"));
    }

    fn config(url: &str) -> PgClusterConfig {
        let (Ok(name), Ok(admin), Ok(role)) = (
            crate::placement::ClusterName::new("main"),
            url.parse(),
            crate::postgres::SqlIdent::new("app_runtime"),
        ) else {
            panic!("test configuration");
        };
        PgClusterConfig::new(name, admin, role)
    }

    #[test]
    fn without_a_conninfo_the_admin_host_port_and_user_are_used() {
        let Ok(endpoint) = Endpoint::of(&config("postgres://admin@db.internal:6543/app"), "t_1")
        else {
            panic!("an endpoint");
        };
        assert_eq!(endpoint.address, Address::Tcp("db.internal".into(), 6543));
        assert_eq!(endpoint.user, "admin");
        assert_eq!(endpoint.password, None);
        assert_eq!(endpoint.database, "t_1");
    }

    #[test]
    fn a_conninfo_gives_host_port_user_and_password_and_is_redacted() {
        let config = config("postgres://admin@db.internal/app").with_replication_conninfo(
            "host=10.0.0.5 port=5433 user=replicator password='s3 cret' sslmode=prefer",
        );
        let Ok(endpoint) = Endpoint::of(&config, "app") else {
            panic!("an endpoint");
        };
        assert_eq!(endpoint.address, Address::Tcp("10.0.0.5".into(), 5433));
        assert_eq!(endpoint.user, "replicator");
        assert_eq!(endpoint.password.as_deref(), Some("s3 cret"));
        assert!(!format!("{endpoint:?}").contains("s3 cret"));
        let unix = config.with_replication_conninfo("host=/run/postgresql user=r");
        let Ok(endpoint) = Endpoint::of(&unix, "app") else {
            panic!("an endpoint");
        };
        assert_eq!(
            endpoint.address,
            Address::Unix(PathBuf::from("/run/postgresql"), 5432)
        );
    }

    #[test]
    fn without_a_host_the_admin_port_is_kept_and_clear_text_needs_sslmode_disable() {
        let base = config("postgres://admin@db.internal:6543/app");
        let Ok(e) = Endpoint::of(&base.clone().with_replication_conninfo("user=r"), "app") else {
            panic!("an endpoint");
        };
        assert_eq!(e.address, Address::Tcp("db.internal".into(), 6543));
        assert!(!e.cleartext);
        let Ok(e) = Endpoint::of(&base.with_replication_conninfo("sslmode=disable"), "app") else {
            panic!("an endpoint");
        };
        assert!(e.cleartext);
    }

    #[test]
    fn a_conninfo_asking_for_tls_with_a_bad_port_or_an_unknown_keyword_gives_no_endpoint() {
        let base = config("postgres://admin@db.internal/app");
        for (conninfo, says) in [
            ("host=db sslmode=require", "TLS"),
            ("host=db sslmode=verify-full", "TLS"),
            ("host=db port=x", "port"),
            ("host=db channel_binding=require", "channel_binding"),
            ("service=prod", "service"),
        ] {
            match Endpoint::of(&base.clone().with_replication_conninfo(conninfo), "app") {
                Err(why) => assert!(why.contains(says), "{conninfo}: {why}"),
                Ok(e) => panic!("{conninfo}: {e:?}"),
            }
        }
    }

    #[test]
    fn a_conninfo_without_equals_or_with_an_open_quote_is_refused() {
        assert!(parse_conninfo("host").is_err());
        assert!(parse_conninfo("password='open").is_err());
        assert!(parse_conninfo("=x").is_err());
    }
}
