//! Signing, verification and chain-append throughput: the figures behind the gateway's event
//! path (sign per decision) and the auditor's ingest (batch verify per event).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use verdict_proto::{ChainVerifier, ChainWriter, SecretKey, TrustedKeys};

const BODY: &[u8] = &[0x5a; 300];

fn bench(c: &mut Criterion) {
    let key = SecretKey::from_seed(&[5; 32]);
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| b.iter(|| key.sign(&[7; 32])));
    let sig = key.sign(&[7; 32]);
    group.bench_function("verify_strict", |b| {
        b.iter(|| key.public().verify_strict(&[7; 32], &sig))
    });
    let mut writer = ChainWriter::new("bench", key.clone());
    group.bench_function("chain_append_300B", |b| {
        b.iter(|| writer.append(BODY.to_vec()))
    });
    group.finish();

    let mut writer = ChainWriter::new("bench", key.clone());
    let events: Vec<_> = (0..1024).map(|_| writer.append(BODY.to_vec())).collect();
    let mut keys = TrustedKeys::default();
    keys.add(key.public().clone(), None);
    let mut group = c.benchmark_group("verify_chain");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("batch_1024", |b| {
        b.iter_batched(
            || ChainVerifier::new(keys.clone()),
            |mut v| v.verify_batch(&events),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("one_by_one_1024", |b| {
        b.iter_batched(
            || ChainVerifier::new(keys.clone()),
            |mut v| events.iter().map(|e| v.verify(e)).count(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
