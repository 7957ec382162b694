//! Metrics: every name in one place ([`names`]), a small in-process registry fed by the
//! pipeline, and its rendering in the Prometheus text format (served at `/metrics` by
//! the HTTP surface).
//!
//! The registry is process-wide: each table has one [`TableHandle`], which its stages
//! update directly as they work; metrics, `/readyz`, progress and the run's summary read it.
//! Labels are low-cardinality: `table`, and `stage` on retries. Beside it, [`committed_here`]:
//! each table's last position committed by this process (what binlog capture need not have
//! the server check when it resumes there).
//!
//! **Replication lag** (`sluice_replication_lag_seconds{table}`), at scrape time: 0 when the
//! poller's last read found nothing more to read and every row read has been committed (as a
//! written row or a dead letter);
//! otherwise now minus the cursor time of the newest row committed (the first cursor
//! column, when it is a DATETIME or TIMESTAMP read as UTC). Absent for tables with a
//! non-time cursor, and before the first commit while still catching up.

mod committed;
pub mod history;
pub mod names;
mod registry;
mod render;
mod table;

pub use committed::committed_here;
pub use registry::{
    binlog_event_skipped, binlog_gone_copy, keep_only, register, set_standby, snapshot, standby,
    transactions_applied,
};
pub use render::render;
pub use table::{Commit, Histogram, OpCounts, TableHandle, TableMetrics, TableReport};

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::error::Error;

    #[test]
    fn renders_counters_histograms_and_lag() {
        let t = "telemetry_unit \"q\"";
        let h = register(t);
        h.rows_read(11, false);
        let newest = Utc::now() - chrono::Duration::seconds(5);
        h.committed(Commit {
            rows: 10,
            merged: false,
            dead_lettered: 1,
            filtered: 0,
            newest: Some(newest),
            committed_at: Utc::now(),
            took: Duration::from_millis(7),
            ops: OpCounts {
                upsert: 10,
                ..OpCounts::default()
            },
            position: None,
        });
        assert!(binlog_event_skipped("telemetry_unit"));
        assert!(!binlog_event_skipped("telemetry_unit"));
        let text = render(Utc::now());
        assert!(text.contains("sluice_binlog_events_skipped_total{type=\"telemetry_unit\"} 2"));
        assert!(text.contains("sluice_rows_written_total{table=\"telemetry_unit \\\"q\\\"\"} 10"));
        assert!(text.contains("sluice_bad_rows_total{table=\"telemetry_unit \\\"q\\\"\"} 1"));
        assert!(text
            .contains("sluice_batch_rows_bucket{table=\"telemetry_unit \\\"q\\\"\",le=\"100\"} 1"));
        assert!(text
            .contains("sluice_write_duration_seconds_count{table=\"telemetry_unit \\\"q\\\"\"} 1"));
        assert!(text
            .contains("sluice_changes_total{table=\"telemetry_unit \\\"q\\\"\",op=\"upsert\"} 10"));
        let lag = h.snapshot().lag_seconds(Utc::now()).unwrap();
        assert!((4.0..10.0).contains(&lag), "{lag}");
        // Caught up with everything read committed (a dead letter counts): 0.
        h.rows_read(0, true);
        assert_eq!(h.snapshot().lag_seconds(Utc::now()), Some(0.0));
    }

    #[test]
    fn a_failure_stops_the_table_once() {
        let h = register("telemetry_fail");
        assert!(!h.stopped());
        assert!(h.fail(Arc::new(Error::Other("boom".into()))));
        assert!(!h.fail(Arc::new(Error::Other("again".into()))));
        let m = h.snapshot();
        assert!(h.stopped() && !m.running && m.failures == 1);
        assert_eq!(m.last_error.as_deref(), Some("boom"));
    }
}
