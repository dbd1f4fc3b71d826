//! What the projector tells the query side after each batch it commits, so that open pages
//! update without polling: a PostgreSQL `NOTIFY` on [`CHANNEL`] sent in the batch's own
//! transaction (PostgreSQL delivers it when, and only if, the transaction commits).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use crate::DbError;

/// The notification channel.
pub const CHANNEL: &str = "dashboard_changes";

/// Past this many reservations a notice names none ([`Changed::reservations`] is `None`):
/// a notification's payload must stay under 8,000 bytes.
pub const MAX_NAMED: usize = 100;

/// One committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The log position the read models now stand at.
    pub position: i64,
    /// The reservations whose dashboard rows changed; `None` when too many or not known (a
    /// forgotten customer's rows), and readers then look at every row changed since.
    pub reservations: Option<Vec<Uuid>>,
}

impl Changed {
    /// The notice for a batch: names the reservations unless there are more than [`MAX_NAMED`]
    /// or one of the changes named none.
    pub fn new(position: i64, reservations: Option<Vec<Uuid>>) -> Changed {
        let reservations = reservations.filter(|r| r.len() <= MAX_NAMED);
        Changed {
            position,
            reservations,
        }
    }
}

/// Listens on [`CHANNEL`] over a connection of its own and hands each notice over, in commit
/// order, until the connection fails or `notices` is closed; the error says why it stopped.
/// A payload that is not a [`Changed`] is passed as a notice naming no reservation.
pub async fn listen(
    config: &tokio_postgres::Config,
    ca_file: Option<&Path>,
    notices: mpsc::Sender<Changed>,
) -> Result<(), DbError> {
    match crate::tls::connector(config, ca_file)? {
        Some(tls) => listen_over(config.connect(tls).await?, notices).await,
        None => listen_over(config.connect(NoTls).await?, notices).await,
    }
}

async fn listen_over<S, T>(
    (client, mut connection): (tokio_postgres::Client, tokio_postgres::Connection<S, T>),
    notices: mpsc::Sender<Changed>,
) -> Result<(), DbError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The connection delivers notifications only while polled; the LISTEN's answer arrives
    // through it too, so it is driven alongside.
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = format!("LISTEN {CHANNEL}");
    let subscribe = client.batch_execute(&listen);
    tokio::pin!(subscribe);
    let mut subscribed = false;
    loop {
        tokio::select! {
            done = &mut subscribe, if !subscribed => {
                done?;
                subscribed = true;
            }
            message = futures::StreamExt::next(&mut messages) => match message {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                    let notice = serde_json::from_str(n.payload())
                        .unwrap_or(Changed { position: 0, reservations: None });
                    if notices.send(notice).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}
