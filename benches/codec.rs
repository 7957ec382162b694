//! Micro-benchmarks of the per-row hot path that does not need a server: encoding rows into
//! PostgreSQL's COPY text and binary formats (what the writer sends), and a watermark to
//! JSON (what a polling position stores per batch).
//!
//!     cargo bench --bench codec

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::sink::postgres::copy::{encode_binary, encode_text, BinType};
use sluice::value::{Row, Value};
use std::hint::black_box;

fn demo_rows(n: usize) -> Vec<Row> {
    let base = NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_micro_opt(0, 0, 0, 0)
        .unwrap();
    (0..n)
        .map(|i| {
            vec![
                Value::Text(format!("{:08x}-1234-4abc-9def-{:012x}", i, i * 7919)),
                Value::DateTime(base + chrono::Duration::microseconds(i as i64 * 997)),
            ]
        })
        .collect()
}

fn wide_rows(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| {
            vec![
                Value::Int(i as i64),
                Value::UInt(u64::MAX - i as u64),
                Value::Text("12345678901234567890.1234567890".into()),
                Value::Float(i as f64 / 3.0),
                Value::Text("tab\there, newline\nthere, back\\slash, émoji 😀".into()),
                Value::Bytes(vec![0, 1, 2, 254, 255, (i % 256) as u8]),
                Value::Null,
                Value::Bool(i % 2 == 0),
            ]
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy_text");
    for (name, rows) in [
        ("orders_10k", demo_rows(10_000)),
        ("wide_10k", wide_rows(10_000)),
    ] {
        g.throughput(Throughput::Elements(rows.len() as u64));
        let mut buf = Vec::with_capacity(1 << 20);
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                encode_text(black_box(&rows), &mut buf);
                black_box(buf.len())
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("copy_binary");
    let rows = demo_rows(10_000);
    let types = [BinType::Text, BinType::Timestamp];
    g.throughput(Throughput::Elements(rows.len() as u64));
    let mut buf = Vec::with_capacity(1 << 20);
    g.bench_function("orders_10k", |b| {
        b.iter(|| {
            buf.clear();
            assert!(encode_binary(black_box(&rows), &types, &mut buf));
            black_box(buf.len())
        })
    });
    g.finish();
}

fn watermark(c: &mut Criterion) {
    let key = demo_rows(1).pop().unwrap();
    c.bench_function("watermark_json", |b| {
        b.iter(|| serde_json::to_value(black_box(&key)).unwrap())
    });
}

criterion_group!(benches, encode, watermark);
criterion_main!(benches);
