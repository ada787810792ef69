//! Proofs against the witness: the signed heads, inclusion proofs of one event, consistency
//! proofs between two heads (see `verdict/v1/witness.proto`).
//!
//! Proofs are built from the auditor's stored Merkle chunk roots plus the event hashes of the few
//! chunks a proof descends into ([`Chunked`]), so a proof in a chain of ten million events reads
//! about ten thousand chunk roots and two thousand hashes, not the chain. The service signs
//! nothing and is trusted for nothing: every answer carries the witness's signed head, and
//! `verdict verify --event` checks it offline.

use crate::api::{QueryError, QueryService};
use verdict_proto::merkle::{self, Chunked};
use verdict_proto::{pb, Hash, SignedEvent};
use verdict_schema::{WitnessedHeadRow, MERKLE_CHUNK};

const DEFAULT_HEADS: u32 = 100;
const MAX_HEADS: u32 = 10_000;

type Result<T> = std::result::Result<T, QueryError>;

impl QueryService {
    pub(crate) async fn list_witnessed_heads(
        &self,
        req: pb::ListWitnessedHeadsRequest,
    ) -> Result<pb::ListWitnessedHeadsResponse> {
        let limit = crate::api::bounded("limit", req.limit, DEFAULT_HEADS, MAX_HEADS)?;
        let chain = (!req.chain_id.is_empty()).then_some(req.chain_id.as_str());
        let rows = self.store().witnessed_heads(chain, limit).await?;
        Ok(pb::ListWitnessedHeadsResponse {
            heads: rows.iter().map(WitnessedHeadRow::to_signed).collect(),
        })
    }

    pub(crate) async fn inclusion_proof(
        &self,
        req: pb::InclusionProofRequest,
    ) -> Result<pb::EventProof> {
        let req = self.by_hash(req).await?;
        let head = self.head_at(&req.chain_id, req.tree_size).await?;
        if req.seq == 0 || req.seq > head.seq {
            return Err(QueryError::Invalid(format!(
                "seq: {} is not in the witnessed tree of {} events",
                req.seq, head.seq
            )));
        }
        let envelope = self
            .store()
            .envelope(&req.chain_id, req.seq)
            .await?
            .ok_or_else(|| {
                QueryError::NotFound(format!("{}:{} is not stored", req.chain_id, req.seq))
            })?;
        // At a forked seq two envelopes are stored: the proof must be for the one asked for.
        let stored_hash = SignedEvent::decode(&envelope).map(|e| hex::encode(e.hash));
        if !req.event_hash.is_empty()
            && stored_hash.as_deref().ok() != Some(req.event_hash.as_str())
        {
            return Err(QueryError::NotFound(format!(
                "{}:{} holds another event than {} (a fork): no proof for it",
                req.chain_id, req.seq, req.event_hash
            )));
        }
        let needed = Chunked::chunks_for_inclusion(MERKLE_CHUNK, req.seq - 1, head.seq);
        let tree = self.tree(&req.chain_id, head.seq, needed).await?;
        let path = merkle::inclusion_proof(&tree, req.seq - 1, head.seq).map_err(incomplete)?;
        let handovers = self
            .store()
            .earlier_keys_heads(&req.chain_id, head.seq, &head.key_id)
            .await?;
        Ok(pb::EventProof {
            envelope,
            inclusion: Some(pb::InclusionProof {
                chain_id: req.chain_id,
                seq: req.seq,
                tree_size: head.seq,
                path: path.iter().map(|h| h.to_vec()).collect(),
            }),
            head: Some(head.to_signed()),
            handovers: handovers.iter().map(WitnessedHeadRow::to_signed).collect(),
        })
    }

