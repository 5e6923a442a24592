//! Human-friendly tenant names for URLs.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, ErrorKind};

/// The longest DNS label (RFC 1035 §2.3.4).
pub const MAX_SLUG_LEN: usize = 63;

/// Names refused by [`SlugPolicy::default`]: subdomains an application
/// usually needs for itself, or that invite phishing.
pub const DEFAULT_RESERVED_SLUGS: &[&str] = &[
    "admin",
    "api",
    "app",
    "assets",
    "auth",
    "billing",
    "cdn",
    "dashboard",
    "dev",
    "docs",
    "ftp",
    "help",
    "imap",
    "internal",
    "localhost",
    "login",
    "mail",
    "ns1",
    "ns2",
    "pop",
    "root",
    "smtp",
    "static",
    "status",
    "support",
    "system",
    "test",
    "www",
];

/// A tenant's URL name: a lowercase DNS label such as `acme-corp`.
///
/// Valid slugs are 1–63 characters of `a-z`, `0-9` and `-`, neither
/// starting nor ending with a hyphen, and without `--` in positions 3–4
/// (reserved for punycode `xn--` labels, a homograph vector). Every valid
/// slug is therefore usable as a subdomain.
///
/// Slugs are for URLs and display. They are **never** used to build SQL
/// identifiers; storage derives names from [`TenantId`](crate::TenantId).
///
/// [`TenantSlug::parse`] checks the syntax only (use it for slugs read back
/// from storage). New tenants should go through [`SlugPolicy::check_new`],
/// which also refuses reserved names.
///
/// ```
/// use saas_core::{SlugError, TenantSlug};
///
/// let slug = TenantSlug::parse("acme-corp")?;
/// assert_eq!(slug.as_str(), "acme-corp");
/// assert!(matches!(TenantSlug::parse("Acme"), Err(SlugError::Uppercase { .. })));
/// assert!(matches!(TenantSlug::parse("-acme"), Err(SlugError::LeadingHyphen)));
/// # Ok::<(), SlugError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantSlug(String);

/// Why a string is not an acceptable slug. Each variant names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlugError {
    /// The slug is empty.
    #[error("tenant slug is empty")]
    Empty,
    /// Shorter than the policy's minimum.
    #[error("tenant slug has {len} characters; at least {min} are required")]
    TooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// Longer than the maximum (at most 63, the DNS label limit).
    #[error("tenant slug has {len} characters; at most {max} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// An uppercase ASCII letter; slugs are lowercase.
    #[error("tenant slug has an uppercase letter at position {position}; slugs are lowercase")]
    Uppercase {
        /// Zero-based character position.
        position: usize,
    },
    /// A character outside `a-z`, `0-9`, `-`.
    #[error(
        "tenant slug has the character {character:?} at position {position}; only a-z, 0-9 and '-' are allowed"
    )]
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Zero-based character position.
        position: usize,
    },
    /// Starts with a hyphen.
    #[error("tenant slug starts with a hyphen")]
    LeadingHyphen,
    /// Ends with a hyphen.
    #[error("tenant slug ends with a hyphen")]
    TrailingHyphen,
    /// `--` in positions 3–4, the form of internationalised (`xn--`) labels.
    #[error("tenant slug has '--' in positions 3-4, which is reserved for punycode labels")]
    PunycodeForm,
    /// On the policy's reserved list.
    #[error("tenant slug {slug:?} is reserved; choose another name")]
    Reserved {
        /// The reserved slug.
        slug: String,
    },
}

impl SlugError {
    /// The error kind: always [`ErrorKind::InvalidInput`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl TenantSlug {
    /// Checks the DNS-label syntax and wraps the slug. Reserved names are
    /// not checked here; see [`SlugPolicy::check_new`].
    pub fn parse(s: &str) -> Result<Self, SlugError> {
        check_syntax(s, 1, MAX_SLUG_LEN)?;
        Ok(Self(s.to_owned()))
    }

