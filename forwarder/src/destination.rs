//! One destination's delivery loop: follow the query service's feed from the destination's own
//! saved cursor, turn each batch of events into the destination's payload, send it (a webhook
//! retries and dead-letters inside [`WebhookSender`]), then save the cursor.
//! Any failure (the receiver or the query service down) reconnects both after a backoff that
//! doubles up to 30 s, resuming from the saved cursor, so a destination that was down gets
//! what it missed.

use crate::config::{Destination, Items, Kind};
use crate::metrics::DestinationMetrics;
use crate::payload::{Event, Line, Shaper};
use crate::syslog::SyslogSender;
use crate::tls::{TlsClient, TlsError};
use crate::webhook::{Item, WebhookSender};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use verdict_proto::pb::{self, audit_query_client::AuditQueryClient};
use verdict_query::follow_file;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a batch waits for more events once it has one.
const BATCH_WAIT: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("query service: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("query service: {0}")]
    Follow(#[from] tonic::Status),
    #[error("receiver or cursor file: {0}")]
    Io(#[from] std::io::Error),
    #[error("a feed line is not an export record: {0}")]
    Record(#[from] serde_json::Error),
    #[error("the query token is not valid header text")]
    Token,
    #[error("the webhook secret variable {0} is not set")]
    Secret(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("`tls` is a syslog setting; a webhook gets TLS from an https:// address")]
    WebhookTls,
}

/// What a destination's loop needs besides its own settings.
#[derive(Clone)]
pub struct Feed {
    pub query_url: String,
    /// `Bearer <token>`.
    pub authorization: String,
    pub state_dir: PathBuf,
}

/// Delivers to `destination` until `stop` turns true.
pub async fn run(
    destination: Destination,
    feed: Feed,
    metrics: DestinationMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    while !*stop.borrow() {
        match deliver(&destination, &feed, &metrics, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                metrics.failures.inc();
                tracing::warn!(destination = %destination.name, error = %e, "delivery interrupted; resuming from the saved cursor");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One connection's worth of delivery; `Ok` when stopped.
async fn deliver(
    destination: &Destination,
    feed: &Feed,
    metrics: &DestinationMetrics,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), DeliveryError> {
    let cursor_file = feed.state_dir.join(format!("{}.cursor", destination.name));
    let cursor = follow_file::load(&cursor_file)?;
    let shaper = Shaper::new(destination);
    let mut sink = Sink::connect(destination, feed, metrics).await?;
    let mut stream = follow(destination, feed, cursor).await?;
    tracing::info!(destination = %destination.name, "following");
    loop {
        let Some(batch) = next_batch(&mut stream, stop, destination.batch_size).await? else {
            return Ok(());
        };
        let events = batch
            .lines
            .iter()
            .map(|line| shaper.event(line))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = events.last() {
            let (count, time_millis) = (events.len() as u64, last.time_millis);
            if sink.send(events).await? {
                metrics.delivered.inc_by(count);
            }
            metrics.lag(batch.behind, time_millis);
        }
        let cursor = batch.cursor;
        follow_file::save(&cursor_file, &cursor)?;
    }
}

/// Opens the feed after `cursor`, as JSON lines: every payload is made here from the records,
/// after masking ([`Shaper`]).
async fn follow(
    destination: &Destination,
    feed: &Feed,
    cursor: String,
) -> Result<tonic::Streaming<pb::FollowMessage>, DeliveryError> {
    let mut client = AuditQueryClient::connect(feed.query_url.clone()).await?;
    let items = match destination.items {
        Items::Events => pb::FollowItems::Events,
        Items::Findings => pb::FollowItems::Findings,
        Items::All => pb::FollowItems::All,
    };
    let mut request = tonic::Request::new(pb::FollowRequest {
        format: pb::ExportFormat::Jsonl as i32,
        items: items as i32,
        cursor,
        ..Default::default()
    });
    let authorization = feed
        .authorization
        .parse()
        .map_err(|_| DeliveryError::Token)?;
    request
        .metadata_mut()
        .insert("authorization", authorization);
    Ok(client.follow(request).await?.into_inner())
}

/// The next messages: waits for one, then takes what else arrives within [`BATCH_WAIT`], up
/// to `max` events; `None` when stopped.
async fn next_batch(
    stream: &mut tonic::Streaming<pb::FollowMessage>,
    stop: &mut watch::Receiver<bool>,
    max: usize,
) -> Result<Option<Batch>, DeliveryError> {
    let first = tokio::select! {
        message = stream.message() => message?,
        _ = stop.changed() => return Ok(None),
    };
    let mut message = first.ok_or_else(|| tonic::Status::unavailable("the feed ended"))?;
    let mut lines = Vec::new();
    let mut behind = 0;
    loop {
        if !message.data.is_empty() {
            behind = message.behind;
            lines.push(Line {
                data: std::mem::take(&mut message.data),
                finding: message.finding,
            });
        }
        if lines.len() >= max.max(1) {
            break;
        }
        match tokio::time::timeout(BATCH_WAIT, stream.message()).await {
            Ok(Ok(Some(next))) => message = next,
            Ok(Err(e)) if lines.is_empty() => return Err(e.into()),
            _ => break,
        }
    }
    Ok(Some(Batch {
        lines,
        cursor: message.cursor,
        behind,
    }))
}

/// Feed messages taken together: their lines, the cursor after the last, and how many stored
/// events were still after the last line.
struct Batch {
    lines: Vec<Line>,
    cursor: String,
    behind: u64,
}

/// Where a destination's events go.
enum Sink {
    Syslog(SyslogSender),
    Webhook(WebhookSender),
}

impl Sink {
    async fn connect(
        destination: &Destination,
        feed: &Feed,
        metrics: &DestinationMetrics,
    ) -> Result<Self, DeliveryError> {
        Ok(match destination.kind {
            Kind::Syslog => {
                let tls = destination.tls.as_ref().map(TlsClient::new).transpose()?;
                Self::Syslog(SyslogSender::connect(&destination.address, tls.as_ref()).await?)
            }
            Kind::Webhook if destination.tls.is_some() => return Err(DeliveryError::WebhookTls),
            Kind::Webhook => {
                let secret = std::env::var(&destination.secret_env)
                    .map_err(|_| DeliveryError::Secret(destination.secret_env.clone()))?;
                let dead_letter = feed
                    .state_dir
                    .join(format!("{}.dead-letter.jsonl", destination.name));
                Self::Webhook(WebhookSender::new(
                    destination,
                    secret,
                    dead_letter,
                    metrics.clone(),
                ))
            }
        })
    }

    /// Sends `events`; true when the receiver took them (false: dead-lettered).
    async fn send(&mut self, events: Vec<Event>) -> Result<bool, DeliveryError> {
        match self {
            Self::Syslog(sender) => {
                for event in &events {
                    sender
                        .send(&event.msgid, event.warning, &event.payload_text())
                        .await?;
                }
            }
            Self::Webhook(sender) => {
                let items: Vec<Item> = events.into_iter().map(Event::into_item).collect();
                return Ok(sender.send(&items).await?);
            }
        }
        Ok(true)
    }
}
