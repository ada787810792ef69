//! HTTP webhook delivery: each batch is one POST whose body is signed with HMAC-SHA256
//! (`X-Verdict-Signature: sha256=<hex>` over the exact body bytes), retried with doubling delays,
//! and after `max_attempts` failures appended to the destination's dead-letter file so the feed
//! moves on without losing the batch.
//!
//! Delivery is at least once: a batch whose response was lost is sent again, so every event
//! carries its id (`chain_id:seq`) for the receiver to deduplicate. Framings: the JSON batch
//! `{"events": [{"id", "event"}]}`, or Splunk HEC (one `{"time", "source", "sourcetype",
//! "event"}` object per event, `Authorization: Splunk <secret>`).

use crate::config::{Destination, Framing};
use crate::metrics::DestinationMetrics;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub const SIGNATURE_HEADER: &str = "x-verdict-signature";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One event of a batch.
pub struct Item {
    /// `chain_id:seq`.
    pub id: String,
    pub time_millis: i64,
    pub event: Value,
}

pub struct WebhookSender {
    name: String,
    client: reqwest::Client,
    url: String,
    framing: Framing,
    secret: String,
    max_attempts: u32,
    retry_initial: Duration,
    dead_letter: PathBuf,
    metrics: DestinationMetrics,
}

impl WebhookSender {
    pub fn new(
        destination: &Destination,
        secret: String,
        dead_letter: PathBuf,
        metrics: DestinationMetrics,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            name: destination.name.clone(),
            client,
            url: destination.address.clone(),
            framing: destination.framing,
            secret,
            max_attempts: destination.max_attempts.max(1),
            retry_initial: Duration::from_millis(destination.retry_initial_millis),
            dead_letter,
            metrics,
        }
    }

    /// Delivers `items` as one batch, retrying; dead-letters it after the last attempt (then
    /// `false`). Fails only when the dead-letter file cannot be written (then nothing moves on).
    pub async fn send(&self, items: &[Item]) -> std::io::Result<bool> {
        let body = self.body(items);
        let mut delay = self.retry_initial;
        for attempt in 1..=self.max_attempts {
            if attempt > 1 {
                self.metrics.retries.inc();
            }
            match self.post(&body).await {
                Ok(()) => return Ok(true),
                Err(error) => {
                    self.metrics.failures.inc();
                    tracing::warn!(destination = %self.name, attempt, %error, "webhook delivery failed")
                }
            }
            if attempt < self.max_attempts {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        self.dead_letter(items)?;
        Ok(false)
    }

    async fn post(&self, body: &[u8]) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature(self.secret.as_bytes(), body));
        if self.framing == Framing::SplunkHec {
            request = request.header("authorization", format!("Splunk {}", self.secret));
        }
        let response = request
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", response.status()))
        }
    }

    fn body(&self, items: &[Item]) -> Vec<u8> {
        match self.framing {
            Framing::Json => {
                let events: Vec<Value> = items
                    .iter()
                    .map(|i| json!({ "id": i.id, "event": i.event }))
                    .collect();
                json!({ "events": events }).to_string().into_bytes()
            }
            Framing::SplunkHec => items
                .iter()
                .map(|i| {
                    json!({
                        "time": i.time_millis as f64 / 1000.0,
                        "source": "verdict",
                        "sourcetype": "verdict:event",
                        "fields": { "id": i.id },
                        "event": i.event,
                    })
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
        }
    }

    /// Appends each event of a batch that could not be delivered as one JSON line.
    fn dead_letter(&self, items: &[Item]) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dead_letter)?;
        let mut lines = String::new();
        for item in items {
            lines.push_str(&json!({ "id": item.id, "event": item.event }).to_string());
            lines.push('\n');
        }
        file.write_all(lines.as_bytes())?;
        file.sync_data()?;
        self.metrics.dead_lettered.inc_by(items.len() as u64);
        tracing::error!(destination = %self.name, events = items.len(), file = %self.dead_letter.display(), "batch dead-lettered");
        Ok(())
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_rfc_4231_case_2() {
        assert_eq!(
            super::signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
