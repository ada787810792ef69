//! The `verdict.v1.AuditQuery` gRPC service: each RPC validates its request, builds bound
//! conditions ([`crate::filter`]), reads through [`Store`] and maps rows back to messages.
//!
//! Client mistakes are `INVALID_ARGUMENT` with a message naming the field; ClickHouse failures are
//! logged with detail and returned as `UNAVAILABLE` without it (the text may echo SQL). Every RPC
//! runs in a tracing span and is counted in [`Metrics`].

use crate::config::Limits;
use crate::export_stream::ExportStream;
use crate::filter::{self, Conditions, FilterError, FilterLimits, EVENT_TIME};
use crate::follow::{Follow, FollowResult};
use crate::follow_cursor::Positions;
use crate::metrics::Metrics;
use crate::paging::{page_window, BadToken, Cursor};
use crate::replay::{Replay, Under, REPLAYED};
use crate::replay_explain::policy_in_force;
use crate::replay_stream::{ReplayResult, ReplayStream};
use crate::store::{AttemptRow, ChainWalk, PageRow, Store, StoreError};
use crate::summary::{self, SummaryRow};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use verdict_proto::pb::{self, audit_query_server::AuditQuery};
use verdict_proto::verify::{ChainHead, EventStatus};
use verdict_proto::Label;
use verdict_proto::{ChainVerifier, SignedEvent, TrustedKeys};
use verdict_schema::{ChainHeadRow, EventRow};

const DEFAULT_WHOTRIED_LIMIT: u32 = 1000;
const DEFAULT_PAGE_SIZE: u32 = 100;
/// Messages buffered per follower before its task waits (the stream's back-pressure bound).
const FOLLOW_CHANNEL: usize = 64;
const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;
/// Concrete calls a replay keeps per change, by default and at most.
const DEFAULT_REPLAY_SAMPLES: u32 = 5;
const MAX_REPLAY_SAMPLES: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Token(#[from] BadToken),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The service is not configured for the request.
    #[error("{0}")]
    Unconfigured(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<QueryError> for Status {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::Filter(_) | QueryError::Token(_) | QueryError::Invalid(_) => {
                Status::invalid_argument(err.to_string())
            }
            QueryError::NotFound(what) => Status::not_found(what),
            QueryError::Unconfigured(what) => Status::failed_precondition(what),
            QueryError::Store(e) => {
                tracing::error!(error = %e, "storage query failed");
                Status::unavailable("the audit store did not answer; see the query service log")
            }
        }
    }
}

type Result<T> = std::result::Result<T, QueryError>;

#[derive(Debug, Clone)]
pub struct QueryService {
    store: Store,
    limits: Limits,
    keys: TrustedKeys,
    metrics: Arc<Metrics>,
}

