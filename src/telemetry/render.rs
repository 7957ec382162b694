//! Every metric in the Prometheus text exposition format, at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::names;
use super::registry::{snapshot, BINLOG_GONE, EVENTS_SKIPPED, TRANSACTIONS};
use super::table::{Histogram, TableMetrics};

/// Prometheus label value escaping.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every metric in the Prometheus text exposition format (version 0.0.4).
pub fn render(now: DateTime<Utc>) -> String {
    let tables = snapshot();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        samples(&mut out);
    };
    type Get = fn(&TableMetrics) -> f64;
    let simple: [(&str, &str, &str, Get); 11] = [
        (
            names::ROWS_READ,
            "counter",
            "Rows read from the source.",
            |m| m.rows_read as f64,
        ),
        (
            names::ROWS_WRITTEN,
            "counter",
            "Rows committed to the target.",
            |m| m.rows_written as f64,
        ),
        (
            names::BATCHES,
            "counter",
            "Batches committed to the target.",
            |m| m.batches as f64,
        ),
        (
            names::MERGED_BATCHES,
            "counter",
            "Batches that went through the staging merge (rows already present).",
            |m| m.merged_batches as f64,
        ),
        (
            names::BAD_ROWS,
            "counter",
            "Rows refused because a value cannot be carried to the target.",
            |m| m.bad_rows as f64,
        ),
        (
            names::ROWS_FILTERED,
            "counter",
            "Source rows a [[tables]] where filter kept off the target (left out, or deleted there when an update moved them out).",
            |m| m.rows_filtered as f64,
        ),
        (
            names::DDL_LOCK_WAITS,
            "counter",
            "DDL statements on the target whose lock was not granted within [target] lock_timeout_ms (each is retried).",
            |m| m.ddl_lock_waits as f64,
        ),
        (
            names::FAILURES,
            "counter",
            "Permanent errors that stopped a table.",
            |m| m.failures as f64,
        ),
        (
            names::CHANNEL_ROWS,
            "gauge",
            "Rows waiting between the poller and the batcher.",
            |m| m.channel_rows as f64,
        ),
        (
            names::CHANNEL_BATCHES,
            "gauge",
            "Batches waiting between the batcher and the writer.",
            |m| m.channel_batches as f64,
        ),
        (
            names::TABLE_RUNNING,
            "gauge",
            "1 while the table's pipeline runs.",
            |m| f64::from(u8::from(m.running && m.failed.is_none())),
        ),
    ];
    for (name, kind, help, get) in simple {
        family(name, kind, help, &mut |o| {
            for (t, m) in &tables {
                let _ = writeln!(o, "{name}{{table=\"{}\"}} {}", label(t), get(m));
            }
        });
    }
    family(
        names::RETRIES,
        "counter",
        "Transient errors retried, by stage (poller, writer).",
        &mut |o| {
            for (t, m) in &tables {
                for stage in ["poller", "writer"] {
                    let n = m.retries.get(stage).copied().unwrap_or(0);
                    let _ = writeln!(
                        o,
                        "{}{{table=\"{}\",stage=\"{stage}\"}} {n}",
                        names::RETRIES,
                        label(t)
                    );
                }
            }
        },
    );
    for (name, help, get) in [
        (
            names::BATCH_ROWS,
            "Rows per committed batch.",
            (|m: &TableMetrics| &m.batch_rows) as fn(&TableMetrics) -> &Histogram,
        ),
        (
            names::WRITE_SECONDS,
            "Time to write and commit one batch: the attempt that succeeded (retries excluded).",
            |m: &TableMetrics| &m.write_seconds,
        ),
    ] {
        family(name, "histogram", help, &mut |o| {
            for (t, m) in &tables {
                let h = get(m);
                let t = label(t);
                for (b, c) in h.bounds.iter().zip(&h.counts) {
                    let _ = writeln!(o, "{name}_bucket{{table=\"{t}\",le=\"{b}\"}} {c}");
                }
                let _ = writeln!(o, "{name}_bucket{{table=\"{t}\",le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(o, "{name}_sum{{table=\"{t}\"}} {}", h.sum);
                let _ = writeln!(o, "{name}_count{{table=\"{t}\"}} {}", h.count);
            }
        });
    }
    family(
        names::CHANGES,
        "counter",
        "Changes committed to the target, by operation (upsert: polling cannot tell inserts from updates).",
        &mut |o| {
            for (t, m) in &tables {
                for (op, n) in m.ops.pairs() {
                    let _ = writeln!(
                        o,
                        "{}{{table=\"{}\",op=\"{op}\"}} {n}",
                        names::CHANGES,
                        label(t)
                    );
                }
            }
        },
    );
    family(
        names::TRANSACTIONS,
        "counter",
        "Whole source transactions read (binlog capture).",
        &mut |o| {
            let _ = writeln!(
                o,
                "{} {}",
                names::TRANSACTIONS,
                TRANSACTIONS.load(Ordering::Relaxed)
            );
        },
    );
    family(
        names::EVENTS_SKIPPED,
        "counter",
        "Binlog events binlog capture skipped, by type: a type it does not apply, or a rows event it cannot read of a table it does not replicate (one of a replicated table stops that table instead).",
        &mut |o| {
            let skipped = EVENTS_SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
            for (kind, n) in skipped.iter() {
                let _ = writeln!(
                    o,
                    "{}{{type=\"{}\"}} {n}",
                    names::EVENTS_SKIPPED,
                    label(kind)
                );
            }
        },
    );
    family(
        names::BINLOG_GONE,
        "counter",
        "Tables binlog capture copied again because the source had purged the binlog file their position was in ([source] on_binlog_gone = \"snapshot\").",
        &mut |o| {
            let copies = BINLOG_GONE.lock().unwrap_or_else(|p| p.into_inner());
            for (table, n) in copies.iter() {
                let _ = writeln!(o, "{}{{table=\"{}\"}} {n}", names::BINLOG_GONE, label(table));
            }
        },
    );
    family(
        names::ROWS_FUTURE,
        "gauge",
        "Polling with a time cursor: rows whose cursor value is ahead of the source's clock (they wait for it), counted every minute while caught up.",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(n) = m.rows_future {
                    let _ = writeln!(o, "{}{{table=\"{}\"}} {n}", names::ROWS_FUTURE, label(t));
                }
            }
        },
    );
    let verify: [(&str, &str, &str, Get); 3] = [
        (
            names::VERIFY_CHECKS,
            "counter",
            "Background comparisons of the table ([verify] interval_s).",
            |m| m.verify_checks as f64,
        ),
        (
            names::VERIFY_ROWS_COMPARED,
            "counter",
            "Source rows the background comparisons compared.",
            |m| m.verify_rows_compared as f64,
        ),
        (
            names::VERIFY_ROWS_REPAIRED,
            "counter",
            "Target rows the background comparisons repaired (upserted or deleted).",
            |m| m.verify_rows_repaired as f64,
        ),
    ];
    for (name, kind, help, get) in verify {
        family(name, kind, help, &mut |o| {
            for (t, m) in tables.iter().filter(|(_, m)| m.verify.is_some()) {
                let _ = writeln!(o, "{name}{{table=\"{}\"}} {}", label(t), get(m));
            }
        });
    }
    family(
        names::MEMBER_TABLES,
        "gauge",
        "Tables this process holds, labelled with its member id (host:pid) in the pipeline's group; 0 on a standby.",
        &mut |o| {
            let _ = writeln!(
                o,
                "{}{{member=\"{}\"}} {}",
                names::MEMBER_TABLES,
                label(&crate::config::owner_id()),
                tables.len()
            );
        },
    );
    family(
        names::VERIFY_ROWS_DIFFERING,
        "gauge",
        "Rows the last background comparison found missing on the target, extra on it, or different (before any repair).",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(r) = &m.verify {
                    for (kind, n) in [("missing", r.missing), ("extra", r.extra), ("different", r.different)] {
                        let _ = writeln!(
                            o,
                            "{}{{table=\"{}\",kind=\"{kind}\"}} {n}",
                            names::VERIFY_ROWS_DIFFERING,
                            label(t)
                        );
                    }
                }
            }
        },
    );
    family(
        names::VERIFY_LAST_CHECK,
        "gauge",
        "When the last background comparison of the table ended (Unix time).",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(at) = m.verify.as_ref().and_then(|r| r.checked_at) {
                    let _ = writeln!(
                        o,
                        "{}{{table=\"{}\"}} {}",
                        names::VERIFY_LAST_CHECK,
                        label(t),
                        at.timestamp_millis() as f64 / 1e3
                    );
                }
            }
        },
    );
    family(
        names::BYTES_BEHIND,
        "gauge",
        "Binlog capture: bytes of binary log between the table's committed position and the server's end.",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(b) = m.bytes_behind {
                    let _ = writeln!(o, "{}{{table=\"{}\"}} {b}", names::BYTES_BEHIND, label(t));
                }
            }
        },
    );
    family(
        names::WATERMARK_AGE,
        "gauge",
        "Seconds since the table's watermark last advanced (in this process).",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(c) = m.last_commit {
                    let age = ((now - c).num_milliseconds() as f64 / 1e3).max(0.0);
                    let _ = writeln!(
                        o,
                        "{}{{table=\"{}\"}} {age}",
                        names::WATERMARK_AGE,
                        label(t)
                    );
                }
            }
        },
    );
    family(
        names::LAG,
        "gauge",
        "0 when caught up, else now minus the cursor time of the newest row committed.",
        &mut |o| {
            for (t, m) in &tables {
                if let Some(lag) = m.lag_seconds(now) {
                    let _ = writeln!(o, "{}{{table=\"{}\"}} {lag}", names::LAG, label(t));
                }
            }
        },
    );
    out
}
