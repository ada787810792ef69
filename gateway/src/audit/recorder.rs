//! Where an event is signed and made durable: the one owner of the gateway's chain and journal.
//!
//! Two threads share the work, so that a slow fsync never holds up signing or writing:
//! - the [`ChainWriter`] and the [`JournalWriter`] have one owner, a `Writer` behind a lock, so
//!   seq order is journal order. Callers send bodies over a bounded channel; the recorder thread
//!   takes whatever is queued (a group), links its events in order (each hash covers the
//!   previous one), signs them — on a pool of threads once a group is large enough to be worth
//!   waking it: signatures do not depend on each other —, and writes the group in one write.
//!   A caller whose decision finds nothing queued and the writer free writes it itself (a group
//!   of one), which spares the two thread wake-ups a trip through the thread costs;
//! - the sync thread fsyncs what was written and publishes the synced seq, what the shipper may
//!   send. With `fsync = always` a group's callers are answered when the fsync covering their
//!   events returns; meanwhile the recorder thread signs and writes the next groups, whose
//!   callers the following fsync answers together (group commit without a fixed linger: a group
//!   is whatever arrived during the previous fsync). With `fsync = batch` callers are answered
//!   once their events are written (in the OS: durable against a crash of the gateway), and the
//!   sync thread fsyncs at most `window` after its previous fsync.
//!
//! An answer of `Ok(seq)` means the event is in the journal per the policy: the gateway forwards
//! or refuses a call only after its decision is. A forwarded call's *outcome* (ok, tool error,
//! latency) is [`Recorder::enqueue`]d before the reply is sent but not awaited. It follows the
//! decision in the same queue, so it is written in order; it is kept in memory when the journal
//! refuses it, like a deferred refusal; and it is never dropped for want of room (the caller
//! waits for room in the queue). Awaiting it would buy one thing: after a crash of the gateway
//! (or, with `fsync = always`, a power loss) no reply an agent received would lack its outcome in
//! the journal. The decision that let the call through is durable either way, so the trail still
//! shows who tried what and that it was allowed; only the results of the calls answered in the
//! last moments before a crash go missing, as they do for every call in flight at a crash. It
//! would cost a second trip through the recorder in every reply's latency — with `fsync =
//! always` a second fsync (on the project machine's disk p50 1.3 ms, p99 20 ms) — and a second
//! wake-up of the caller.
//!
//! When the journal cannot be written the appends of that group are undone (the chain is rewound,
//! the segment cut back), every caller gets an error — the gateway fails closed — and
//! [`Recorder::healthy`] turns false. Refusals made meanwhile are [`Recorder::defer`]red in
//! memory and written first once the journal accepts writes again, which a periodic tick retries.
//! A failed fsync poisons the journal (see [`verdict_journal`]): its waiting callers get an error
//! and every later append fails until the gateway restarts and rescans the journal.
//! Checkpoints of the chain head are appended at start, every `checkpoint_secs`, and at shutdown.
//!
//! Refusals of unauthenticated requests are not appended one by one: every `refusal_every` the
//! thread appends one aggregate event from the [`RefusalLedger`] (and a last one at shutdown),
//! unless the journal's disk is below its reserve ([`SpaceWatch`]), in which case the tallies are
//! carried over until there is room.

use super::event;
use super::refusals::RefusalLedger;
use super::space::{SpaceLevel, SpaceWatch};
use prost::Message;
use rayon::prelude::*;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use verdict_journal::{JournalError, JournalLock, JournalWriter, SyncPoint};
use verdict_proto::merkle::Frontier;
use verdict_proto::pb;
use verdict_proto::{ChainWriter, SecretKey, SignedEvent};