    pub(crate) async fn consistency_proof(
        &self,
        req: pb::ConsistencyProofRequest,
    ) -> Result<pb::ConsistencyProofResponse> {
        let invalid = || QueryError::Invalid("first: a witnessed head at or below second".into());
        if req.first == 0 {
            return Err(invalid());
        }
        let second = self.head_at(&req.chain_id, req.second).await?;
        let first = self.head_at(&req.chain_id, req.first).await?;
        if first.seq > second.seq {
            return Err(invalid());
        }
        let needed = Chunked::chunks_for_consistency(MERKLE_CHUNK, first.seq, second.seq);
        let tree = self.tree(&req.chain_id, second.seq, needed).await?;
        let path = merkle::consistency_proof(&tree, first.seq, second.seq).map_err(incomplete)?;
        Ok(pb::ConsistencyProofResponse {
            proof: Some(pb::ConsistencyProof {
                chain_id: req.chain_id,
                first: first.seq,
                second: second.seq,
                path: path.iter().map(|h| h.to_vec()).collect(),
            }),
            first_head: Some(first.to_signed()),
            second_head: Some(second.to_signed()),
        })
    }

    /// The request with `chain_id` and `seq` of the event its `event_hash` names, if it names one.
    async fn by_hash(
        &self,
        mut req: pb::InclusionProofRequest,
    ) -> Result<pb::InclusionProofRequest> {
        if req.event_hash.is_empty() {
            return Ok(req);
        }
        let hash = &req.event_hash;
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(QueryError::Invalid(
                "event_hash: expected 64 lowercase hex characters".into(),
            ));
        }
        let (chain_id, seq) = self
            .store()
            .event_position(hash)
            .await?
            .ok_or_else(|| QueryError::NotFound(format!("no stored event has hash {hash}")))?;
        if !req.chain_id.is_empty() && req.chain_id != chain_id || req.seq != 0 && req.seq != seq {
            return Err(QueryError::Invalid(format!(
                "event_hash names {chain_id}:{seq}, not the chain_id/seq also given"
            )));
        }
        (req.chain_id, req.seq) = (chain_id, seq);
        Ok(req)
    }

    async fn head_at(&self, chain_id: &str, seq: u64) -> Result<WitnessedHeadRow> {
        if chain_id.is_empty() {
            return Err(QueryError::Invalid("chain_id: required".into()));
        }
        self.store()
            .witnessed_head(chain_id, seq)
            .await?
            .ok_or_else(|| match seq {
                0 => QueryError::NotFound(format!("no witnessed head for chain {chain_id:?}")),
                _ => QueryError::NotFound(format!("no witnessed head at {chain_id}:{seq}")),
            })
    }

    /// The chunk roots of the first `size` events and the leaves of the `needed` chunks.
    async fn tree(&self, chain_id: &str, size: u64, needed: Vec<u64>) -> Result<Chunked> {
        let complete = size / MERKLE_CHUNK;
        let roots = hashes(self.store().chunk_roots(chain_id, complete).await?)?;
        if roots.len() as u64 != complete {
            return Err(QueryError::NotFound(format!(
                "the witness has stored {} of the {complete} Merkle chunks below {chain_id}:{size}",
                roots.len()
            )));
        }
        let mut tree = Chunked::new(MERKLE_CHUNK, roots);
        for chunk in needed {
            let first = chunk * MERKLE_CHUNK + 1;
            let last = ((chunk + 1) * MERKLE_CHUNK).min(size);
            let leaves = hashes(self.store().event_hashes(chain_id, first, last).await?)?;
            if leaves.len() as u64 != last + 1 - first {
                return Err(QueryError::NotFound(format!(
                    "events {first}..={last} of {chain_id} are not all stored"
                )));
            }
            tree.add_leaves(chunk, leaves);
        }
        Ok(tree)
    }
}

fn hashes(texts: Vec<String>) -> Result<Vec<Hash>> {
    texts
        .iter()
        .map(|t| {
            hex::decode(t)
                .ok()
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or_else(|| {
                    QueryError::Invalid(format!("stored hash {t:?} is not 32 bytes of hex"))
                })
        })
        .collect()
}

fn incomplete(error: merkle::MerkleError) -> QueryError {
    QueryError::NotFound(format!("the stored tree cannot prove this: {error}"))
}
