//! Protection against server-side request forgery: endpoints are URLs
//! chosen by tenants, so without a check a tenant could make our servers
//! call the cloud metadata service, an admin port on loopback or a
//! database on the private network.
//!
//! The check is on the address actually connected to: host names are
//! resolved here, every address is checked, and the HTTP client is handed
//! a resolver that returns only checked addresses (so a second lookup, a
//! DNS rebinding between check and connect, cannot slip a private address
//! in). Redirects are not followed and no proxy is used.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::WebhookError;

/// Which addresses webhook requests may connect to. The default refuses
/// every address that is not globally routable (loopback, private,
/// link-local, unspecified, multicast, documentation, CGNAT, and their
/// IPv4-mapped and NAT64 forms).
///
/// ```
/// use std::net::IpAddr;
/// use saas_events::webhooks::SsrfPolicy;
///
/// let strict = SsrfPolicy::default();
/// assert!(strict.check("169.254.169.254".parse::<IpAddr>()?).is_err());
/// assert!(strict.check("::ffff:127.0.0.1".parse::<IpAddr>()?).is_err());
/// assert!(strict.check("93.184.215.14".parse::<IpAddr>()?).is_ok());
/// let tests = SsrfPolicy::default().allow_loopback();
/// assert!(tests.check("127.0.0.1".parse::<IpAddr>()?).is_ok());
/// assert!(tests.check("10.0.0.1".parse::<IpAddr>()?).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct SsrfPolicy {
    allow_loopback: bool,
    allow_non_global: bool,
    allowed: Vec<IpAddr>,
}

impl SsrfPolicy {
    /// Also allows loopback addresses (tests, a sidecar receiver).
    pub fn allow_loopback(mut self) -> Self {
        self.allow_loopback = true;
        self
    }

    /// Allows every address (a deployment whose customers' receivers live
    /// on a private network). Use with care: this turns the check off.
    pub fn allow_non_global(mut self) -> Self {
        self.allow_non_global = true;
        self
    }

    /// Allows this one address whatever its class.
    pub fn allow_ip(mut self, ip: IpAddr) -> Self {
        self.allowed.push(ip);
        self
    }

