//! One destination's delivery loop: follow the query service's feed from the destination's own
//! saved cursor, turn each batch of events into the destination's payload, send it (a webhook
//! retries and dead-letters inside [`WebhookSender`]), then save the cursor.
//! Any failure (the receiver or the query service down) reconnects both after a backoff that
//! doubles up to 30 s, resuming from the saved cursor, so a destination that was down gets
//! what it missed.

use crate::cef::{finding_to_cef, to_cef};
use crate::config::{Destination, Items, Kind, Payload};
use crate::syslog::SyslogSender;
use crate::webhook::{Item, WebhookSender};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use verdict_proto::pb::{self, audit_query_client::AuditQueryClient};
use verdict_query::export::ExportRecord;
use verdict_query::follow_file;
use verdict_query::FindingRecord;

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
pub async fn run(destination: Destination, feed: Feed, mut stop: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    while !*stop.borrow() {
        match deliver(&destination, &feed, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
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
    stop: &mut watch::Receiver<bool>,
) -> Result<(), DeliveryError> {
    let cursor_file = feed.state_dir.join(format!("{}.cursor", destination.name));
    let cursor = follow_file::load(&cursor_file)?;
    let mut sink = Sink::connect(destination, feed).await?;
    let mut stream = follow(destination, feed, cursor).await?;
    tracing::info!(destination = %destination.name, "following");
    loop {
        let Some((events, cursor)) = next_batch(&mut stream, stop, destination.batch_size).await?
        else {
            return Ok(());
        };
        let events = events
            .iter()
            .map(|line| event(destination.payload, line))
            .collect::<Result<Vec<_>, _>>()?;
        if !events.is_empty() {
            sink.send(events).await?;
        }
        follow_file::save(&cursor_file, &cursor)?;
    }
}

/// Opens the feed after `cursor` in the format the destination's payload is made from.
async fn follow(
    destination: &Destination,
    feed: &Feed,
    cursor: String,
) -> Result<tonic::Streaming<pb::FollowMessage>, DeliveryError> {
    let mut client = AuditQueryClient::connect(feed.query_url.clone()).await?;
    let format = match destination.payload {
        Payload::Cef | Payload::Json => pb::ExportFormat::Jsonl,
        Payload::Ocsf => pb::ExportFormat::Ocsf,
    };
    let items = match destination.items {
        Items::Events => pb::FollowItems::Events,
        Items::Findings => pb::FollowItems::Findings,
        Items::All => pb::FollowItems::All,
    };
    let mut request = tonic::Request::new(pb::FollowRequest {
        format: format as i32,
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
/// to `max` events. Returns them and the cursor after the last; `None` when stopped.
async fn next_batch(
    stream: &mut tonic::Streaming<pb::FollowMessage>,
    stop: &mut watch::Receiver<bool>,
    max: usize,
) -> Result<Option<(Vec<Line>, String)>, DeliveryError> {
    let first = tokio::select! {
        message = stream.message() => message?,
        _ = stop.changed() => return Ok(None),
    };
    let mut message = first.ok_or_else(|| tonic::Status::unavailable("the feed ended"))?;
    let mut lines = Vec::new();
    loop {
        if !message.data.is_empty() {
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
    Ok(Some((lines, message.cursor)))
}

/// One feed message's line, and whether it is a finding.
struct Line {
    data: Vec<u8>,
    finding: bool,
}

/// Where a destination's events go.
enum Sink {
    Syslog(SyslogSender),
    Webhook(WebhookSender),
}

impl Sink {
    async fn connect(destination: &Destination, feed: &Feed) -> Result<Self, DeliveryError> {
        Ok(match destination.kind {
            Kind::Syslog => Self::Syslog(SyslogSender::connect(&destination.address).await?),
            Kind::Webhook => {
                let secret = std::env::var(&destination.secret_env)
                    .map_err(|_| DeliveryError::Secret(destination.secret_env.clone()))?;
                let dead_letter = feed
                    .state_dir
                    .join(format!("{}.dead-letter.jsonl", destination.name));
                Self::Webhook(WebhookSender::new(destination, secret, dead_letter))
            }
        })
    }

    async fn send(&mut self, events: Vec<Event>) -> Result<(), DeliveryError> {
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
                sender.send(&items).await?;
            }
        }
        Ok(())
    }
}

/// One feed event, ready for any sink.
struct Event {
    /// `chain_id:seq`.
    id: String,
    msgid: String,
    warning: bool,
    time_millis: i64,
    /// A CEF line, or the JSON object (record or OCSF).
    payload: EventPayload,
}

enum EventPayload {
    Cef(String),
    Json(serde_json::Value),
}

impl Event {
    fn payload_text(&self) -> String {
        match &self.payload {
            EventPayload::Cef(line) => line.clone(),
            EventPayload::Json(value) => value.to_string(),
        }
    }

    fn into_item(self) -> Item {
        let event = match self.payload {
            EventPayload::Cef(line) => serde_json::Value::String(line),
            EventPayload::Json(value) => value,
        };
        Item {
            id: self.id,
            time_millis: self.time_millis,
            event,
        }
    }
}

/// One feed line as an [`Event`] of the destination's payload.
fn event(kind: Payload, line: &Line) -> Result<Event, DeliveryError> {
    if kind == Payload::Ocsf {
        let event: serde_json::Value = serde_json::from_slice(&line.data)?;
        return Ok(Event {
            id: event["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            msgid: event["status_code"].as_str().unwrap_or_default().to_owned(),
            warning: line.finding || event["status_id"] == 2,
            time_millis: event["time"].as_i64().unwrap_or_default(),
            payload: EventPayload::Json(event),
        });
    }
    if line.finding {
        return finding_event(kind, &line.data);
    }
    let record: ExportRecord = serde_json::from_slice(&line.data)?;
    let msgid = [&record.decision, &record.kind]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_default();
    let warning = !matches!(
        record.decision.as_str(),
        "" | "allow" | "approved" | "approval_requested"
    );
    let payload = match kind {
        Payload::Cef => EventPayload::Cef(to_cef(&record)),
        _ => EventPayload::Json(serde_json::to_value(&record)?),
    };
    Ok(Event {
        id: format!("{}:{}", record.chain_id, record.seq),
        msgid,
        warning,
        time_millis: record.time_unix_nanos / 1_000_000,
        payload,
    })
}

/// A finding's JSON line as an [`Event`] (CEF or the finding record); always a warning.
fn finding_event(kind: Payload, data: &[u8]) -> Result<Event, DeliveryError> {
    let record: FindingRecord = serde_json::from_slice(data)?;
    let payload = match kind {
        Payload::Cef => EventPayload::Cef(finding_to_cef(&record)),
        _ => EventPayload::Json(serde_json::to_value(&record)?),
    };
    Ok(Event {
        id: record.uid(),
        msgid: format!("finding:{}", record.finding),
        warning: true,
        time_millis: record.detected_unix_nanos / 1_000_000,
        payload,
    })
}
