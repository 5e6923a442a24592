//! Tenant identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, ErrorKind};

/// The stable identity of a tenant: a UUID, version 7 when minted here.
///
/// Version 7 UUIDs start with a millisecond timestamp, so freshly created
/// tenants land next to each other in B-tree indexes instead of scattering
/// writes over the whole index as random v4 ids do.
///
/// `TenantId` is the only tenant identifier that storage layers use to
/// derive database names (schemas, databases, files). Slugs are for people.
///
/// ```
/// use saas_core::TenantId;
///
/// let id = TenantId::new();
/// let parsed: TenantId = id.to_string().parse()?;
/// assert_eq!(id, parsed);
/// assert!("not-a-uuid".parse::<TenantId>().is_err());
/// # Ok::<(), saas_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(Uuid);

impl TenantId {
    /// Mints a new time-ordered (v7) tenant id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID (for example one read from a database).
    ///
    /// Any UUID version is accepted so that ids minted elsewhere can be
    /// imported; the nil UUID is rejected because it is a common
    /// "unset" placeholder and must never name a real tenant.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, Error> {
        if uuid.is_nil() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the nil UUID is not a valid tenant id; mint ids with TenantId::new()",
            ));
        }
        Ok(Self(uuid))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The id as 32 lowercase hex digits without hyphens.
    ///
    /// This is the form storage backends use when they derive a database
    /// identifier (schema name, database name, file name) from a tenant:
    /// it contains only `[0-9a-f]`, so it can never carry SQL.
    pub fn simple(&self) -> String {
        self.0.simple().to_string()
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0.hyphenated())
    }
}

impl FromStr for TenantId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uuid = Uuid::try_parse(s).map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                "tenant id is not a UUID (expected 8-4-4-4-12 hex digits)",
            )
        })?;
        Self::from_uuid(uuid)
    }
}

impl From<TenantId> for Uuid {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

#[cfg(feature = "sqlx")]
mod sqlx_impls {
    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::{Database, Decode, Encode, Type};
    use uuid::Uuid;

    use super::TenantId;

    impl<DB: Database> Type<DB> for TenantId
    where
        Uuid: Type<DB>,
    {
        fn type_info() -> DB::TypeInfo {
            <Uuid as Type<DB>>::type_info()
        }

        fn compatible(ty: &DB::TypeInfo) -> bool {
            <Uuid as Type<DB>>::compatible(ty)
        }
    }

    impl<'q, DB: Database> Encode<'q, DB> for TenantId
    where
        Uuid: Encode<'q, DB>,
    {
        fn encode_by_ref(
            &self,
            buf: &mut <DB as Database>::ArgumentBuffer,
        ) -> Result<IsNull, BoxDynError> {
            self.0.encode_by_ref(buf)
        }
    }

    impl<'r, DB: Database> Decode<'r, DB> for TenantId
    where
        Uuid: Decode<'r, DB>,
    {
        fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
            let uuid = <Uuid as Decode<'r, DB>>::decode(value)?;
            Ok(TenantId::from_uuid(uuid)?)
        }
    }
}

/// A reference to a tenant as found in a request or a token: its id or
/// its slug. Resolved to a tenant through a
/// [`TenantLookup`](crate::TenantLookup).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TenantKey {
    /// By id.
    Id(TenantId),
    /// By slug.
    Slug(crate::TenantSlug),
}

impl TenantKey {
    /// Reads a UUID as an id and anything else as a slug.
    ///
    /// ```
    /// use saas_core::TenantKey;
    ///
    /// assert!(matches!(TenantKey::parse("acme")?, TenantKey::Slug(_)));
    /// assert!(matches!(
    ///     TenantKey::parse("0192f0c1-7f3a-7cc0-8a41-3f1b2c3d4e5f")?,
    ///     TenantKey::Id(_)
    /// ));
    /// assert!(TenantKey::parse("x\"; drop schema public; --").is_err());
    /// # Ok::<(), saas_core::Error>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self, Error> {
        if let Ok(uuid) = Uuid::try_parse(s) {
            return Ok(TenantKey::Id(TenantId::from_uuid(uuid)?));
        }
        crate::TenantSlug::parse(s)
            .map(TenantKey::Slug)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, e.to_string()))
    }
}

impl fmt::Display for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantKey::Id(id) => write!(f, "id {id}"),
            TenantKey::Slug(slug) => write!(f, "slug {slug}"),
        }
    }
}