    /// Whether requests may connect to `ip`; the error says which class
    /// of address refused it.
    ///
    /// # Errors
    /// The reason, for an address the policy refuses.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow_non_global || self.allowed.contains(&ip) {
            return Ok(());
        }
        match classify(ip) {
            None => Ok(()),
            Some(Class::Loopback) if self.allow_loopback => Ok(()),
            Some(class) => Err(class.reason()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Loopback,
    Other(&'static str),
}

impl Class {
    fn reason(self) -> &'static str {
        match self {
            Class::Loopback => "loopback address",
            Class::Other(reason) => reason,
        }
    }
}

/// The class of a non-global address, or `None` for a global one.
fn classify(ip: IpAddr) -> Option<Class> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    let other = |reason| Some(Class::Other(reason));
    if ip.is_loopback() {
        return Some(Class::Loopback);
    }
    match (a, b, c) {
        (0, _, _) => other("unspecified (0.0.0.0/8) address"),
        (10, _, _) | (192, 168, _) => other("private address"),
        (172, 16..=31, _) => other("private address"),
        (169, 254, _) => other("link-local address"),
        (100, 64..=127, _) => other("shared (CGNAT) address"),
        (192, 0, 0) => other("IETF protocol address"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => other("documentation address"),
        (198, 18..=19, _) => other("benchmarking address"),
        (224..=239, _, _) => other("multicast address"),
        (240..=255, _, _) => other("reserved or broadcast address"),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    let segments = ip.segments();
    let other = |reason| Some(Class::Other(reason));
    let embedded_v4 = || {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    if ip.is_loopback() {
        return Some(Class::Loopback);
    }
    if ip.is_unspecified() {
        return other("unspecified address");
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and
    // NAT64 (64:ff9b::a.b.c.d) reach the embedded IPv4 address: judge that.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if segments[..6] == [0; 6] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_v4());
    }
    match segments[0] {
        0x2002 => {
            // 6to4 carries an IPv4 address in bits 16..48.
            let [_, _, a, b, c, d, ..] = ip.octets();
            classify_v4(Ipv4Addr::new(a, b, c, d))
        }
        s if s & 0xfe00 == 0xfc00 => other("unique local (private) address"),
        s if s & 0xffc0 == 0xfe80 => other("link-local address"),
        s if s & 0xffc0 == 0xfec0 => other("site-local address"),
        s if s & 0xff00 == 0xff00 => other("multicast address"),
        0x2001 if segments[1] == 0x0db8 => other("documentation address"),
        0x2001 if segments[1] == 0 => other("Teredo tunnel address"),
        0x0100 if segments[1..4] == [0, 0, 0] => other("discard-only address"),
        _ => None,
    }
}

/// Resolves host names and checks every address against the policy;
/// fixed answers for some names (tests, split-horizon setups) go through
/// the same check.
#[derive(Debug, Clone)]
pub(crate) struct CheckedResolver {
    policy: SsrfPolicy,
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl CheckedResolver {
    pub(crate) fn new(policy: SsrfPolicy, overrides: HashMap<String, Vec<IpAddr>>) -> Self {
        Self {
            policy,
            overrides: Arc::new(overrides),
        }
    }

    /// The addresses `host` may be reached at, all allowed by the policy.
    /// A name with any refused address is refused whole: the client could
    /// pick any of them.
    pub(crate) async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, WebhookError> {
        let refuse = |address: IpAddr, reason: &'static str| WebhookError::Forbidden {
            host: host.to_owned(),
            address,
            reason,
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<IpAddr> = if let Ok(ip) = bare.parse::<IpAddr>() {
            vec![ip]
        } else if let Some(fixed) = self.overrides.get(&bare.to_ascii_lowercase()) {
            fixed.clone()
        } else {
            tokio::net::lookup_host((bare, port))
                .await
                .map_err(|source| WebhookError::Resolve {
                    host: host.to_owned(),
                    reason: source.to_string(),
                })?
                .map(|addr| addr.ip())
                .collect()
        };
        if ips.is_empty() {
            return Err(WebhookError::Resolve {
                host: host.to_owned(),
                reason: "no addresses".to_owned(),
            });
        }
        for ip in &ips {
            self.policy
                .check(*ip)
                .map_err(|reason| refuse(*ip, reason))?;
        }
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts the URL's port in.
            let addrs = this.resolve_checked(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse()
            .unwrap_or_else(|_| panic!("bad test address {text}"))
    }

    #[test]
    fn the_default_policy_refuses_every_non_global_class() {
        let strict = SsrfPolicy::default();
        for refused in [
            "0.0.0.0",
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ] {
            assert!(
                strict.check(ip(refused)).is_err(),
                "{refused} should be refused"
            );
        }
        for allowed in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(
                strict.check(ip(allowed)).is_ok(),
                "{allowed} should be allowed"
            );
        }
    }

    #[test]
    fn allowances_widen_only_what_they_name() {
        let loopback = SsrfPolicy::default().allow_loopback();
        assert!(loopback.check(ip("127.0.0.1")).is_ok());
        assert!(loopback.check(ip("::1")).is_ok());
        assert!(loopback.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(loopback.check(ip("10.0.0.1")).is_err());
        let one = SsrfPolicy::default().allow_ip(ip("10.0.0.5"));
        assert!(one.check(ip("10.0.0.5")).is_ok());
        assert!(one.check(ip("10.0.0.6")).is_err());
        assert!(
            SsrfPolicy::default()
                .allow_non_global()
                .check(ip("169.254.169.254"))
                .is_ok()
        );
    }

    /// What the HTTP client connects to comes from this resolver: it must
    /// refuse as the check does, overrides included.
    #[tokio::test]
    async fn the_client_resolver_returns_only_checked_addresses() {
        let overrides = HashMap::from([
            ("rebound.example".to_owned(), vec![ip("127.0.0.1")]),
            (
                "mixed.example".to_owned(),
                vec![ip("8.8.8.8"), ip("10.0.0.1")],
            ),
            ("public.example".to_owned(), vec![ip("8.8.8.8")]),
        ]);
        let resolver = CheckedResolver::new(SsrfPolicy::default(), overrides);
        for host in ["rebound.example", "mixed.example", "localhost"] {
            let name: Name = host.parse().unwrap_or_else(|_| panic!("bad name {host}"));
            let error = match resolver.resolve(name).await {
                Ok(addrs) => panic!("{host} resolved to {:?}", addrs.collect::<Vec<_>>()),
                Err(error) => error,
            };
            assert!(
                matches!(error.downcast_ref(), Some(WebhookError::Forbidden { .. })),
                "{host}: {error}"
            );
        }
        let name: Name = "public.example"
            .parse()
            .unwrap_or_else(|_| panic!("bad name"));
        let addrs: Vec<_> = match resolver.resolve(name).await {
            Ok(addrs) => addrs.collect(),
            Err(error) => panic!("{error}"),
        };
        assert_eq!(addrs, [SocketAddr::new(ip("8.8.8.8"), 0)]);
    }
}