    /// The slug as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the slug, returning the inner string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn check_syntax(s: &str, min: usize, max: usize) -> Result<(), SlugError> {
    if s.is_empty() {
        return Err(SlugError::Empty);
    }
    // Characters are checked before the length so that a long string of
    // garbage is reported for its garbage; length is in bytes, which equals
    // characters once only ASCII is allowed.
    for (position, character) in s.chars().enumerate() {
        match character {
            'a'..='z' | '0'..='9' | '-' => {}
            'A'..='Z' => return Err(SlugError::Uppercase { position }),
            _ => {
                return Err(SlugError::InvalidCharacter {
                    character,
                    position,
                });
            }
        }
    }
    let len = s.len();
    if len > max {
        return Err(SlugError::TooLong { len, max });
    }
    if len < min {
        return Err(SlugError::TooShort { len, min });
    }
    if s.starts_with('-') {
        return Err(SlugError::LeadingHyphen);
    }
    if s.ends_with('-') {
        return Err(SlugError::TrailingHyphen);
    }
    if s.get(2..4) == Some("--") {
        return Err(SlugError::PunycodeForm);
    }
    Ok(())
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantSlug({:?})", self.0)
    }
}

impl FromStr for TenantSlug {
    type Err = SlugError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for TenantSlug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for TenantSlug {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        TenantSlug::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The rules a *new* tenant's slug must follow: syntax, length bounds and
/// reserved names.
///
/// ```
/// use saas_core::{SlugError, SlugPolicy};
///
/// let policy = SlugPolicy::default().with_min_len(3)?.reserve("acme");
/// assert!(policy.check_new("globex").is_ok());
/// assert!(matches!(policy.check_new("www"), Err(SlugError::Reserved { .. })));
/// assert!(matches!(policy.check_new("acme"), Err(SlugError::Reserved { .. })));
/// assert!(matches!(policy.check_new("ab"), Err(SlugError::TooShort { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct SlugPolicy {
    min_len: usize,
    max_len: usize,
    reserved: BTreeSet<String>,
}

impl Default for SlugPolicy {
    /// Length 1–63 and [`DEFAULT_RESERVED_SLUGS`].
    fn default() -> Self {
        Self {
            min_len: 1,
            max_len: MAX_SLUG_LEN,
            reserved: DEFAULT_RESERVED_SLUGS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }
}

impl SlugPolicy {
    /// A policy with no reserved names.
    pub fn without_reserved() -> Self {
        Self {
            reserved: BTreeSet::new(),
            ..Self::default()
        }
    }

    /// Sets the minimum length (1 up to the maximum).
    pub fn with_min_len(mut self, min: usize) -> Result<Self, Error> {
        if min == 0 || min > self.max_len {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "slug minimum length {min} is out of range; use 1..={}",
                    self.max_len
                ),
            ));
        }
        self.min_len = min;
        Ok(self)
    }

    /// Sets the maximum length (the minimum up to 63).
    pub fn with_max_len(mut self, max: usize) -> Result<Self, Error> {
        if max > MAX_SLUG_LEN || max < self.min_len {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "slug maximum length {max} is out of range; use {}..={MAX_SLUG_LEN}",
                    self.min_len
                ),
            ));
        }
        self.max_len = max;
        Ok(self)
    }

    /// Adds a reserved name.
    pub fn reserve(mut self, slug: impl Into<String>) -> Self {
        self.reserved.insert(slug.into());
        self
    }

    /// Removes a reserved name (for example to allow `app`).
    pub fn unreserve(mut self, slug: &str) -> Self {
        self.reserved.remove(slug);
        self
    }

    /// Whether `slug` is reserved.
    pub fn is_reserved(&self, slug: &str) -> bool {
        self.reserved.contains(slug)
    }

    /// Validates a slug for a new tenant.
    pub fn check_new(&self, s: &str) -> Result<TenantSlug, SlugError> {
        check_syntax(s, self.min_len, self.max_len)?;
        if self.is_reserved(s) {
            return Err(SlugError::Reserved { slug: s.to_owned() });
        }
        Ok(TenantSlug(s.to_owned()))
    }
}
