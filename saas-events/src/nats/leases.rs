//! Group membership and partition leases in a JetStream key-value bucket
//! (one per prefix). nats-server 2.9 has no per-key TTL, so the bucket's
//! `max_age` is the lease TTL: a record not rewritten within it vanishes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream;
use async_trait::async_trait;
use bytes::Bytes;

use super::nats_error;
use crate::error::EventError;
use crate::partitioned::{Hold, Leases};

/// The value of a lease released after its messages were given back.
const FREE: &[u8] = b"-free-";

/// Attempts at a contended compare-and-set of the member list.
const CAS_ATTEMPTS: usize = 16;

/// Opens (creating on first use) the bucket of `prefix`; returns it with
/// its TTL, which is the bucket's own if it exists already.
pub(super) async fn bucket(
    js: &async_nats::jetstream::Context,
    prefix: &str,
    ttl: Duration,
) -> Result<(kv::Store, Duration), EventError> {
    let name = format!("{prefix}_leases");
    let store = match js.get_key_value(&name).await {
        Ok(store) => store,
        Err(_) => {
            // The stream a key-value bucket is, made directly: the
            // client's `create_key_value` first asks for account details
            // in a form nats-server 2.9 does not answer.
            let config = stream::Config {
                name: format!("KV_{name}"),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                max_age: ttl,
                storage: stream::StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                num_replicas: 1,
                ..Default::default()
            };
            js.get_or_create_stream(config)
                .await
                .map_err(|e| nats_error(true, e))?;
            js.get_key_value(&name)
                .await
                .map_err(|e| nats_error(true, e))?
        }
    };
    let actual = store
        .status()
        .await
        .map(|status| status.max_age())
        .unwrap_or(ttl);
    Ok((store, if actual.is_zero() { ttl } else { actual }))
}

/// Leases of one group (its tenant scope included) on one topic.
pub(super) struct KvLeases {
    pub(super) store: kv::Store,
    /// `<stream>.<durable base>`: the records' key prefix.
    pub(super) base: String,
    pub(super) ttl: Duration,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

enum Cas {
    Done,
    Conflict,
}

impl KvLeases {
    fn lease_key(&self, partition: u16) -> String {
        format!("{}.p{partition}", self.base)
    }

    async fn entry(&self, key: &str) -> Result<Option<kv::Entry>, EventError> {
        self.store.entry(key).await.map_err(|e| nats_error(true, e))
    }

    /// Writes `value` at `key` if it is still at `revision` (`None`:
    /// absent).
    async fn write(
        &self,
        key: &str,
        value: Bytes,
        revision: Option<u64>,
    ) -> Result<Cas, EventError> {
        match revision {
            Some(revision) => match self.store.update(key, value, revision).await {
                Ok(_) => Ok(Cas::Done),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Cas::Conflict),
                Err(e) => Err(nats_error(true, e)),
            },
            None => match self.store.create(key, value).await {
                Ok(_) => Ok(Cas::Done),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Cas::Conflict),
                Err(e) => Err(nats_error(true, e)),
            },
        }
    }

    /// Rewrites the member list with `member` alive (or removed).
    async fn update_members(&self, member: &str, alive: bool) -> Result<Vec<String>, EventError> {
        let key = format!("{}.members", self.base);
        for _ in 0..CAS_ATTEMPTS {
            let entry = self.entry(&key).await?;
            let (mut members, revision): (BTreeMap<String, u64>, Option<u64>) = match &entry {
                Some(e) if e.operation == Operation::Put => (
                    serde_json::from_slice(&e.value).unwrap_or_default(),
                    Some(e.revision),
                ),
                Some(e) => (BTreeMap::new(), Some(e.revision)),
                None => (BTreeMap::new(), None),
            };
            let now = now_ms();
            members.retain(|_, expires| *expires > now);
            if alive {
                let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
                members.insert(member.to_owned(), now.saturating_add(ttl));
            } else {
                members.remove(member);
            }
            let value = serde_json::to_vec(&members).map_err(|e| nats_error(false, e))?;
            if let Cas::Done = self.write(&key, Bytes::from(value), revision).await? {
                return Ok(members.into_keys().collect());
            }
        }
        Err(nats_error(
            true,
            "the group's member list kept changing under this member; retry",
        ))
    }
}

#[async_trait]
impl Leases for KvLeases {
    async fn heartbeat(&self, member: &str) -> Result<Vec<String>, EventError> {
        self.update_members(member, true).await
    }

    async fn leave(&self, member: &str) -> Result<(), EventError> {
        self.update_members(member, false).await.map(|_| ())
    }

    async fn hold(&self, partition: u16, member: &str) -> Result<Hold, EventError> {
        let key = self.lease_key(partition);
        let mine = Bytes::copy_from_slice(member.as_bytes());
        let (found, revision) = match self.entry(&key).await? {
            Some(e) if e.operation == Operation::Put => {
                let found = if e.value == member.as_bytes() {
                    Hold::Renewed
                } else if e.value == FREE {
                    Hold::Claimed { clean: true }
                } else {
                    return Ok(Hold::Taken);
                };
                (found, Some(e.revision))
            }
            Some(e) => (Hold::Claimed { clean: false }, Some(e.revision)),
            None => (Hold::Claimed { clean: false }, None),
        };
        match self.write(&key, mine, revision).await? {
            Cas::Done => Ok(found),
            Cas::Conflict => Ok(Hold::Taken),
        }
    }

    async fn release(&self, partition: u16, member: &str, clean: bool) -> Result<(), EventError> {
        let key = self.lease_key(partition);
        let Some(entry) = self.entry(&key).await? else {
            return Ok(());
        };
        if entry.operation != Operation::Put || entry.value != member.as_bytes() {
            return Ok(());
        }
        if clean {
            self.write(&key, Bytes::from_static(FREE), Some(entry.revision))
                .await
                .map(|_| ())
        } else {
            self.store
                .delete_expect_revision(&key, Some(entry.revision))
                .await
                .map_err(|e| nats_error(true, e))
        }
    }
}