impl QueryService {
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub fn new(store: Store, limits: Limits, keys: TrustedKeys, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            limits,
            keys,
            metrics,
        }
    }

    fn filter_limits(&self) -> FilterLimits {
        FilterLimits {
            max_values: self.limits.max_filter_values,
            max_range_days: self.limits.max_range_days,
        }
    }

    fn event_conditions(&self, filter: Option<&pb::EventFilter>) -> Result<Conditions> {
        Ok(filter::event_filter(
            filter.unwrap_or(&pb::EventFilter::default()),
            self.filter_limits(),
        )?)
    }

    /// [`Self::event_conditions`] for decision events only.
    fn decision_conditions(&self, filter: Option<&pb::EventFilter>) -> Result<Conditions> {
        let mut cond = self.event_conditions(filter)?;
        filter::decisions_only(&mut cond);
        Ok(cond)
    }

    /// Runs one RPC body in a span, converting errors and recording metrics.
    async fn timed<T>(
        &self,
        method: &'static str,
        body: impl Future<Output = Result<T>>,
    ) -> std::result::Result<Response<T>, Status> {
        let started = Instant::now();
        let result = body
            .instrument(tracing::info_span!("rpc", method))
            .await
            .map(Response::new)
            .map_err(Status::from);
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe(method, code, started);
        result
    }

    async fn who_tried(&self, req: pb::WhoTriedRequest) -> Result<pb::WhoTriedResponse> {
        let limit = bounded(
            "limit",
            req.limit,
            DEFAULT_WHOTRIED_LIMIT,
            self.limits.max_whotried_limit,
        )?;
        let cond = self.decision_conditions(req.filter.as_ref())?;
        let window = page_window(req.filter.as_ref(), None);
        let mut rows: Vec<AttemptRow> = self
            .store
            .events_page(&cond, None, window, limit + 1)
            .await?;
        let truncated = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let outcomes: HashMap<(String, u64), String> = self
            .store
            .outcomes(&cond, &rows)
            .await?
            .into_iter()
            .map(|o| ((o.chain_id, o.decision_seq), o.outcome))
            .collect();
        let attempts = rows
            .iter()
            .map(|row| {
                let outcome = outcomes.get(&(row.chain_id.clone(), row.seq));
                attempt(row, outcome.map_or("", String::as_str))
            })
            .collect();
        let groups = if req.grouped {
            group(self.store.attempt_groups(&cond).await?)
        } else {
            Vec::new()
        };
        Ok(pb::WhoTriedResponse {
            attempts,
            groups,
            truncated,
        })
    }

    async fn search(&self, req: pb::SearchRequest) -> Result<pb::SearchResponse> {
        let size = bounded(
            "page_size",
            req.page_size,
            DEFAULT_PAGE_SIZE,
            self.limits.max_page_size,
        )?;
        let cursor = Cursor::decode(&req.page_token)?;
        let cond = self.event_conditions(req.filter.as_ref())?;
        let window = page_window(req.filter.as_ref(), cursor.as_ref());
        let mut rows: Vec<EventRow> = self
            .store
            .events_page(&cond, cursor.as_ref(), window, size + 1)
            .await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => last.key().encode(),
            _ => String::new(),
        };
        let events = rows
            .into_iter()
            .map(|mut row| {
                let envelope = pb::Envelope::decode(row.envelope.as_slice()).ok();
                let outcome = std::mem::take(&mut row.outcome);
                pb::StoredEvent {
                    attempt: Some(attempt(&AttemptRow::from(row), &outcome)),
                    envelope,
                }
            })
            .collect();
        Ok(pb::SearchResponse {
            events,
            next_page_token,
        })
    }

    async fn summarize(&self, req: pb::SummarizeRequest) -> Result<pb::SummarizeResponse> {
        let columns = req
            .group_by
            .iter()
            .map(|&d| match pb::Dimension::try_from(d) {
                Ok(pb::Dimension::Agent) => Ok("agent_id"),
                Ok(pb::Dimension::Tool) => Ok("tool"),
                Ok(pb::Dimension::Risk) => Ok("risk"),
                Ok(pb::Dimension::Decision) => Ok("decision"),
                Ok(pb::Dimension::Upstream) => Ok("upstream"),
                _ => Err(QueryError::Invalid(format!(
                    "group_by: unknown or unspecified dimension {d}"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut filter = req.filter.unwrap_or_default();
        let time = filter.time.get_or_insert_with(Default::default);
        if time.to_unix_nanos == 0 {
            time.to_unix_nanos = verdict_proto::now_unix_nanos();
        }
        if time.from_unix_nanos == 0 {
            // An aggregate always has a bounded range: max_range_days back from its end.
            time.from_unix_nanos =
                (time.to_unix_nanos - i64::from(self.limits.max_range_days) * NANOS_PER_DAY).max(1);
        }
        let range = (time.from_unix_nanos, time.to_unix_nanos);
        let rows = if summary::by_dimensions_only(&filter) {
            self.summarize_by_hours(filter, range, &columns).await?
        } else {
            let cond = self.decision_conditions(Some(&filter))?;
            self.store.count_rows(&cond, &columns).await?
        };
        Ok(pb::SummarizeResponse {
            rows: summary::merge(rows),
        })
    }

    /// Whole hours of `range` from the pre-aggregated counts, its partial hours from rows.
    async fn summarize_by_hours(
        &self,
        mut filter: pb::EventFilter,
        range: (i64, i64),
        columns: &[&str],
    ) -> Result<Vec<SummaryRow>> {
        let split = summary::split_hours(range);
        filter.time = None;
        let cond = self.decision_conditions(Some(&filter))?;
        let mut rows = Vec::new();
        if let Some(hours) = split.hours {
            rows.extend(self.store.count_hours(&cond, hours, columns).await?);
        }
        for (from, to) in split.edges {
            let mut edge = cond.clone();
            let range = pb::TimeRange {
                from_unix_nanos: from,
                to_unix_nanos: to,
            };
            filter::time_range(&mut edge, EVENT_TIME, Some(&range), self.filter_limits())?;
            rows.extend(self.store.count_rows(&edge, columns).await?);
        }
        Ok(rows)
    }

    /// Validates the request and starts the producer task; rows stream as they are read.
    async fn export(
        &self,
        req: pb::ExportRequest,
    ) -> Result<ReceiverStream<std::result::Result<pb::ExportChunk, Status>>> {
        let format = match pb::ExportFormat::try_from(req.format) {
            Ok(f @ (pb::ExportFormat::Jsonl | pb::ExportFormat::Csv | pb::ExportFormat::Ocsf)) => f,
            _ => {
                return Err(QueryError::Invalid(
                    "format: one of JSONL, CSV, OCSF is required".into(),
                ))
            }
        };
        let cond = self.event_conditions(req.filter.as_ref())?;
        let chains = self.store.chain_ranges(&cond).await?;
        let (tx, rx) = mpsc::channel(4);
        let export = ExportStream {
            store: self.store.clone(),
            chains,
            cond,
            format,
        };
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(
            async move {
                let rows = export.run(tx).await;
                metrics.export_rows(rows);
                tracing::info!(rows, "export finished");
            }
            .instrument(tracing::info_span!("export")),
        );
        Ok(ReceiverStream::new(rx))
    }

    async fn follow(&self, req: pb::FollowRequest) -> Result<ReceiverStream<FollowResult>> {
        let format = match pb::ExportFormat::try_from(req.format) {
            Ok(f @ (pb::ExportFormat::Jsonl | pb::ExportFormat::Ocsf)) => f,
            _ => {
                return Err(QueryError::Invalid(
                    "format: JSONL or OCSF is required (CSV has no header in a stream)".into(),
                ))
            }
        };
        let cond = self.event_conditions(req.filter.as_ref())?;
        let items = pb::FollowItems::try_from(req.items)
            .map_err(|_| QueryError::Invalid("items: events, findings or all".into()))?;
        let finding_cond = self.follow_finding_conditions(req.filter.as_ref())?;
        let positions = self.follow_start(&req).await?;
        let (tx, rx) = mpsc::channel(FOLLOW_CHANNEL);
        let follow = Follow {
            store: self.store.clone(),
            cond,
            items,
            finding_cond,
            format,
            positions,
            limits: self.limits.clone(),
        };
        tokio::spawn(follow.run(tx).instrument(tracing::info_span!("follow")));
        Ok(ReceiverStream::new(rx))
    }

    /// `Follow`'s findings conditions: the filter's chains (the other fields describe events).
    fn follow_finding_conditions(&self, filter: Option<&pb::EventFilter>) -> Result<Conditions> {
        let chain_ids = filter.map(|f| f.chain_ids.clone()).unwrap_or_default();
        let req = pb::ListFindingsRequest {
            chain_ids,
            ..Default::default()
        };
        Ok(filter::finding_filter(&req, self.filter_limits())?)
    }

    /// Where a follower starts: its cursor, now, a time, or the beginning.
    async fn follow_start(&self, req: &pb::FollowRequest) -> Result<Positions> {
        let starts = [
            !req.cursor.is_empty(),
            req.from_now,
            req.since_unix_nanos != 0,
        ];
        if starts.iter().filter(|&&s| s).count() > 1 {
            return Err(QueryError::Invalid(
                "cursor, from_now and since_unix_nanos: at most one".into(),
            ));
        }
        Ok(if !req.cursor.is_empty() {
            Positions::decode(&req.cursor).map_err(|e| QueryError::Invalid(e.to_string()))?
        } else if req.from_now {
            let (offsets, silent) = self.store.finding_heads(i64::MAX).await?;
            Positions::at(self.store.stored_heads().await?).after_findings(offsets, silent)
        } else if req.since_unix_nanos != 0 {
            let (offsets, silent) = self.store.finding_heads(req.since_unix_nanos).await?;
            Positions::at(self.store.heads_before(req.since_unix_nanos).await?)
                .after_findings(offsets, silent)
        } else {
            Positions::default()
        })
    }

    async fn verify_chain(&self, req: pb::VerifyChainRequest) -> Result<pb::VerifyChainReport> {
        let chain_id = filter::text("chain_id", &req.chain_id)?;
        if chain_id.is_empty() {
            return Err(QueryError::Invalid("chain_id is required".into()));
        }
        let (low, high) = self
            .store
            .seq_bounds(&chain_id)
            .await?
            .ok_or_else(|| QueryError::NotFound(format!("no events of chain {chain_id:?}")))?;
        let from = if req.from_seq == 0 { low } else { req.from_seq };
        let to = if req.to_seq == 0 { high } else { req.to_seq };
        if to < from {
            return Err(QueryError::Invalid("to_seq is before from_seq".into()));
        }
        let mut verifier = ChainVerifier::new(self.keys.clone());
        let mut anchored = false;
        if from > 1 {
            // Who signs the chain from `from` on: the rotations before it, re-verified.
            for envelope in self.store.key_rotations(&chain_id, from).await? {
                if let Ok(event) = SignedEvent::decode(&envelope) {
                    let _ = verifier.restore_rotation(&event);
                }
            }
            if let Some(hash) = self.store.event_hash(&chain_id, from - 1).await? {
                if let Some(hash) = parse_hash(&hash) {
                    verifier.restore(
                        &chain_id,
                        ChainHead {
                            seq: from - 1,
                            hash,
                        },
                    );
                    anchored = true;
                }
            }
        } else {
            anchored = true;
        }
        let mut report = pb::VerifyChainReport {
            chain_id: chain_id.clone(),
            first_seq: 0,
            last_seq: 0,
            ..Default::default()
        };
        let mut last_read = 0;
        let mut walk = ChainWalk::new(&chain_id, Conditions::default(), (from, to));
        while let Some(rows) = walk.next_batch(&self.store).await? {
            let mut batch = Vec::new();
            for row in &rows {
                last_read = row.seq;
                match SignedEvent::decode(&row.envelope) {
                    Ok(event) => batch.push(event),
                    Err(e) => report.breaks.push(pb::ChainBreak {
                        kind: verdict_proto::BreakKind::Malformed.as_str().into(),
                        seq: row.seq,
                        last_seq: row.seq,
                        detail: e.to_string(),
                    }),
                }
            }
            if let (false, Some(first)) = (anchored, batch.first()) {
                // No stored predecessor: the first event anchors the range (its link is unchecked).
                verifier.restore(
                    &chain_id,
                    ChainHead {
                        seq: first.seq.saturating_sub(1),
                        hash: first.prev_hash,
                    },
                );
                anchored = true;
            }
            if report.events == 0 {
                report.first_seq = batch.first().map_or(0, |e| e.seq);
            }
            report.events += batch.len() as u64;
            for verdict in verifier.verify_batch(&batch) {
                if let Some(f) = verdict.finding {
                    report.breaks.push(pb::ChainBreak {
                        kind: f.kind.as_str().into(),
                        seq: f.seq,
                        last_seq: f.last_seq,
                        detail: f.detail,
                    });
                }
            }
        }
        report.last_seq = last_read;
        report.ok = report.breaks.is_empty() && report.events > 0;
        report.head = Some(self.head(&chain_id, high).await?);
        Ok(report)
    }

    async fn list_findings(
        &self,
        req: pb::ListFindingsRequest,
    ) -> Result<pb::ListFindingsResponse> {
        let size = bounded(
            "page_size",
            req.page_size,
            DEFAULT_PAGE_SIZE,
            self.limits.max_page_size,
        )?;
        let cursor = Cursor::decode(&req.page_token)?;
        let cond = filter::finding_filter(&req, self.filter_limits())?;
        let mut rows = self
            .store
            .findings_page(&cond, cursor.as_ref(), size + 1)
            .await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => Cursor {
                time: last.detected_unix_nanos,
                chain_id: last.chain_id.clone(),
                seq: last.seq,
                tie: format!("{}/{}", last.kind, last.evidence_sha256),
            }
            .encode(),
            _ => String::new(),
        };
        let findings = rows
            .into_iter()
            .map(|f| pb::Finding {
                kind: f.kind,
                chain_id: f.chain_id,
                seq: f.seq,
                last_seq: f.last_seq,
                detail: f.detail,
                detected_unix_nanos: f.detected_unix_nanos,
                evidence: f.evidence,
                kafka_partition: f.kafka_partition,
                kafka_offset: f.kafka_offset,
            })
            .collect();
        Ok(pb::ListFindingsResponse {
            findings,
            next_page_token,
        })
    }

    async fn replay_policy(
        &self,
        req: pb::ReplayPolicyRequest,
    ) -> Result<ReceiverStream<ReplayResult>> {
        if self.keys.is_empty() {
            return Err(QueryError::Unconfigured(
                "a replay re-decides verified events only: configure trusted_keys".into(),
            ));
        }
        if !req.event.is_empty() {
            return self.explain_event(&req).await;
        }
        let draft = draft_policy(&req.policy_json)?;
        let samples = bounded(
            "samples",
            req.samples,
            DEFAULT_REPLAY_SAMPLES,
            MAX_REPLAY_SAMPLES,
        )?;
        let filter = pb::EventFilter {
            decisions: REPLAYED.iter().map(|&kind| kind as i32).collect(),
            ..req.filter.unwrap_or_default()
        };
        let cond = self.decision_conditions(Some(&filter))?;
        let chains = self.store.chain_ranges(&cond).await?;
        let (tx, rx) = mpsc::channel(16);
        let replay = ReplayStream {
            store: self.store.clone(),
            keys: self.keys.clone(),
            chains,
            cond,
            replay: Replay::new(draft, samples as usize),
        };
        tokio::spawn(
            async move {
                let calls = replay.run(tx).await;
                tracing::info!(calls, "replay finished");
            }
            .instrument(tracing::info_span!("replay")),
        );
        Ok(ReceiverStream::new(rx))
    }

    /// `ReplayPolicy` for one event: its verified record, re-decided under the draft if any.
    async fn explain_event(
        &self,
        req: &pb::ReplayPolicyRequest,
    ) -> Result<ReceiverStream<ReplayResult>> {
        let invalid = || QueryError::Invalid("event: expected chain_id:seq".into());
        let (chain_id, seq) = req.event.rsplit_once(':').ok_or_else(invalid)?;
        let seq: u64 = seq.parse().map_err(|_| invalid())?;
        let chain_id = filter::text("event", chain_id)?;
        let draft = match req.policy_json.as_str() {
            "" => None,
            text => Some(draft_policy(text)?),
        };
        let not_found = || QueryError::NotFound(format!("{chain_id}:{seq} is not stored"));
        let envelope = self
            .store
            .envelope(&chain_id, seq)
            .await?
            .ok_or_else(not_found)?;
        let event = SignedEvent::decode(&envelope)
            .ok()
            .filter(|e| {
                ChainVerifier::new(self.keys.clone()).verify(e).status != EventStatus::Untrusted
            })
            .ok_or_else(|| {
                QueryError::Invalid(format!(
                    "{chain_id}:{seq} does not verify with the trusted keys"
                ))
            })?;
        let in_force = match req.in_force {
            true => Some(policy_in_force(&self.store, &self.keys, &event).await?),
            false => None,
        };
        let under = match &in_force {
            Some(found) => Some(Under {
                policy: &found.policy,
                unknown: &found.loaded.redacted_arguments,
            }),
            None => draft.as_ref().map(|policy| Under {
                policy,
                unknown: &[],
            }),
        };
        let mut explanation = crate::replay::explain(under, &event).ok_or_else(|| {
            QueryError::Invalid(format!("{chain_id}:{seq} records no tool call's ruling"))
        })?;
        if let Some(found) = in_force {
            explanation.policy_in_force = Some(found.loaded);
            explanation.policy_event = found.at;
        }
        let (tx, rx) = mpsc::channel(1);
        let message = pb::ReplayMessage {
            kind: Some(pb::replay_message::Kind::Explanation(explanation)),
        };
        let _ = tx.send(Ok(message)).await;
        Ok(ReceiverStream::new(rx))
    }

    /// The chain's persisted head, or (before the auditor persisted one) its newest stored event.
    async fn head(&self, chain_id: &str, newest_seq: u64) -> Result<pb::ChainHeadInfo> {
        if let Some(head) = self
            .store
            .chain_heads(Some(chain_id))
            .await?
            .into_iter()
            .next()
        {
            return Ok(head_info(head));
        }
        let row = self
            .store
            .chain_batch(chain_id, &Conditions::default(), (newest_seq, newest_seq))
            .await?
            .pop()
            .ok_or_else(|| QueryError::NotFound(format!("chain {chain_id:?} seq {newest_seq}")))?;
        Ok(pb::ChainHeadInfo {
            chain_id: row.chain_id,
            seq: row.seq,
            hash: hex::decode(&row.hash).unwrap_or_default(),
            key_id: row.key_id,
            last_event_unix_nanos: row.time_unix_nanos,
            last_checkpoint_unix_nanos: 0,
            ended: row.kind == "checkpoint" && row.checkpoint_reason == "shutdown",
        })
    }

    async fn list_chain_heads(&self) -> Result<pb::ListChainHeadsResponse> {
        let heads = self.store.chain_heads(None).await?;
        Ok(pb::ListChainHeadsResponse {
            heads: heads.into_iter().map(head_info).collect(),
        })
    }
}

#[tonic::async_trait]
impl AuditQuery for QueryService {
    async fn who_tried(
        &self,
        request: Request<pb::WhoTriedRequest>,
    ) -> std::result::Result<Response<pb::WhoTriedResponse>, Status> {
        self.timed("WhoTried", self.who_tried(request.into_inner()))
            .await
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> std::result::Result<Response<pb::SearchResponse>, Status> {
        self.timed("Search", self.search(request.into_inner()))
            .await
    }

    async fn summarize(
        &self,
        request: Request<pb::SummarizeRequest>,
    ) -> std::result::Result<Response<pb::SummarizeResponse>, Status> {
        self.timed("Summarize", self.summarize(request.into_inner()))
            .await
    }

    type ExportStream = ReceiverStream<std::result::Result<pb::ExportChunk, Status>>;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> std::result::Result<Response<Self::ExportStream>, Status> {
        self.timed("Export", self.export(request.into_inner()))
            .await
    }

    type FollowStream = ReceiverStream<FollowResult>;

    type ReplayPolicyStream = ReceiverStream<ReplayResult>;

    async fn replay_policy(
        &self,
        request: Request<pb::ReplayPolicyRequest>,
    ) -> std::result::Result<Response<Self::ReplayPolicyStream>, Status> {
        self.timed("ReplayPolicy", self.replay_policy(request.into_inner()))
            .await
    }

    async fn follow(
        &self,
        request: Request<pb::FollowRequest>,
    ) -> std::result::Result<Response<Self::FollowStream>, Status> {
        self.timed("Follow", self.follow(request.into_inner()))
            .await
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> std::result::Result<Response<pb::VerifyChainReport>, Status> {
        self.timed("VerifyChain", self.verify_chain(request.into_inner()))
            .await
    }

    async fn list_findings(
        &self,
        request: Request<pb::ListFindingsRequest>,
    ) -> std::result::Result<Response<pb::ListFindingsResponse>, Status> {
        self.timed("ListFindings", self.list_findings(request.into_inner()))
            .await
    }

    async fn list_chain_heads(
        &self,
        _request: Request<pb::ListChainHeadsRequest>,
    ) -> std::result::Result<Response<pb::ListChainHeadsResponse>, Status> {
        self.timed("ListChainHeads", self.list_chain_heads()).await
    }

    async fn list_witnessed_heads(
        &self,
        request: Request<pb::ListWitnessedHeadsRequest>,
    ) -> std::result::Result<Response<pb::ListWitnessedHeadsResponse>, Status> {
        let req = request.into_inner();
        self.timed("ListWitnessedHeads", self.list_witnessed_heads(req))
            .await
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::InclusionProofRequest>,
    ) -> std::result::Result<Response<pb::EventProof>, Status> {
        self.timed(
            "GetInclusionProof",
            self.inclusion_proof(request.into_inner()),
        )
        .await
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::ConsistencyProofRequest>,
    ) -> std::result::Result<Response<pb::ConsistencyProofResponse>, Status> {
        let req = request.into_inner();
        self.timed("GetConsistencyProof", self.consistency_proof(req))
            .await
    }
}

/// `value`, or `default` for 0; more than `max` is an error.
/// A draft policy from a request, or why it is invalid (line and column).
fn draft_policy(text: &str) -> Result<verdict_policy::Policy> {
    verdict_policy::Policy::from_text(text)
        .map_err(|e| QueryError::Invalid(format!("policy_json:{e}")))
}

pub(crate) fn bounded(field: &str, value: u32, default: u32, max: u32) -> Result<u32> {
    match value {
        0 => Ok(default.min(max)),
        v if v > max => Err(QueryError::Invalid(format!("{field}: at most {max}"))),
        v => Ok(v),
    }
}

fn parse_hash(hex_hash: &str) -> Option<verdict_proto::Hash> {
    hex::decode(hex_hash).ok()?.try_into().ok()
}

/// A stored decision (or any event) as a compliance answer.
fn attempt(row: &AttemptRow, outcome: &str) -> pb::Attempt {
    pb::Attempt {
        time_unix_nanos: row.time_unix_nanos,
        agent_id: row.agent_id.clone(),
        session: row.session.clone(),
        client_name: row.client_name.clone(),
        client_version: row.client_version.clone(),
        upstream: row.upstream.clone(),
        tool: row.tool.clone(),
        risk: pb::RiskClass::from_label(&row.risk).map_or(0, i32::from),
        targets: row
            .target_names
            .iter()
            .zip(&row.target_values)
            .map(|(name, value)| pb::Target {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        decision: pb::DecisionKind::from_label(&row.decision).map_or(0, i32::from),
        rule_id: row.rule_id.clone(),
        reason: row.reason.clone(),
        outcome: pb::OutcomeKind::from_label(outcome).map_or(0, i32::from),
        approval_id: row.approval_id.clone(),
        approver: row.approver.clone(),
        chain_id: row.chain_id.clone(),
        seq: row.seq,
        verification: row.verification.clone(),
    }
}

/// Folds per-decision group rows into one group per agent × target.
fn group(rows: Vec<crate::store::GroupRow>) -> Vec<pb::AttemptGroup> {
    let mut groups: BTreeMap<(String, String, String), pb::AttemptGroup> = BTreeMap::new();
    for row in rows {
        let key = (
            row.agent_id.clone(),
            row.target_name.clone(),
            row.target_value.clone(),
        );
        let group = groups.entry(key).or_insert_with(|| pb::AttemptGroup {
            agent_id: row.agent_id,
            target: Some(pb::Target {
                name: row.target_name,
                value: row.target_value,
            }),
            counts: Vec::new(),
            first_unix_nanos: row.first,
            last_unix_nanos: row.last,
        });
        group.first_unix_nanos = group.first_unix_nanos.min(row.first);
        group.last_unix_nanos = group.last_unix_nanos.max(row.last);
        group.counts.push(pb::DecisionCount {
            decision: pb::DecisionKind::from_label(&row.decision).map_or(0, i32::from),
            count: row.count,
        });
    }
    groups.into_values().collect()
}

fn head_info(head: ChainHeadRow) -> pb::ChainHeadInfo {
    pb::ChainHeadInfo {
        chain_id: head.chain_id,
        seq: head.seq,
        hash: hex::decode(&head.hash).unwrap_or_default(),
        key_id: head.key_id,
        last_event_unix_nanos: head.last_event_unix_nanos,
        last_checkpoint_unix_nanos: head.last_checkpoint_unix_nanos,
        ended: head.ended != 0,
    }
}
