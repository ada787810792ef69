//! The Merkle tree over a chain: what lets one event, or one later head, be proven against a
//! signed root with a handful of hashes instead of the whole chain.
//!
//! A hash chain proves order but proving that event 17 belongs to a chain of ten million means
//! handing over ten million hashes. A Merkle tree over the same event hashes (RFC 9162 §2.1,
//! the Certificate Transparency tree) proves inclusion and consistency in O(log n) hashes.
//! The leaves are the event hashes of one chain in seq order (leaf index = seq − 1), hashed with
//! domain separation so a leaf can never pass for an inner node:
//!
//! ```text
//! leaf(e)    = SHA-256(0x00 ‖ event_hash)
//! node(l, r) = SHA-256(0x01 ‖ l ‖ r)
//! MTH({})    = SHA-256("")
//! MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n
//! ```
//!
//! Both signers commit to it: the gateway's checkpoints carry `tree_size` and `tree_root`, the
//! auditor's witnessed heads carry the root it computed itself. Proof generation works over any
//! [`Subtrees`] source, so the query service can build proofs from stored chunk roots (see
//! [`Chunked`]) without reading a whole chain; verification needs nothing but the proof.

use crate::hash::Hash;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// `SHA-256(0x00 ‖ event_hash)`.
pub fn leaf_hash(event_hash: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(event_hash);
    hasher.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `n` (`n` ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is outside a tree of size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("a consistency proof needs 0 < first ({first}) ≤ second ({second})")]
    BadSizes { first: u64, second: u64 },
    #[error("the proof has the wrong number of hashes for these tree sizes")]
    WrongLength,
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("leaves of chunk {0} are needed but were not loaded")]
    ChunkNotLoaded(u64),
    #[error("the tree has only {have} of the {want} leaves asked for")]
    TooFewLeaves { have: u64, want: u64 },
}

/// Where proof generation gets the root of a subtree `D[start:end]` from.
pub trait Subtrees {
    fn mth(&self, start: u64, end: u64) -> Result<Hash, MerkleError>;
}

/// The event hashes themselves: every subtree root is computed from scratch.
impl Subtrees for [Hash] {
    fn mth(&self, start: u64, end: u64) -> Result<Hash, MerkleError> {
        let have = self.len() as u64;
        if end > have {
            return Err(MerkleError::TooFewLeaves { have, want: end });
        }
        Ok(mth_of(&self[start as usize..end as usize], |hashes| {
            leaf_hash(&hashes[0])
        }))
    }
}

/// The RFC 9162 MTH over `items`, with `base` giving the hash of a one-item range.
fn mth_of(items: &[Hash], base: impl Fn(&[Hash]) -> Hash + Copy) -> Hash {
    match items.len() {
        0 => empty_root(),
        1 => base(items),
        n => {
            let k = split(n as u64) as usize;
            node_hash(&mth_of(&items[..k], base), &mth_of(&items[k..], base))
        }
    }
}

/// The audit path of leaf `index` in the tree of the first `size` leaves (RFC 9162 §2.1.3.1).
pub fn inclusion_proof<S: Subtrees + ?Sized>(
    tree: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if index >= size {
        return Err(MerkleError::OutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(tree, index, 0, size, &mut proof)?;
    Ok(proof)
}

/// PATH(m, D[start:end]), appending leaf-to-root.
fn path<S: Subtrees + ?Sized>(
    tree: &S,
    m: u64,
    start: u64,
    end: u64,
    proof: &mut Vec<Hash>,
) -> Result<(), MerkleError> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(tree, m, start, start + k, proof)?;
        proof.push(tree.mth(start + k, end)?);
    } else {
        path(tree, m - k, start + k, end, proof)?;
        proof.push(tree.mth(start, start + k)?);
    }
    Ok(())
}