/// Requests waiting for the recorder thread; callers wait (backpressure) beyond it.
const QUEUE: usize = 8192;
/// Events signed and written as one group at most.
const GROUP: usize = 1024;
/// Largest event body accepted; [`super::event`] bounds what it stores far below this, so only a
/// defect reaches it. Well under the journal's record limit and Kafka's default message size.
const MAX_BODY: usize = 512 << 10;
/// Refusals kept in memory while the journal is unavailable; past it they are counted.
const MAX_DEFERRED: usize = 100_000;
/// Groups smaller than this are signed on the recorder thread: for a few signatures (~30 µs
/// each) waking the pool costs about what it saves.
const PARALLEL_FROM: usize = 4;
/// How often events the journal refused are retried.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// When appended events reach the disk (not only the OS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// A caller is answered once the fsync covering its event has returned: durable against
    /// power loss.
    Always,
    /// A caller is answered once its event is written (durable against a crash of the gateway
    /// process); fsync runs at most `window` after the previous one, so a power loss loses at
    /// most that window.
    Batch { window: Duration },
}

/// Why an event could not be recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    #[error("the audit journal cannot be written ({0}); the call was refused")]
    Journal(String),
    #[error("the audit recorder has stopped")]
    Stopped,
}

/// Why the recorder could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}. Connect this client to the gateway that holds it instead (`verdict-gateway --stdio --connect http://HOST:PORT/mcp` with the agent's key in VERDICT_API_KEY), or give this gateway its own `[audit] journal_dir` and `chain_id`")]
    InUse(verdict_journal::JournalError),
    #[error(transparent)]
    Journal(#[from] verdict_journal::JournalError),
    #[error("journal {dir} holds chain {found:?}, but this gateway's chain is {configured:?}")]
    OtherChain {
        dir: PathBuf,
        found: String,
        configured: String,
    },
    #[error("journal {dir}: last record is not an envelope: {error}")]
    BadRecord { dir: PathBuf, error: String },
    #[error("starting the recorder's threads: {0}")]
    Thread(#[from] std::io::Error),
    #[error("starting the signing threads: {0}")]
    Signers(#[from] rayon::ThreadPoolBuildError),
}

/// What the recorder thread needs.
pub struct RecorderSettings {
    pub chain_id: String,
    pub key: SecretKey,
    /// The key that signed the chain until now, when `key` replaces it (see `rotation`).
    pub previous_key: Option<SecretKey>,
    pub journal_dir: PathBuf,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    pub checkpoint_secs: u32,
    /// How this process serves agents (`http`, `stdio`), recorded in the journal's lock file so a
    /// refused second writer can name the holder.
    pub writer_mode: &'static str,
    pub refusals: Arc<RefusalLedger>,
    pub refusal_every: Duration,
    pub space: Arc<SpaceWatch>,
}

/// How often the journal's free space is measured.
const SPACE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Who waits for an event's seq.
type Reply = oneshot::Sender<Result<u64, RecordError>>;

enum Command {
    Append {
        body: Vec<u8>,
        reply: Reply,
    },
    /// Written with the next group; nobody waits, and if the journal refuses it, it is kept.
    Defer(Vec<u8>),
    Checkpoint(&'static str),
    Refusals,
    Tick,
    Shutdown(oneshot::Sender<()>),
}

/// State shared between the thread and the gateway (health, metrics).
#[derive(Debug, Default)]
pub struct RecorderStatus {
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl RecorderStatus {
    /// Marks the journal unwritable; returns the reason callers, agents and `/healthz` see.
    fn failed(&self, error: &JournalError) -> String {
        let public = public_reason(error);
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::error!(%error, "audit journal cannot be written: refusing every call until it can (fail closed)");
        }
        *self.last_error.lock().expect("status lock") = Some(public.clone());
        public
    }

    /// Marks the journal writable again.
    fn recovered(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!("audit journal writable again");
            *self.last_error.lock().expect("status lock") = None;
        }
    }
}

pub struct Recorder {
    tx: mpsc::Sender<Command>,
    /// The chain and the journal; the recorder thread takes it for each group it writes, and a
    /// caller takes it itself when nothing is queued (see [`Recorder::record`]).
    writer: Arc<Mutex<Writer>>,
    status: Arc<RecorderStatus>,
    written: watch::Receiver<u64>,
    chain_id: String,
    checkpoint_every: Duration,
    /// Held for the process's life: no other process appends to this chain meanwhile.
    _lock: JournalLock,
    refusal_every: Duration,
    space: Arc<SpaceWatch>,
}

impl Recorder {
    /// Opens the journal, continues the chain from its last record, and starts the thread.
    pub fn open(settings: RecorderSettings) -> Result<Self, OpenError> {
        let lock =
            JournalLock::acquire(&settings.journal_dir, settings.writer_mode).map_err(|error| {
                match error {
                    locked @ JournalError::Locked { .. } => OpenError::InUse(locked),
                    other => OpenError::Journal(other),
                }
            })?;
        let (mut journal, recovery) =
            JournalWriter::open(&settings.journal_dir, settings.segment_bytes)?;
        let (head_seq, head_hash, key_id) = match &recovery.last {
            None => (0, verdict_proto::ZERO_HASH, None),
            Some(last) => {
                let event =
                    SignedEvent::decode(&last.payload).map_err(|e| OpenError::BadRecord {
                        dir: settings.journal_dir.clone(),
                        error: e.to_string(),
                    })?;
                if event.chain_id != settings.chain_id {
                    return Err(OpenError::OtherChain {
                        dir: settings.journal_dir,
                        found: event.chain_id,
                        configured: settings.chain_id,
                    });
                }
                let handed_to = match event.decode_body().map(|b| b.kind) {
                    Ok(Some(pb::event_body::Kind::KeyRotation(r))) => Some(r.new_key_id),
                    _ => None,
                };
                let hash = event.computed_hash();
                (event.seq, hash, Some(handed_to.unwrap_or(event.key_id)))
            }
        };
        let mut tree = super::tree::restore(&settings.journal_dir, head_seq)?;
        let head = super::rotation::Head {
            seq: head_seq,
            hash: head_hash,
            key_id: key_id.as_deref(),
        };
        let chain = super::rotation::continue_chain(
            &settings.chain_id,
            settings.key,
            settings.previous_key,
            head,
            &mut journal,
            &mut tree,
        )?;
        let head_seq = chain.head().0;
        tracing::info!(chain_id = %settings.chain_id, seq = head_seq, journal = %settings.journal_dir.display(), "audit chain continues");
        let (tx, rx) = mpsc::channel(QUEUE);
        let (written_tx, written) = watch::channel(head_seq);
        let status = Arc::new(RecorderStatus {
            healthy: AtomicBool::new(true),
            ..Default::default()
        });
        let signers = signing_pool()?;
        let queue = Arc::new(SyncQueue::default());
        let syncer = SyncThread {
            policy: settings.fsync,
            queue: Arc::clone(&queue),
            written: written_tx,
            status: Arc::clone(&status),
            last_sync: Instant::now(),
        };
        let syncer = std::thread::Builder::new()
            .name("audit-sync".into())
            .spawn(move || syncer.run())?;
        let writer = Arc::new(Mutex::new(Writer {
            chain,
            tree,
            journal,
            signers,
            policy: settings.fsync,
            sync: Arc::clone(&queue),
            status: Arc::clone(&status),
            deferred: VecDeque::new(),
            overflow: 0,
            checkpoint_secs: settings.checkpoint_secs,
            refusals: settings.refusals,
            space: Arc::clone(&settings.space),
            stopped: false,
            last_group: 0,
        }));
        let thread = RecorderThread {
            writer: Arc::clone(&writer),
            sync: queue,
            syncer: Some(syncer),
        };
        std::thread::Builder::new()
            .name("audit-recorder".into())
            .spawn(move || thread.run(rx))?;
        let recorder = Self {
            tx,
            writer,
            status,
            written,
            chain_id: settings.chain_id,
            checkpoint_every: Duration::from_secs(settings.checkpoint_secs.max(1).into()),
            _lock: lock,
            refusal_every: settings.refusal_every.max(Duration::from_millis(100)),
            space: settings.space,
        };
        recorder.space.check();
        recorder.send_now(Command::Checkpoint("startup"));
        Ok(recorder)
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Signs and journals `body`; returns its seq once it is durable per the fsync policy.
    ///
    /// When nothing is queued and no group is being written, the caller signs and writes its
    /// event itself, on its own thread: at low load that saves two thread wake-ups per event
    /// (the recorder's and the caller's), most of what an event cost beyond its signature. Under
    /// load callers queue, and the recorder thread writes what queued as one group.
    pub async fn record(&self, body: &pb::EventBody) -> Result<u64, RecordError> {
        let (reply, answer) = oneshot::channel();
        if let Some((body, reply)) = self.write_inline(body.encode_to_vec(), reply) {
            self.tx
                .send(Command::Append { body, reply })
                .await
                .map_err(|_| RecordError::Stopped)?;
        }
        answer.await.map_err(|_| RecordError::Stopped)?
    }

    /// Writes `body` on the caller's thread if the recorder is idle: nothing queued (so nothing
    /// sent earlier is overtaken), the writer free, and the last group small (under load,
    /// groups are large, and a caller writing alone would only delay the next group). Gives
    /// `body` and `reply` back otherwise.
    fn write_inline(&self, body: Vec<u8>, reply: Reply) -> Option<(Vec<u8>, Reply)> {
        if self.tx.capacity() < self.tx.max_capacity() {
            return Some((body, reply));
        }
        let Ok(mut writer) = self.writer.try_lock() else {
            return Some((body, reply));
        };
        if writer.last_group >= PARALLEL_FROM {
            return Some((body, reply));
        }
        writer.write_with_deferred(vec![Pending {
            body,
            reply: Some(reply),
            checkpoint: None,
        }]);
        None
    }

    /// Queues `body` behind everything queued so far and returns without waiting for it to be
    /// written: for a call's outcome (see the module doc). It waits only for room in the queue.
    ///
    /// It is never written on the caller's thread: signing it there would delay the reply.
    pub async fn enqueue(&self, body: &pb::EventBody) -> Result<(), RecordError> {
        self.tx
            .send(Command::Defer(body.encode_to_vec()))
            .await
            .map_err(|_| RecordError::Stopped)
    }

    /// Records `body` when the journal next accepts writes (for refusals made while it did not).
    pub fn defer(&self, body: &pb::EventBody) {
        self.send_now(Command::Defer(body.encode_to_vec()));
    }

    /// False while the journal cannot be written.
    pub fn healthy(&self) -> bool {
        self.status.healthy.load(Ordering::Relaxed)
    }

    /// Why the journal last failed, if it is failing.
    pub fn last_error(&self) -> Option<String> {
        self.status.last_error.lock().expect("status lock").clone()
    }

    /// The seq of the newest event on disk (fsynced), updated as the journal syncs: what the
    /// shipper may send. With `fsync = batch` it trails the calls by at most the window.
    pub fn written(&self) -> watch::Receiver<u64> {
        self.written.clone()
    }

    /// The journal's disk space, as last measured.
    pub fn space(&self) -> &SpaceWatch {
        &self.space
    }

    /// Starts the periodic retry tick, the periodic checkpoint, the aggregate of refusals, and
    /// the disk space check.
    pub fn spawn_timers(self: &Arc<Self>) {
        let recorder = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RETRY_EVERY);
            let mut checkpoint = tokio::time::interval(recorder.checkpoint_every);
            let mut refusals = tokio::time::interval(recorder.refusal_every);
            let mut space = tokio::time::interval(SPACE_CHECK_EVERY);
            // The first ticks are immediate; startup already checkpointed and measured.
            checkpoint.tick().await;
            refusals.tick().await;
            space.tick().await;
            loop {
                let command = tokio::select! {
                    _ = tick.tick() => Command::Tick,
                    _ = checkpoint.tick() => Command::Checkpoint("periodic"),
                    _ = refusals.tick() => Command::Refusals,
                    _ = space.tick() => {
                        recorder.space.check();
                        continue;
                    }
                };
                if recorder.tx.send(command).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Appends the shutdown checkpoint, syncs, and stops the threads.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Command::Shutdown(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    fn send_now(&self, command: Command) {
        if self.tx.try_send(command).is_err() {
            tracing::error!("audit recorder queue full or stopped; a deferred event or checkpoint was not queued");
        }
    }
}

/// The pool that signs large groups; none on a single core.
fn signing_pool() -> Result<Option<rayon::ThreadPool>, OpenError> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cores < 2 {
        return Ok(None);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .thread_name(|i| format!("audit-signer-{i}"))
        .build()?;
    Ok(Some(pool))
}

/// The thread that writes what callers queued, in groups, and runs the periodic commands.
struct RecorderThread {
    writer: Arc<Mutex<Writer>>,
    sync: Arc<SyncQueue>,
    syncer: Option<JoinHandle<()>>,
}

/// The one owner of the chain and the journal, so seq order is journal order; whoever holds its
/// lock signs and writes.
struct Writer {
    chain: ChainWriter,
    /// The Merkle tree over the events written so far (`None`: unknown, see [`super::tree`]).
    tree: Option<Frontier>,
    journal: JournalWriter,
    signers: Option<rayon::ThreadPool>,
    policy: FsyncPolicy,
    /// Where written groups go to be synced.
    sync: Arc<SyncQueue>,
    status: Arc<RecorderStatus>,
    /// Bodies to write before anything else once the journal works again.
    deferred: VecDeque<Vec<u8>>,
    /// Deferred bodies that did not fit in memory.
    overflow: u64,
    checkpoint_secs: u32,
    refusals: Arc<RefusalLedger>,
    space: Arc<SpaceWatch>,
    /// The shutdown checkpoint is written: nothing may follow it.
    stopped: bool,
    /// How many events the last group held: the load, as [`Recorder::record`] sees it.
    last_group: usize,
}

/// One event of a group: its body, and who waits for its seq.
struct Pending {
    body: Vec<u8>,
    reply: Option<Reply>,
    /// A checkpoint is rebuilt rather than retried: its head would be stale.
    checkpoint: Option<&'static str>,
}

impl RecorderThread {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < GROUP {
                match rx.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            let mut writer = self.writer.lock().expect("audit writer lock");
            let mut pending = Vec::with_capacity(group.len());
            let mut shutdown = None;
            for command in group {
                match command {
                    Command::Append { body, reply } => pending.push(Pending {
                        body,
                        reply: Some(reply),
                        checkpoint: None,
                    }),
                    Command::Defer(body) => pending.push(Pending {
                        body,
                        reply: None,
                        checkpoint: None,
                    }),
                    Command::Checkpoint(reason) => pending.push(Pending {
                        body: Vec::new(),
                        reply: None,
                        checkpoint: Some(reason),
                    }),
                    Command::Refusals => writer.take_refusals(&mut pending),
                    Command::Tick => {}
                    Command::Shutdown(reply) => {
                        writer.take_refusals(&mut pending);
                        pending.push(Pending {
                            body: Vec::new(),
                            reply: None,
                            checkpoint: Some("shutdown"),
                        });
                        shutdown = Some(reply);
                    }
                }
            }
            writer.write_with_deferred(pending);
            if let Some(reply) = shutdown {
                writer.stopped = true;
                if !writer.deferred.is_empty() || writer.overflow > 0 {
                    tracing::error!(
                        deferred = writer.deferred.len(),
                        overflow = writer.overflow,
                        "stopping with refusals the journal never accepted; they are not recorded"
                    );
                }
                drop(writer);
                self.stop_syncing();
                let _ = reply.send(());
                return;
            }
        }
        self.stop_syncing();
    }

    /// Lets the sync thread sync what is written, answer its callers, and end.
    fn stop_syncing(&mut self) {
        self.sync.stop();
        if let Some(syncer) = self.syncer.take() {
            if syncer.join().is_err() {
                tracing::error!("the audit sync thread panicked");
            }
        }
    }
}

impl Writer {
    /// Writes what the journal refused earlier first, then `pending`, as one group. After the
    /// shutdown checkpoint nothing more is written: waiting callers are told the recorder stopped.
    fn write_with_deferred(&mut self, pending: Vec<Pending>) {
        if self.stopped {
            for item in pending {
                if let Some(reply) = item.reply {
                    let _ = reply.send(Err(RecordError::Stopped));
                }
            }
            return;
        }
        let mut group = Vec::with_capacity(pending.len() + self.deferred.len());
        if !self.deferred.is_empty() || self.overflow > 0 {
            self.take_deferred(&mut group);
        }
        group.extend(pending);
        self.last_group = group.len();
        self.write(group);
    }

    /// The aggregate of the refusals since the last one, unless the disk is below its reserve.
    fn take_refusals(&self, pending: &mut Vec<Pending>) {
        if self.space.level() == SpaceLevel::Reserved {
            self.refusals.carry_over();
            return;
        }
        if let Some(body) = self.refusals.take_event() {
            pending.push(Pending {
                body: body.encode_to_vec(),
                reply: None,
                checkpoint: None,
            });
        }
    }

    fn take_deferred(&mut self, pending: &mut Vec<Pending>) {
        pending.extend(self.deferred.drain(..).map(|body| Pending {
            body,
            reply: None,
            checkpoint: None,
        }));
        if self.overflow > 0 {
            pending.push(Pending {
                body: event::unrecorded_refusals(self.overflow).encode_to_vec(),
                reply: None,
                checkpoint: None,
            });
        }
    }

    /// Signs and writes `pending` as one group; answers every waiting caller.
    fn write(&mut self, pending: Vec<Pending>) {
        // A body that could never fit is refused alone, not with the group it came in.
        let (mut pending, oversized): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|p| p.body.len() <= MAX_BODY);
        for item in oversized {
            tracing::error!(
                bytes = item.body.len(),
                "audit event body too large; refused"
            );
            if let Some(reply) = item.reply {
                let error = format!("event body of {} bytes exceeds {MAX_BODY}", item.body.len());
                let _ = reply.send(Err(RecordError::Journal(error)));
            }
        }
        if pending.is_empty() {
            return;
        }
        let (seq_before, hash_before) = self.chain.head();
        let tree_before = self.tree.clone();
        let records = self.sign(&mut pending);
        let refs: Vec<(u64, &[u8])> = records.iter().map(|(s, b)| (*s, b.as_slice())).collect();
        match self.journal.append(&refs) {
            Ok(()) => {
                self.status.recovered();
                self.overflow = 0;
                let waiting = pending
                    .into_iter()
                    .zip(&records)
                    .filter_map(|(item, (seq, _))| Some((*seq, item.reply?)));
                let point = self.journal.sync_point();
                match self.policy {
                    FsyncPolicy::Always => self.sync.push(point, waiting),
                    FsyncPolicy::Batch { .. } => {
                        for (seq, reply) in waiting {
                            let _ = reply.send(Ok(seq));
                        }
                        self.sync.push(point, []);
                    }
                }
            }
            Err(e) => {
                self.chain.rewind(seq_before, hash_before);
                self.tree = tree_before;
                let error = self.status.failed(&e);
                for item in pending {
                    match item.reply {
                        Some(reply) => {
                            let _ = reply.send(Err(RecordError::Journal(error.clone())));
                        }
                        None if item.checkpoint.is_none() => self.keep_deferred(item.body),
                        None => {}
                    }
                }
            }
        }
    }

    /// Links `pending` into the chain in order and signs it (on the pool when it is large);
    /// returns each event's seq and envelope. Each item keeps its body, to be kept for later if
    /// the journal refuses the group.
    fn sign(&mut self, pending: &mut [Pending]) -> Vec<(u64, Vec<u8>)> {
        let mut linked = Vec::with_capacity(pending.len());
        for item in pending.iter_mut() {
            if let Some(reason) = item.checkpoint {
                let (seq, hash) = self.chain.head();
                item.body = event::checkpoint(seq, &hash, reason, self.checkpoint_secs)
                    .with_tree(self.tree.as_ref())
                    .encode_to_vec();
            }
            linked.push(self.chain.link(std::mem::take(&mut item.body)));
            if let Some(tree) = self.tree.as_mut() {
                tree.push(&self.chain.head().1);
            }
        }
        let key = self.chain.key();
        let signed: Vec<SignedEvent> = match &self.signers {
            Some(pool) if linked.len() >= PARALLEL_FROM => {
                pool.install(|| linked.into_par_iter().map(|e| e.sign(key)).collect())
            }
            _ => linked.into_iter().map(|e| e.sign(key)).collect(),
        };
        signed
            .into_iter()
            .zip(pending)
            .map(|(event, item)| {
                let record = (event.seq, event.encode());
                item.body = event.body;
                record
            })
            .collect()
    }

    fn keep_deferred(&mut self, body: Vec<u8>) {
        if self.deferred.len() < MAX_DEFERRED {
            self.deferred.push_back(body);
        } else {
            self.overflow += 1;
        }
    }
}

/// What the recorder thread hands the sync thread.
#[derive(Default)]
struct SyncQueue {
    state: Mutex<Unsynced>,
    wake: Condvar,
}

/// Written and not yet synced: the newest sync point and the callers waiting for it.
#[derive(Default)]
struct Unsynced {
    point: Option<SyncPoint>,
    waiting: Vec<(u64, Reply)>,
    stop: bool,
}

impl SyncQueue {
    /// Adds a written group: `point` covers it and everything before it.
    fn push(&self, point: SyncPoint, waiting: impl IntoIterator<Item = (u64, Reply)>) {
        let mut state = self.state.lock().expect("sync queue lock");
        let idle = state.point.is_none();
        state.point = Some(point);
        state.waiting.extend(waiting);
        drop(state);
        // A sync thread already holding a point wakes on its own when the window has passed.
        if idle {
            self.wake.notify_one();
        }
    }

    fn stop(&self) {
        self.state.lock().expect("sync queue lock").stop = true;
        self.wake.notify_one();
    }
}

/// Fsyncs the journal off the recorder thread, answers `fsync = always` callers, and publishes
/// the synced seq.
struct SyncThread {
    policy: FsyncPolicy,
    queue: Arc<SyncQueue>,
    written: watch::Sender<u64>,
    status: Arc<RecorderStatus>,
    last_sync: Instant,
}

impl SyncThread {
    fn run(mut self) {
        while let Some((point, waiting)) = self.next() {
            self.sync(&point, waiting);
        }
    }

    /// Waits until something is written and the policy lets it be synced; `None` once stopped
    /// with nothing left to sync.
    fn next(&self) -> Option<(SyncPoint, Vec<(u64, Reply)>)> {
        let mut state = self.queue.state.lock().expect("sync queue lock");
        loop {
            if state.point.is_none() {
                if state.stop {
                    return None;
                }
                state = self.queue.wake.wait(state).expect("sync queue lock");
                continue;
            }
            let wait = match self.policy {
                FsyncPolicy::Always => Duration::ZERO,
                FsyncPolicy::Batch { window } => window.saturating_sub(self.last_sync.elapsed()),
            };
            if wait.is_zero() || state.stop {
                let point = state.point.take()?;
                return Some((point, std::mem::take(&mut state.waiting)));
            }
            state = self
                .queue
                .wake
                .wait_timeout(state, wait)
                .expect("sync queue lock")
                .0;
        }
    }

    fn sync(&mut self, point: &SyncPoint, waiting: Vec<(u64, Reply)>) {
        let result = point.sync();
        self.last_sync = Instant::now();
        match result {
            Ok(synced) => {
                self.written.send_if_modified(|seq| {
                    let newer = *seq != synced;
                    *seq = synced;
                    newer
                });
                for (seq, reply) in waiting {
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(error) => {
                let reason = self.status.failed(&error);
                for (_, reply) in waiting {
                    let _ = reply.send(Err(RecordError::Journal(reason.clone())));
                }
            }
        }
    }
}

/// What an agent or an unauthenticated `/healthz` reader may learn of a journal failure: the
/// kind of failure, never a server path (the full error, path included, goes to the log).
fn public_reason(error: &JournalError) -> String {
    match error {
        JournalError::Io { source, .. } => format!("journal I/O error: {source}"),
        JournalError::BadMagic { .. } | JournalError::Corrupt { .. } => {
            "journal segment damaged".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verdict_journal::JournalReader;
    use verdict_proto::verify::EventStatus;
    use verdict_proto::{ChainVerifier, TrustedKeys};

    fn key() -> SecretKey {
        SecretKey::from_seed(&[7; 32])
    }

    fn open(dir: &std::path::Path, fsync: FsyncPolicy) -> Arc<Recorder> {
        let settings = RecorderSettings {
            chain_id: "recorder-test".into(),
            key: key(),
            previous_key: None,
            journal_dir: dir.to_owned(),
            segment_bytes: 64 << 10,
            fsync,
            checkpoint_secs: 60,
            writer_mode: "test",
            refusals: Arc::new(RefusalLedger::new(8)),
            refusal_every: Duration::from_secs(60),
            space: Arc::new(SpaceWatch::new(dir.to_owned(), 0, 0)),
        };
        Arc::new(Recorder::open(settings).unwrap())
    }

    /// `callers` tasks record one outcome each at once; returns the seqs they were answered.
    async fn record_concurrently(recorder: &Arc<Recorder>, callers: u64) -> Vec<u64> {
        let tasks: Vec<_> = (0..callers)
            .map(|i| {
                let recorder = Arc::clone(recorder);
                tokio::spawn(async move {
                    let body = event::outcome(i, pb::Outcome::default());
                    let seq = recorder.record(&body).await.unwrap();
                    (seq, *recorder.written().borrow())
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            let (seq, synced) = task.await.unwrap();
            // With `always` the answer comes from the fsync covering the event.
            seqs.push(if synced >= seq { seq } else { 0 });
        }
        seqs
    }

    /// Every event in the journal, verified as one chain.
    fn verified_journal(dir: &std::path::Path) -> Vec<u64> {
        let mut reader = JournalReader::open(dir).unwrap();
        let mut events = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            events.push(SignedEvent::decode(&record.payload).unwrap());
        }
        let mut keys = TrustedKeys::default();
        keys.add(key().public().clone(), None);
        let verdicts = ChainVerifier::new(keys).verify_batch(&events);
        for (event, verdict) in events.iter().zip(verdicts) {
            assert_eq!(verdict.status, EventStatus::Verified, "seq {}", event.seq);
            assert!(verdict.finding.is_none(), "seq {}", event.seq);
        }
        events.iter().map(|e| e.seq).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_fsync_always_each_caller_is_answered_by_the_fsync_covering_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = open(dir.path(), FsyncPolicy::Always);
        let mut seqs = record_concurrently(&recorder, 500).await;
        assert!(!seqs.contains(&0), "answered before its event was synced");
        recorder.shutdown().await;
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 500, "one seq per caller");
        // Startup checkpoint, 500 events signed in groups (on the pool), shutdown checkpoint:
        // one chain, in hash order, across segments.
        assert_eq!(verified_journal(dir.path()), (1..=502).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_fsync_batch_the_synced_seq_catches_up_and_queued_outcomes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let window = Duration::from_millis(5);
        let recorder = open(dir.path(), FsyncPolicy::Batch { window });
        record_concurrently(&recorder, 100).await;
        for i in 0..100 {
            let body = event::outcome(i, pb::Outcome::default());
            recorder.enqueue(&body).await.unwrap();
        }
        let body = event::outcome(0, pb::Outcome::default());
        let last = recorder.record(&body).await.unwrap();
        assert_eq!(
            last, 202,
            "the queued outcomes were written before it, in order"
        );
        let mut written = recorder.written();
        tokio::time::timeout(
            Duration::from_secs(10),
            written.wait_for(|&seq| seq >= last),
        )
        .await
        .expect("the sync thread syncs within its window")
        .unwrap();
        recorder.shutdown().await;
        assert_eq!(verified_journal(dir.path()), (1..=203).collect::<Vec<_>>());
    }
}
