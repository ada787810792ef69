//! One destination's delivery loop: follow the query service's feed from the destination's own
//! saved cursor, turn each event into the destination's payload, send it, then save the cursor.
//! Any failure (the receiver or the query service down) reconnects both after a backoff that
//! doubles up to 30 s, resuming from the saved cursor, so a destination that was down gets
//! what it missed.

use crate::cef::to_cef;
use crate::config::{Destination, Payload};
use crate::syslog::SyslogSender;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;
use verdict_proto::pb::{self, audit_query_client::AuditQueryClient};
use verdict_query::export::ExportRecord;
use verdict_query::follow_file;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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
    let mut receiver = SyslogSender::connect(&destination.address).await?;
    let mut client = AuditQueryClient::connect(feed.query_url.clone()).await?;
    let format = match destination.payload {
        Payload::Cef => pb::ExportFormat::Jsonl,
        Payload::Ocsf => pb::ExportFormat::Ocsf,
    };
    let mut request = tonic::Request::new(pb::FollowRequest {
        format: format as i32,
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
    let mut stream = client.follow(request).await?.into_inner();
    tracing::info!(destination = %destination.name, "following");
    loop {
        let message = tokio::select! {
            message = stream.message() => message?,
            _ = stop.changed() => return Ok(()),
        };
        let Some(message) = message else {
            return Err(tonic::Status::unavailable("the feed ended").into());
        };
        if !message.data.is_empty() {
            let (msgid, warning, payload) = payload(destination.payload, &message.data)?;
            receiver.send(&msgid, warning, &payload).await?;
        }
        follow_file::save(&cursor_file, &message.cursor)?;
    }
}

/// `(msgid, warning, payload)` of one feed line.
fn payload(kind: Payload, line: &[u8]) -> Result<(String, bool, String), DeliveryError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    match kind {
        Payload::Cef => {
            let record: ExportRecord = serde_json::from_str(text)?;
            let msgid = [&record.decision, &record.kind]
                .into_iter()
                .find(|s| !s.is_empty())
                .cloned()
                .unwrap_or_default();
            let warning = !matches!(
                record.decision.as_str(),
                "" | "allow" | "approved" | "approval_requested"
            );
            Ok((msgid, warning, to_cef(&record)))
        }
        Payload::Ocsf => {
            let event: serde_json::Value = serde_json::from_str(text)?;
            let msgid = event["status_code"].as_str().unwrap_or_default().to_owned();
            let warning = event["status_id"] == 2;
            Ok((msgid, warning, text.to_owned()))
        }
    }
}