/// The proof that the tree of `first` leaves is a prefix of the tree of `second` leaves
/// (RFC 9162 §2.1.4.1).
pub fn consistency_proof<S: Subtrees + ?Sized>(
    tree: &S,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, MerkleError> {
    if first == 0 || first > second {
        return Err(MerkleError::BadSizes { first, second });
    }
    let mut proof = Vec::new();
    subproof(tree, first, 0, second, true, &mut proof)?;
    Ok(proof)
}

/// SUBPROOF(m, D[start:end], b).
fn subproof<S: Subtrees + ?Sized>(
    tree: &S,
    m: u64,
    start: u64,
    end: u64,
    whole: bool,
    proof: &mut Vec<Hash>,
) -> Result<(), MerkleError> {
    let n = end - start;
    if m == n {
        if !whole {
            proof.push(tree.mth(start, end)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(tree, m, start, start + k, whole, proof)?;
        proof.push(tree.mth(start + k, end)?);
    } else {
        subproof(tree, m - k, start + k, end, false, proof)?;
        proof.push(tree.mth(start, start + k)?);
    }
    Ok(())
}

/// Checks that `event_hash` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    event_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::OutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = leaf_hash(event_hash);
    for p in proof {
        if snode == 0 {
            return Err(MerkleError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                (fnode, snode) = (fnode >> 1, snode >> 1);
            }
        } else {
            r = node_hash(&r, p);
        }
        (fnode, snode) = (fnode >> 1, snode >> 1);
    }
    if snode != 0 {
        return Err(MerkleError::WrongLength);
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if first == 0 || first > second {
        return Err(MerkleError::BadSizes { first, second });
    }
    if first == second {
        return match (proof.is_empty(), first_root == second_root) {
            (false, _) => Err(MerkleError::WrongLength),
            (true, false) => Err(MerkleError::RootMismatch),
            (true, true) => Ok(()),
        };
    }
    let mut path = proof.iter();
    let seed = if first.is_power_of_two() {
        *first_root
    } else {
        *path.next().ok_or(MerkleError::WrongLength)?
    };
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        (fnode, snode) = (fnode >> 1, snode >> 1);
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in path {
        if snode == 0 {
            return Err(MerkleError::WrongLength);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                (fnode, snode) = (fnode >> 1, snode >> 1);
            }
        } else {
            sr = node_hash(&sr, c);
        }
        (fnode, snode) = (fnode >> 1, snode >> 1);
    }
    if snode != 0 {
        return Err(MerkleError::WrongLength);
    }
    if fr != *first_root || sr != *second_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first
/// (at most 64), enough to compute the current root and to keep appending in O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (leaves, root) of each perfect subtree, sizes strictly decreasing.
    peaks: Vec<(u64, Hash)>,
}

impl Frontier {
    /// Appends the leaf for `event_hash`.
    pub fn push(&mut self, event_hash: &Hash) {
        self.push_peak(1, leaf_hash(event_hash));
    }

    /// Appends a whole perfect subtree of `leaves` leaves (a power of two) with root `root`, e.g.
    /// a stored chunk. It must start where the tree ends and be aligned to its own size.
    pub fn push_subtree(&mut self, leaves: u64, root: Hash) -> Result<(), MerkleError> {
        let aligned = leaves.is_power_of_two() && self.size.is_multiple_of(leaves);
        if !aligned || self.peaks.last().is_some_and(|(last, _)| *last < leaves) {
            return Err(MerkleError::WrongLength);
        }
        self.push_peak(leaves, root);
        Ok(())
    }

    fn push_peak(&mut self, leaves: u64, root: Hash) {
        self.size += leaves;
        let mut peak = (leaves, root);
        while let Some(&(size, left)) = self.peaks.last() {
            if size != peak.0 {
                break;
            }
            self.peaks.pop();
            peak = (size * 2, node_hash(&left, &peak.1));
        }
        self.peaks.push(peak);
    }

    /// The frontier of a tree of `size` leaves from its peak roots, largest first (what
    /// [`Frontier::peaks`] returned): one peak per set bit of `size`.
    pub fn from_peaks(size: u64, peaks: &[Hash]) -> Result<Self, MerkleError> {
        let sizes = (0..64)
            .rev()
            .map(|bit| 1u64 << bit)
            .filter(|s| size & s != 0);
        if peaks.len() != size.count_ones() as usize {
            return Err(MerkleError::WrongLength);
        }
        Ok(Self {
            size,
            peaks: sizes.zip(peaks.iter().copied()).collect(),
        })
    }

    /// The roots of the perfect subtrees, largest first.
    pub fn peaks(&self) -> Vec<Hash> {
        self.peaks.iter().map(|(_, root)| *root).collect()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// MTH of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&(_, last)) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(last, |acc, (_, left)| node_hash(left, &acc))
    }
}

/// A tree stored as the roots of its complete chunks of `chunk` leaves (a power of two) plus
/// the leaves of the few chunks a proof descends into. Proofs over it equal proofs over the
/// full leaf list, while reading only O(n / chunk + chunk) hashes.
#[derive(Debug, Clone)]
pub struct Chunked {
    chunk: u64,
    roots: Vec<Hash>,
    leaves: BTreeMap<u64, Vec<Hash>>,
}

impl Chunked {
    /// `roots[i]` is the MTH of leaves `i*chunk .. (i+1)*chunk`.
    pub fn new(chunk: u64, roots: Vec<Hash>) -> Self {
        assert!(chunk.is_power_of_two(), "chunk size must be a power of two");
        Self {
            chunk,
            roots,
            leaves: BTreeMap::new(),
        }
    }

    /// Provides the event hashes of chunk `index` (all of them, or the first ones of a partial
    /// last chunk).
    pub fn add_leaves(&mut self, index: u64, event_hashes: Vec<Hash>) {
        self.leaves.insert(index, event_hashes);
    }

    /// The chunks whose leaves an inclusion proof of leaf `index` in a tree of `size` needs.
    pub fn chunks_for_inclusion(chunk: u64, index: u64, size: u64) -> Vec<u64> {
        dedup(vec![index / chunk, size.saturating_sub(1) / chunk])
    }

    /// The chunks whose leaves a consistency proof from `first` to `second` leaves needs.
    pub fn chunks_for_consistency(chunk: u64, first: u64, second: u64) -> Vec<u64> {
        let last = second.saturating_sub(1) / chunk;
        dedup(vec![
            first.saturating_sub(1) / chunk,
            (first / chunk).min(last),
            last,
        ])
    }

    fn chunk_mth(&self, start: u64, end: u64) -> Result<Hash, MerkleError> {
        let index = start / self.chunk;
        let leaves = self
            .leaves
            .get(&index)
            .ok_or(MerkleError::ChunkNotLoaded(index))?;
        let base = index * self.chunk;
        leaves.as_slice().mth(start - base, end - base)
    }
}

impl Subtrees for Chunked {
    fn mth(&self, start: u64, end: u64) -> Result<Hash, MerkleError> {
        let c = self.chunk;
        if start.is_multiple_of(c) && end.is_multiple_of(c) && end > start {
            let (first, last) = ((start / c) as usize, (end / c) as usize);
            let have = self.roots.len() as u64 * c;
            if last > self.roots.len() {
                return Err(MerkleError::TooFewLeaves { have, want: end });
            }
            return Ok(mth_of(&self.roots[first..last], |roots| roots[0]));
        }
        if start / c == (end - 1) / c {
            return self.chunk_mth(start, end);
        }
        let k = split(end - start);
        Ok(node_hash(
            &self.mth(start, start + k)?,
            &self.mth(start + k, end)?,
        ))
    }
}

fn dedup(mut chunks: Vec<u64>) -> Vec<u64> {
    chunks.sort_unstable();
    chunks.dedup();
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256;

    fn hashes(n: u64) -> Vec<Hash> {
        (0..n).map(|i| sha256(&i.to_be_bytes())).collect()
    }

    #[test]
    fn the_frontier_root_is_the_tree_root_at_every_size() {
        let all = hashes(300);
        let mut frontier = Frontier::default();
        assert_eq!(frontier.root(), empty_root());
        for (i, hash) in all.iter().enumerate() {
            frontier.push(hash);
            assert_eq!(
                frontier.root(),
                all.as_slice().mth(0, i as u64 + 1).unwrap()
            );
        }
    }

    #[test]
    fn chunked_proofs_equal_full_proofs_with_only_the_named_chunks_loaded() {
        let chunk = 4;
        let all = hashes(70);
        for size in 1..=70u64 {
            let complete = size / chunk;
            let roots: Vec<Hash> = (0..complete)
                .map(|i| all.as_slice().mth(i * chunk, (i + 1) * chunk).unwrap())
                .collect();
            let tree = |needed: Vec<u64>| {
                let mut tree = Chunked::new(chunk, roots.clone());
                for index in needed {
                    let end = ((index + 1) * chunk).min(size) as usize;
                    tree.add_leaves(index, all[(index * chunk) as usize..end].to_vec());
                }
                tree
            };
            for index in 0..size {
                let chunked = tree(Chunked::chunks_for_inclusion(chunk, index, size));
                assert_eq!(
                    inclusion_proof(&chunked, index, size).unwrap(),
                    inclusion_proof(all.as_slice(), index, size).unwrap()
                );
            }
            for first in 1..=size {
                let chunked = tree(Chunked::chunks_for_consistency(chunk, first, size));
                assert_eq!(
                    consistency_proof(&chunked, first, size).unwrap(),
                    consistency_proof(all.as_slice(), first, size).unwrap()
                );
            }
        }
    }

    #[test]
    fn a_frontier_restored_from_chunk_roots_continues_the_same_tree() {
        let all = hashes(21);
        let mut restored = Frontier::default();
        for i in 0..5 {
            let root = all.as_slice().mth(i * 4, i * 4 + 4).unwrap();
            restored.push_subtree(4, root).unwrap();
        }
        restored.push(&all[20]);
        let mut full = Frontier::default();
        all.iter().for_each(|h| full.push(h));
        assert_eq!(restored, full);
        assert!(restored.push_subtree(4, [0; 32]).is_err());
        assert_eq!(Frontier::from_peaks(21, &full.peaks()).unwrap(), full);
        assert!(Frontier::from_peaks(20, &full.peaks()).is_err());
    }
}
