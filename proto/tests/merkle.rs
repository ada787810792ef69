//! The Merkle tree checked against a second implementation of RFC 9162 written here, straight
//! from the RFC's recursive definitions (§2.1.1 MTH, §2.1.3.1 PATH, §2.1.4.1 SUBPROOF), sharing no
//! code with `verdict_proto::merkle`; against the published Certificate Transparency roots; and
//! against `testdata/merkle.json`, golden vectors any other implementation can check itself
//! against. `VERDICT_WRITE_GOLDEN=1` rewrites that file after an intended contract change.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use verdict_proto::merkle::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion, Chunked, Frontier,
    Subtrees,
};
use verdict_proto::Hash;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/merkle.json");

/// The independent implementation: a tree over arbitrary leaf data, as the RFC defines it.
mod rfc {
    use super::*;

    fn sha(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        parts.iter().for_each(|p| h.update(p));
        h.finalize().into()
    }

    fn k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    pub fn mth(d: &[Vec<u8>]) -> Hash {
        match d.len() {
            0 => sha(&[]),
            1 => sha(&[&[0], &d[0]]),
            n => sha(&[&[1], &mth(&d[..k(n)]), &mth(&d[k(n)..])]),
        }
    }

    pub fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = k(n);
        if m < k {
            [path(m, &d[..k]), vec![mth(&d[k..])]].concat()
        } else {
            [path(m - k, &d[k..]), vec![mth(&d[..k])]].concat()
        }
    }

    pub fn proof(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
        subproof(m, d, true)
    }

    fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = k(n);
        if m <= k {
            [subproof(m, &d[..k], b), vec![mth(&d[k..])]].concat()
        } else {
            [subproof(m - k, &d[k..], false), vec![mth(&d[..k])]].concat()
        }
    }
}

/// Leaves as Verdict uses them: 32-byte event hashes.
fn event_hashes(n: usize) -> Vec<Hash> {
    (0..n as u64)
        .map(|i| Sha256::digest(i.to_be_bytes()).into())
        .collect()
}

fn as_data(hashes: &[Hash]) -> Vec<Vec<u8>> {
    hashes.iter().map(|h| h.to_vec()).collect()
}

/// The indices and prefix sizes checked for one tree size: all of them for small trees, the
/// edges and a spread of others for larger ones.
fn sample(size: usize) -> Vec<usize> {
    if size <= 40 {
        return (0..size).collect();
    }
    let mut picks = vec![0, 1, size / 3, size / 2, size - 2, size - 1];
    picks.extend((0..6).map(|i| (i * 7919 + size * 31) % size));
    picks.sort_unstable();
    picks.dedup();
    picks
}

fn check_tree(leaves: &[Hash], data: &[Vec<u8>]) {
    let size = leaves.len();
    let root = rfc::mth(data);
    let mut frontier = Frontier::default();
    leaves.iter().for_each(|h| frontier.push(h));
    assert_eq!(frontier.root(), root, "root at size {size}");
    for index in sample(size) {
        let ours = inclusion_proof(leaves, index as u64, size as u64).unwrap();
        assert_eq!(ours, rfc::path(index, data), "inclusion {index} of {size}");
        verify_inclusion(&leaves[index], index as u64, size as u64, &ours, &root).unwrap();
    }
    for first in sample(size).into_iter().map(|m| m + 1) {
        let ours = consistency_proof(leaves, first as u64, size as u64).unwrap();
        assert_eq!(ours, rfc::proof(first, data), "consistency {first}..{size}");
        let first_root = rfc::mth(&data[..first]);
        verify_consistency(first as u64, size as u64, &first_root, &root, &ours).unwrap();
    }
}

#[test]
fn proofs_equal_the_rfc_definitions_for_every_size_up_to_1000() {
    let leaves = event_hashes(1000);
    let data = as_data(&leaves);
    for size in 1..=1000 {
        check_tree(&leaves[..size], &data[..size]);
    }
}

#[test]
fn proofs_equal_the_rfc_definitions_for_large_trees_built_from_chunks() {
    let chunk = 1024u64;
    for size in [4096usize, 70_001, 131_073] {
        let leaves = event_hashes(size);
        let data = as_data(&leaves);
        let root = rfc::mth(&data);
        let roots: Vec<Hash> = (0..size as u64 / chunk)
            .map(|i| leaves.as_slice().mth(i * chunk, (i + 1) * chunk).unwrap())
            .collect();
        let load = |needed: Vec<u64>| {
            let mut tree = Chunked::new(chunk, roots.clone());
            for i in needed {
                let end = ((i + 1) * chunk).min(size as u64) as usize;
                tree.add_leaves(i, leaves[(i * chunk) as usize..end].to_vec());
            }
            tree
        };
        for index in [0, size / 2 + 5, size - 1] {
            let tree = load(Chunked::chunks_for_inclusion(
                chunk,
                index as u64,
                size as u64,
            ));
            let proof = inclusion_proof(&tree, index as u64, size as u64).unwrap();
            assert_eq!(proof, rfc::path(index, &data));
            verify_inclusion(&leaves[index], index as u64, size as u64, &proof, &root).unwrap();
        }
        for first in [1, 1025, size / 3, size - 1] {
            let tree = load(Chunked::chunks_for_consistency(
                chunk,
                first as u64,
                size as u64,
            ));
            let proof = consistency_proof(&tree, first as u64, size as u64).unwrap();
            assert_eq!(proof, rfc::proof(first, &data));
        }
    }
}

