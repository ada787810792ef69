//! What the Merkle tree costs: appending a leaf (the gateway's and the witness's per-event cost,
//! to be compared with `event/sign` in the `crypto` bench), and building and verifying proofs in a
//! chain of 10 million events from its chunk roots, as the query service does after reading them.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use verdict_proto::merkle::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion, Chunked, Frontier,
    Subtrees,
};
use verdict_proto::Hash;

const EVENTS: u64 = 10_000_000;
const CHUNK: u64 = 1024;

fn leaf(i: u64) -> Hash {
    verdict_proto::hash::sha256(&i.to_be_bytes())
}

fn chunk_leaves(chunk: u64) -> Vec<Hash> {
    let end = ((chunk + 1) * CHUNK).min(EVENTS);
    (chunk * CHUNK..end).map(leaf).collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("merkle");
    group.throughput(Throughput::Elements(1));
    let mut frontier = Frontier::default();
    let hash = leaf(1);
    group.bench_function("frontier_push", |b| b.iter(|| frontier.push(&hash)));

    // The chunk roots of a 10M-event chain (computed once, outside the measurement).
    let roots: Vec<Hash> = (0..EVENTS / CHUNK)
        .map(|i| chunk_leaves(i).as_slice().mth(0, CHUNK).unwrap())
        .collect();
    let load = |needed: Vec<u64>| {
        let mut tree = Chunked::new(CHUNK, roots.clone());
        for chunk in needed {
            tree.add_leaves(chunk, chunk_leaves(chunk));
        }
        tree
    };
    let index = 4_711_000;
    let tree = load(Chunked::chunks_for_inclusion(CHUNK, index, EVENTS));
    let root = tree.mth(0, EVENTS).unwrap();
    group.bench_function("inclusion_proof_10M", |b| {
        b.iter(|| inclusion_proof(&tree, index, EVENTS).unwrap())
    });
    let proof = inclusion_proof(&tree, index, EVENTS).unwrap();
    group.bench_function("verify_inclusion_10M", |b| {
        b.iter(|| verify_inclusion(&leaf(index), index, EVENTS, &proof, &root).unwrap())
    });
    let first = 6_000_001;
    let tree = load(Chunked::chunks_for_consistency(CHUNK, first, EVENTS));
    let first_root = tree.mth(0, first).unwrap();
    group.bench_function("consistency_proof_10M", |b| {
        b.iter(|| consistency_proof(&tree, first, EVENTS).unwrap())
    });
    let proof = consistency_proof(&tree, first, EVENTS).unwrap();
    group.bench_function("verify_consistency_10M", |b| {
        b.iter(|| verify_consistency(first, EVENTS, &first_root, &root, &proof).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
