//! Connections: opening them, noticing they are lost, declaring the
//! exchange of a topic once per connection.

use std::collections::HashSet;
use std::sync::Arc;

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;

use super::amqp_error;
use crate::error::EventError;

/// Opens a connection and a channel on it.
pub(super) async fn open(url: &str) -> Result<(Connection, Channel), EventError> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(amqp_error)?;
    match connection.create_channel().await {
        Ok(channel) => Ok((connection, channel)),
        Err(error) => {
            let _ = connection.close(200, "channel refused".into()).await;
            Err(amqp_error(error))
        }
    }
}

/// Whether `connection` and `channel` can still be used.
pub(super) fn usable(connection: &Connection, channel: &Channel) -> bool {
    connection.status().connected() && channel.status().connected()
}

/// Whether `queue` exists, asked on a connection of its own (a passive
/// declare of a missing queue closes its channel).
pub(super) async fn queue_exists(url: &str, queue: &str) -> Result<bool, EventError> {
    let (_connection, channel) = open(url).await?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(error)
            if matches!(
                error.kind(),
                lapin::ErrorKind::ProtocolError(amqp)
                    if amqp.kind() == &AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
            ) =>
        {
            Ok(false)
        }
        Err(error) => Err(amqp_error(error)),
    }
}

/// Declares the durable topic exchange `exchange`.
pub(super) async fn declare_exchange(channel: &Channel, exchange: &str) -> Result<(), EventError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)
}

/// The publishing connection: a channel in confirm mode, and the
/// exchanges declared on it.
pub(crate) struct Live {
    connection: Connection,
    pub(super) channel: Channel,
    /// Declared once per connection: a publish then costs no extra round
    /// trip, and after a reconnection everything is declared again.
    declared: std::sync::Mutex<HashSet<String>>,
}

impl Live {
    pub(super) async fn declare_exchange(&self, exchange: &str) -> Result<(), EventError> {
        let known = self
            .declared
            .lock()
            .map(|declared| declared.contains(exchange))
            .unwrap_or(false);
        if !known {
            declare_exchange(&self.channel, exchange).await?;
            if let Ok(mut declared) = self.declared.lock() {
                declared.insert(exchange.to_owned());
            }
        }
        Ok(())
    }
}

/// The bus's publishing connection, opened on first use and again after
/// it is lost.
#[derive(Default)]
pub(crate) struct PublishLink {
    live: Mutex<Option<Arc<Live>>>,
}

impl PublishLink {
    /// The live connection, opening one if there is none (or it was lost).
    pub(super) async fn channel(&self, url: &str) -> Result<Arc<Live>, EventError> {
        let mut slot = self.live.lock().await;
        if let Some(live) = slot.as_ref()
            && usable(&live.connection, &live.channel)
        {
            return Ok(Arc::clone(live));
        }
        // lapin closes a connection once its last handle (the connection
        // and its channels) is dropped.
        *slot = None;
        let (connection, channel) = open(url).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp_error)?;
        let live = Arc::new(Live {
            connection,
            channel,
            declared: std::sync::Mutex::new(HashSet::new()),
        });
        *slot = Some(Arc::clone(&live));
        Ok(live)
    }

    /// Drops `live` if it can no longer be used (a failed operation closes
    /// the channel, a lost broker the connection), so the next use opens a
    /// new one.
    pub(super) async fn forget_if_broken(&self, live: &Arc<Live>) {
        if usable(&live.connection, &live.channel) {
            return;
        }
        let mut slot = self.live.lock().await;
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, live))
        {
            *slot = None;
        }
    }
}