#[test]
fn the_certificate_transparency_reference_roots() {
    // The eight leaves and roots of the RFC 6962 reference tests (certificate-transparency's
    // merkle_tree_test), through the frontier fed the RFC leaf hashes of arbitrary data.
    let data: Vec<Vec<u8>> = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| hex::decode(h).unwrap())
    .collect();
    let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let mut frontier = Frontier::default();
    for (i, leaf) in data.iter().enumerate() {
        let leaf_hash: Hash = Sha256::new()
            .chain_update([0])
            .chain_update(leaf)
            .finalize()
            .into();
        frontier.push_subtree(1, leaf_hash).unwrap();
        assert_eq!(hex::encode(frontier.root()), roots[i], "size {}", i + 1);
        assert_eq!(hex::encode(rfc::mth(&data[..=i])), roots[i]);
    }
}

#[test]
fn a_proof_for_another_leaf_size_or_root_fails() {
    let leaves = event_hashes(100);
    let root = leaves.as_slice().mth(0, 100).unwrap();
    let proof = inclusion_proof(leaves.as_slice(), 42, 100).unwrap();
    verify_inclusion(&leaves[42], 42, 100, &proof, &root).unwrap();
    assert!(verify_inclusion(&leaves[43], 42, 100, &proof, &root).is_err());
    assert!(verify_inclusion(&leaves[42], 43, 100, &proof, &root).is_err());
    // A proof does not bind the size where the path has the same shape (99 and 100 leaves); the
    // signed head binds size and root together. Where the shape differs, it fails.
    assert!(verify_inclusion(&leaves[42], 42, 64, &proof, &root).is_err());
    assert!(verify_inclusion(&leaves[42], 42, 100, &proof[1..], &root).is_err());
    let mut bent = proof.clone();
    bent[3][0] ^= 1;
    assert!(verify_inclusion(&leaves[42], 42, 100, &bent, &root).is_err());
    let old_root = leaves.as_slice().mth(0, 60).unwrap();
    let consistency = consistency_proof(leaves.as_slice(), 60, 100).unwrap();
    verify_consistency(60, 100, &old_root, &root, &consistency).unwrap();
    // A rewritten history: the same sizes, one early leaf replaced.
    let mut forked = leaves.clone();
    forked[10][0] ^= 1;
    let forked_root = forked.as_slice().mth(0, 100).unwrap();
    assert!(verify_consistency(60, 100, &old_root, &forked_root, &consistency).is_err());
    assert!(verify_consistency(61, 100, &old_root, &root, &consistency).is_err());
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct GoldenTree {
    about: String,
    /// Leaf i is the event hash SHA-256(u64be(i)).
    event_hashes_hex: Vec<String>,
    /// roots_hex[n-1] is the root of the first n leaves.
    roots_hex: Vec<String>,
    inclusion: Vec<GoldenInclusion>,
    consistency: Vec<GoldenConsistency>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct GoldenInclusion {
    index: u64,
    size: u64,
    proof_hex: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct GoldenConsistency {
    first: u64,
    second: u64,
    proof_hex: Vec<String>,
}

fn hexes(hashes: Vec<Hash>) -> Vec<String> {
    hashes.into_iter().map(hex::encode).collect()
}

fn generate_golden() -> GoldenTree {
    let leaves = event_hashes(7);
    let data = as_data(&leaves);
    GoldenTree {
        about: "Verdict Merkle tree (RFC 9162 §2.1) over a chain's event hashes: leaf = SHA-256(0x00 ‖ event_hash), node = SHA-256(0x01 ‖ left ‖ right); leaf index = seq - 1; proofs leaf-to-root.".into(),
        event_hashes_hex: hexes(leaves.clone()),
        roots_hex: (1..=7).map(|n| hex::encode(rfc::mth(&data[..n]))).collect(),
        inclusion: [(0, 1), (0, 7), (3, 7), (6, 7), (4, 5)]
            .into_iter()
            .map(|(index, size)| GoldenInclusion {
                index,
                size,
                proof_hex: hexes(rfc::path(index as usize, &data[..size as usize])),
            })
            .collect(),
        consistency: [(1, 7), (3, 7), (4, 7), (6, 7), (2, 5)]
            .into_iter()
            .map(|(first, second)| GoldenConsistency {
                first,
                second,
                proof_hex: hexes(rfc::proof(first as usize, &data[..second as usize])),
            })
            .collect(),
    }
}

#[test]
fn golden_vectors_match_the_checked_in_file_and_verify() {
    let generated = generate_golden();
    if std::env::var_os("VERDICT_WRITE_GOLDEN").is_some() {
        std::fs::write(
            GOLDEN,
            serde_json::to_string_pretty(&generated).unwrap() + "\n",
        )
        .unwrap();
    }
    let golden: GoldenTree =
        serde_json::from_str(&std::fs::read_to_string(GOLDEN).unwrap()).unwrap();
    assert_eq!(generated, golden, "Merkle golden vectors changed");
    let hash = |h: &String| -> Hash { hex::decode(h).unwrap().try_into().unwrap() };
    let leaves: Vec<Hash> = golden.event_hashes_hex.iter().map(hash).collect();
    let root = |n: u64| hash(&golden.roots_hex[n as usize - 1]);
    for case in &golden.inclusion {
        let proof: Vec<Hash> = case.proof_hex.iter().map(hash).collect();
        let leaf = &leaves[case.index as usize];
        verify_inclusion(leaf, case.index, case.size, &proof, &root(case.size)).unwrap();
    }
    for case in &golden.consistency {
        let proof: Vec<Hash> = case.proof_hex.iter().map(hash).collect();
        let (first, second) = (root(case.first), root(case.second));
        verify_consistency(case.first, case.second, &first, &second, &proof).unwrap();
    }
}
