//! The ordering key of an event, hashed stably: which partition an event
//! goes to on a broker, and which events wait for each other in memory.

use crate::envelope::Event;

/// FNV-1a, 64 bits: stable across processes, platforms and Rust versions,
/// which a broker's partition assignment must be (publishers and consumers
/// of one topic may run different builds).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The hash of [`Event::partition_key`] (the key set, else the tenant id),
/// computed without allocating; `None` for an event with neither.
///
/// A tenant is hashed by its 16 bytes, not its 36-character text (this is
/// on every in-memory publish); so that a key set to a tenant's text stays
/// the same key as that tenant, such a key is hashed the same way.
pub(crate) fn key_hash(event: &Event) -> Option<u64> {
    match (&event.partition_key, event.tenant_id()) {
        (Some(key), _) => Some(match tenant_text(key) {
            Some(bytes) => fnv1a(&bytes),
            None => fnv1a(key.as_bytes()),
        }),
        (None, Some(tenant)) => Some(fnv1a(tenant.as_uuid().as_bytes())),
        (None, None) => None,
    }
}

/// The UUID bytes of `key` if it is written exactly as a tenant id is
/// (lowercase, hyphenated).
fn tenant_text(key: &str) -> Option<[u8; 16]> {
    if key.len() != 36 {
        return None;
    }
    let uuid = uuid::Uuid::try_parse(key).ok()?;
    let mut buffer = uuid::Uuid::encode_buffer();
    let canonical = uuid.hyphenated().encode_lower(&mut buffer);
    (canonical == key).then(|| *uuid.as_bytes())
}

/// The partition of `event` among `partitions` (at least 1), by its key's
/// hash. Events with neither key nor tenant all go to partition 0: they
/// keep the order they were published in, as one key would.
#[cfg_attr(not(any(feature = "nats", feature = "redis")), allow(dead_code))]
pub(crate) fn partition_of(event: &Event, partitions: u16) -> u16 {
    let Some(hash) = key_hash(event) else {
        return 0;
    };
    let count = u64::from(partitions.max(1));
    // The remainder is below `partitions`, so it fits.
    u16::try_from(hash % count).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use saas_core::TenantId;

    #[test]
    fn the_tenant_is_the_default_key_and_hashes_are_stable() {
        let tenant = TenantId::new();
        let by_tenant = Event::without_data(tenant, "t", "/s").unwrap();
        let explicit = Event::without_data(None, "t", "/s")
            .unwrap()
            .with_partition_key(tenant.to_string());
        assert_eq!(key_hash(&by_tenant), key_hash(&explicit));
        assert_eq!(
            key_hash(&by_tenant),
            Some(fnv1a(tenant.as_uuid().as_bytes()))
        );
        // Another spelling of the same UUID is another key.
        let upper = Event::without_data(None, "t", "/s")
            .unwrap()
            .with_partition_key(tenant.to_string().to_uppercase());
        assert_eq!(
            key_hash(&upper),
            Some(fnv1a(tenant.to_string().to_uppercase().as_bytes()))
        );
        // FNV-1a's published test vector: the hash must never change.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let keyless = Event::without_data(None, "t", "/s").unwrap();
        assert_eq!(key_hash(&keyless), None);
        assert_eq!(partition_of(&keyless, 8), 0);
        assert_eq!(partition_of(&by_tenant, 1), 0);
    }
}
