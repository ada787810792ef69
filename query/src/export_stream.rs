//! Streaming an export: a reader task walks each chain window by window ([`ChainWalk`]) one batch
//! ahead of the encoder, which turns rows into lines (JSON lines, CSV or OCSF) and lines into
//! chunks of about [`CHUNK_BYTES`] for the gRPC stream.
//!
//! A JSON-lines export ends with its [`ExportEnd`] line, written only after the last row was
//! read: a stream that fails or is cut has none.
//!
//! Two stages so ClickHouse reading and encoding overlap on two cores; the channels between them
//! are bounded, so a slow client slows the reads instead of filling memory. A client that goes
//! away stops the encoder, whose dropped receiver stops the reader.

use crate::api::QueryError;
use crate::export::{ChainSpan, ExportEnd, ExportRecord, CHUNK_BYTES};
use crate::filter::Conditions;
use crate::ocsf;
use crate::store::{ChainWalk, Store, StoreError};
use tokio::sync::mpsc;
use tonic::Status;
use verdict_proto::pb;
use verdict_proto::witness::HeadRecord;
use verdict_schema::EventRow;

type ChunkResult = Result<pb::ExportChunk, Status>;

/// One export request, validated: the chains to walk (id, first and last matching seq), the
/// conditions and the format.
pub struct ExportStream {
    pub store: Store,
    pub chains: Vec<(String, u64, u64)>,
    pub cond: Conditions,
    pub format: pb::ExportFormat,
}

impl ExportStream {
    /// Streams every matching event into `tx`; returns the number of rows sent.
    pub async fn run(self, tx: mpsc::Sender<ChunkResult>) -> u64 {
        let (batches_tx, mut batches) = mpsc::channel(1);
        tokio::spawn(read_chains(
            self.store.clone(),
            self.chains,
            self.cond,
            batches_tx,
        ));
        let mut out = ChunkSender::new(tx);
        if self.format == pb::ExportFormat::Csv {
            out.push(&ExportRecord::csv_header()).await;
        }
        let mut end = ExportEnd::default();
        while let Some(batch) = batches.recv().await {
            let rows = match batch {
                Ok(rows) => rows,
                Err(e) => {
                    out.fail(Status::from(QueryError::from(e))).await;
                    return out.rows;
                }
            };
            for row in rows {
                end.add(&row.chain_id, row.seq, &row.hash);
                write_line(row, self.format, &mut out.buf);
                out.rows += 1;
                out.flush_full().await;
                if out.closed {
                    return out.rows;
                }
            }
        }
        if !matches!(self.format, pb::ExportFormat::Csv | pb::ExportFormat::Ocsf) {
            match heads_within(&self.store, &end).await {
                Ok(heads) => end.witnessed_heads = heads,
                Err(e) => {
                    out.fail(Status::from(e)).await;
                    return out.rows;
                }
            }
            out.push(&end.to_json_line()).await;
        }
        out.flush().await;
        out.rows
    }
}

/// One event as one line of `format`, appended to `out` (an export's chunk, a `Follow` message).
pub(crate) fn write_line(row: EventRow, format: pb::ExportFormat, out: &mut Vec<u8>) {
    let record = ExportRecord::from_row(row);
    match format {
        pb::ExportFormat::Csv => out.extend_from_slice(record.to_csv_line().as_bytes()),
        pb::ExportFormat::Ocsf => out.extend_from_slice(ocsf::to_ocsf_line(&record).as_bytes()),
        _ => record.write_json_line(out),
    }
}

/// Per exported chain span that holds every seq from its first to its last (a filtered export's
/// spans have holes a head could fall into), the newest witnessed head within it.
async fn heads_within(store: &Store, end: &ExportEnd) -> Result<Vec<HeadRecord>, QueryError> {
    let mut heads = Vec::new();
    let whole = |span: &&ChainSpan| span.records == span.last_seq - span.first_seq + 1;
    for span in end.chains.iter().filter(whole) {
        let row = store
            .witnessed_head_within(&span.chain_id, span.first_seq, span.last_seq)
            .await?;
        // A stored head that does not decode is not the witness's: the export goes without it.
        match row.map(|row| HeadRecord::from_signed(&row.to_signed())) {
            Some(Ok(record)) => heads.push(record),
            Some(Err(error)) => {
                tracing::warn!(chain_id = %span.chain_id, %error, "a stored witnessed head does not decode")
            }
            None => {}
        }
    }
    Ok(heads)
}

/// Reads each chain's matching events, window by window, into `batches`.
pub(crate) async fn read_chains(
    store: Store,
    chains: Vec<(String, u64, u64)>,
    cond: Conditions,
    batches: mpsc::Sender<Result<Vec<EventRow>, StoreError>>,
) {
    for (chain, first, last) in chains {
        let mut walk = ChainWalk::new(&chain, cond.clone(), (first, last));
        while let Some(batch) = walk.next_batch(&store).await.transpose() {
            let failed = batch.is_err();
            if batches.send(batch).await.is_err() || failed {
                return;
            }
        }
    }
}

/// Buffers whole lines into chunks of about [`CHUNK_BYTES`].
struct ChunkSender {
    tx: mpsc::Sender<ChunkResult>,
    buf: Vec<u8>,
    rows: u64,
    closed: bool,
}

impl ChunkSender {
    fn new(tx: mpsc::Sender<ChunkResult>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES + 4096),
            rows: 0,
            closed: false,
        }
    }

    async fn push(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.flush_full().await;
    }

    /// Sends the chunk once it holds [`CHUNK_BYTES`] (lines are written into `buf` directly).
    async fn flush_full(&mut self) {
        if self.buf.len() >= CHUNK_BYTES {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if self.buf.is_empty() || self.closed {
            return;
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 4096));
        // The client went away: stop reading from ClickHouse.
        self.closed = self.tx.send(Ok(pb::ExportChunk { data })).await.is_err();
    }

    async fn fail(&mut self, status: Status) {
        self.flush().await;
        let _ = self.tx.send(Err(status)).await;
    }
}
