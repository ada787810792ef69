//! The audit trail, in the order an event travels:
//! - [`event`]: a decision or outcome becomes an event body (redaction, argument hash, targets);
//! - [`recorder`]: the body is signed into the gateway's chain and written to the journal, and
//!   only then does the call go on — if it cannot be written, the call is refused, and
//!   [`Audit::record_or_refuse`] keeps that refusal for when the journal works again;
//! - [`shipper`]: the journal is tailed and produced to Kafka, resuming where the broker last
//!   acknowledged.
//!
//! [`canonical`] (from `verdict_policy`, which fingerprints tools with it) is the one JSON encoding
//! that argument hashes are computed over; [`refusals`]
//! counts the refusals of unauthenticated requests into one event per interval; [`space`] watches
//! the journal's disk; `rotation` hands the chain to a new signing key; `tree` keeps the Merkle tree the checkpoints commit to; [`witness_watch`]
//! reads the auditor's witnessed heads back and alarms when one is not this gateway's history.

pub use verdict_policy::canonical;
pub mod event;
pub mod recorder;
pub mod refusals;
mod rotation;
pub mod shipper;
pub mod space;
mod tree;
pub mod witness_watch;

use crate::config::{AuditConfig, FsyncMode};
pub use event::{DecisionFacts, EventBuilder};
use recorder::FsyncPolicy;
pub use recorder::{RecordError, Recorder};
pub use refusals::{Admission, RefusalLedger, RefusalReason};
use shipper::{Shipper, ShipperError, ShipperStatus};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use verdict_proto::keys::{write_keypair, PRIVATE_KEY_FILE};
use verdict_proto::pb::{self, DecisionKind};
use verdict_proto::{KeyError, Label, SecretKey};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    #[error("signing key {0} does not exist; create it with `verdict keygen --out DIR` (or name the file {PRIVATE_KEY_FILE} to have one generated)")]
    MissingKey(String),
    #[error(transparent)]
    Recorder(#[from] recorder::OpenError),
}

/// What the gateway records with: the event builder and the recorder.
pub struct Audit {
    pub events: EventBuilder,
    pub recorder: Arc<Recorder>,
    pub refusals: Arc<RefusalLedger>,
}

impl Audit {
    /// Loads (or creates) the signing key, and opens (and locks) the journal and the chain;
    /// `writer_mode` (`http`, `stdio`) names this process in the journal's lock file.
    pub fn open(config: &AuditConfig, writer_mode: &'static str) -> Result<Self, AuditError> {
        let key = load_or_create_key(&config.key)?;
        let previous_key = match &config.previous_key {
            Some(path) => Some(SecretKey::read_pem_file(path)?),
            None => None,
        };
        let chain_id = config
            .chain_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", host_name(), key.public().key_id()));
        let fsync = match config.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Batch => FsyncPolicy::Batch {
                window: Duration::from_millis(config.fsync_window_ms),
            },
        };
        let refusals = Arc::new(RefusalLedger::new(config.refusals_per_source));
        let space = space::SpaceWatch::new(
            config.journal_dir.clone(),
            config.min_free_bytes,
            config.alarm_free_bytes,
        );
        let recorder = Recorder::open(recorder::RecorderSettings {
            chain_id,
            key,
            previous_key,
            journal_dir: config.journal_dir.clone(),
            segment_bytes: config.segment_bytes,
            fsync,
            checkpoint_secs: config.checkpoint_secs,
            writer_mode,
            refusals: Arc::clone(&refusals),
            refusal_every: Duration::from_secs(config.refusal_interval_secs.max(1)),
            space: Arc::new(space),
        })?;
        Ok(Self {
            events: EventBuilder::new(config),
            recorder: Arc::new(recorder),
            refusals,
        })
    }
}

impl Audit {
    /// Journals `body` and returns its seq. When the journal refuses it, the call it decides is
    /// refused too, and what the trail keeps is that refusal: an `error` decision naming what the
    /// policy had decided, recorded as soon as the journal accepts writes again. The error
    /// message is what the agent is told.
    pub async fn record_or_refuse(&self, body: &pb::EventBody) -> Result<u64, String> {
        let error = match self.recorder.record(body).await {
            Ok(seq) => return Ok(seq),
            Err(error) => error,
        };
        let message = error.to_string();
        if !matches!(error, RecordError::Stopped) {
            self.recorder.defer(&refused(body.clone(), &message));
        }
        Err(message)
    }
}

/// The journal shipped to Kafka when `[audit.kafka]` is configured; without it the journal alone
/// is the audit trail. Shared by the gateway and the forwarder, whose chains travel the same way.
pub struct Shipping {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: CancellationToken,
    /// What the broker acknowledged, for `/metrics` (`None` without Kafka).
    pub status: Option<Arc<ShipperStatus>>,
}

impl Shipping {
    /// Starts shipping `recorder`'s journal per `config`.
    pub fn start(config: &AuditConfig, recorder: &Recorder) -> Result<Self, ShipperError> {
        let stop = CancellationToken::new();
        let Some(kafka) = &config.kafka else {
            tracing::info!(journal = %config.journal_dir.display(), "no [audit.kafka]: the journal alone is the audit trail");
            return Ok(Self {
                task: None,
                stop,
                status: None,
            });
        };
        let retention = config.retention_secs.map(Duration::from_secs);
        let shipper = Shipper::new(
            kafka,
            recorder.chain_id(),
            config.journal_dir.clone(),
            retention,
        )?;
        let status = Arc::clone(&shipper.status);
        let task = tokio::spawn(shipper.run(recorder.written(), stop.clone()));
        Ok(Self {
            task: Some(task),
            stop,
            status: Some(status),
        })
    }

    /// After the recorder's shutdown: delivers what the shipper still can and stops it (the
    /// rest ships at the next start).
    pub async fn finish(self) {
        if let Some(task) = self.task {
            self.stop.cancel();
            let _ = task.await;
        }
    }
}

/// `body` turned into the `error` decision that records its refusal (`why`); other events as
/// they are.
fn refused(mut body: pb::EventBody, why: &str) -> pb::EventBody {
    if let Some(pb::event_body::Kind::Decision(decision)) = &mut body.kind {
        let decided = DecisionKind::label_of(decision.decision);
        decision.reason = format!("{why} (the policy decided {decided}: {})", decision.reason);
        decision.decision = DecisionKind::Error as i32;
    }
    body
}

fn load_or_create_key(path: &Path) -> Result<SecretKey, AuditError> {
    if path.exists() {
        return Ok(SecretKey::read_pem_file(path)?);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if path.file_name().is_none_or(|name| name != PRIVATE_KEY_FILE) {
        return Err(AuditError::MissingKey(path.display().to_string()));
    }
    let key = SecretKey::generate();
    let (_, public) = write_keypair(dir, &key, false)?;
    tracing::warn!(key_id = %key.public().key_id(), public_key = %public.display(),
        "no signing key: generated one (give its public key to the auditor)");
    Ok(key)
}

/// The machine's host name, for the default chain id.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into())
}
