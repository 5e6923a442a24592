//! What the PostgreSQL and SQLite outboxes share: their settings (table,
//! payload limit, clock), the checks every event passes before a row is
//! written, and what an outbox publisher promises. Each backend keeps its
//! SQL and how its transaction starts.

use std::fmt;
use std::sync::Arc;

use saas_core::{SharedClock, SystemClock};
use uuid::Uuid;

use crate::envelope::{DEFAULT_MAX_PAYLOAD_BYTES, Event};
use crate::error::EventError;
use crate::names::validate_name;
use crate::sql_ident::check_ident;
use crate::traits::Capabilities;

/// An outbox's settings, behind each backend's validated setters.
///
/// `pub` only because the sealed dialect trait's outbox insert takes it;
/// this module is private, so nothing outside the crate can name it.
#[derive(Clone)]
pub struct OutboxSettings {
    pub(crate) table: String,
    pub(crate) max_payload_bytes: usize,
    pub(crate) clock: SharedClock,
    /// PostgreSQL only: the insert also notifies waiting relays (see
    /// `crate::postgres::WAKE_CHANNEL`).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) notify: bool,
}

impl fmt::Debug for OutboxSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.debug(f, "OutboxSettings")
    }
}

/// One event ready to be written: its tenant and its JSON text.
pub(crate) struct OutboxRow {
    pub(crate) tenant: Option<Uuid>,
    pub(crate) body: String,
}

impl OutboxSettings {
    /// `table` (the backend's default), a 1 MiB payload limit, the system
    /// clock.
    pub(crate) fn new(table: &str) -> Self {
        Self {
            table: table.to_owned(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            clock: Arc::new(SystemClock),
            notify: true,
        }
    }

    /// Uses another table name.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] unless it is a lowercase SQL identifier.
    pub(crate) fn set_table(&mut self, table: &str) -> Result<(), EventError> {
        check_ident(table, "a table must be a lowercase SQL identifier")?;
        self.table = table.to_owned();
        Ok(())
    }

    /// The backend's `Debug`: the table and the payload limit under the
    /// outbox's type name.
    pub(crate) fn debug(&self, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
        f.debug_struct(name)
            .field("table", &self.table)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish_non_exhaustive()
    }

    /// The rows for `events` under `topic`, in order, after every check:
    /// a valid topic, each payload within the limit, each event stamped
    /// with the clock's time if it has none. Nothing is written by the
    /// caller unless every event passes.
    ///
    /// # Errors
    /// [`EventError::InvalidName`] for a bad topic,
    /// [`EventError::PayloadTooLarge`] over the limit, or an event that
    /// does not encode.
    pub(crate) fn rows(
        &self,
        topic: &str,
        events: Vec<Event>,
    ) -> Result<Vec<OutboxRow>, EventError> {
        validate_name(topic)?;
        let mut rows = Vec::with_capacity(events.len());
        for mut event in events {
            event.check_payload_size(self.max_payload_bytes)?;
            event.stamp_time(&*self.clock);
            let tenant = event.tenant_id().map(|t| *t.as_uuid());
            let json = event.to_json()?;
            let body = String::from_utf8(json).map_err(|e| EventError::malformed(e.to_string()))?;
            rows.push(OutboxRow { tenant, body });
        }
        Ok(rows)
    }

    /// What a publisher writing through this outbox offers: per-key order,
    /// persistence, this payload limit.
    pub(crate) fn capabilities(&self) -> Capabilities {
        Capabilities {
            ordering_per_key: true,
            persistence: true,
            max_payload_bytes: self.max_payload_bytes,
            ..Capabilities::default()
        }
    }
}
