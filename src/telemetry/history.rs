//! Each table's lag over the last minutes, for the status page's chart: sampled every
//! [`STEP`] while the HTTP server runs ([`sample`]), the last [`KEEP`] samples kept.
//!
//! A sample is [`TableMetrics::delay_seconds`]: while a table keeps up, how late its newest
//! change was applied; while it has a backlog, how old the newest change applied is.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::TableMetrics;

/// Time between two samples.
pub const STEP: Duration = Duration::from_secs(2);
/// Samples kept per table: ten minutes.
pub const KEEP: usize = 300;

#[derive(Default)]
struct History {
    /// When the newest sample was taken.
    last: Option<DateTime<Utc>>,
    tables: BTreeMap<String, VecDeque<Option<f64>>>,
}

static HISTORY: LazyLock<Mutex<History>> = LazyLock::new(|| Mutex::new(History::default()));

/// One table's samples, oldest first, the newest taken at `until`, one every [`STEP`];
/// `None` where the table had no lag to tell (before its first commit, stopped).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LagHistory {
    pub until: Option<DateTime<Utc>>,
    pub step_seconds: u64,
    pub seconds: Vec<Option<f64>>,
}

/// Takes one sample of every table in `tables` (at `now`); forgets tables no longer there.
pub fn sample_from(tables: &BTreeMap<String, TableMetrics>, now: DateTime<Utc>) {
    let mut h = HISTORY.lock().unwrap_or_else(|p| p.into_inner());
    h.tables.retain(|t, _| tables.contains_key(t));
    for (t, m) in tables {
        let lag = if m.running {
            m.delay_seconds(now)
        } else {
            None
        };
        let samples = h.tables.entry(t.clone()).or_default();
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(lag);
    }
    h.last = Some(now);
}

/// Takes one sample of every registered table.
pub fn sample(now: DateTime<Utc>) {
    sample_from(&super::snapshot(), now);
}

/// `table`'s samples so far (none when it was never sampled).
pub fn lag_history(table: &str) -> LagHistory {
    let h = HISTORY.lock().unwrap_or_else(|p| p.into_inner());
    LagHistory {
        until: h.last,
        step_seconds: STEP.as_secs(),
        seconds: h
            .tables
            .get(table)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_samples_of_running_tables_only() {
        let now = Utc::now();
        let running = TableMetrics {
            running: true,
            newest: Some(now - chrono::Duration::milliseconds(1500)),
            last_commit: Some(now - chrono::Duration::milliseconds(1000)),
            caught_up: true,
            ..TableMetrics::default()
        };
        let t = "history_unit";
        let mut tables = BTreeMap::from([(t.to_string(), running.clone())]);
        for _ in 0..KEEP + 5 {
            sample_from(&tables, now);
        }
        let h = lag_history(t);
        assert_eq!(h.seconds.len(), KEEP);
        assert_eq!(
            h.seconds[0],
            Some(0.5),
            "caught up: how late the newest change came"
        );
        tables.get_mut(t).unwrap().running = false;
        sample_from(&tables, now);
        assert_eq!(lag_history(t).seconds.last(), Some(&None));
        sample_from(&BTreeMap::new(), now);
        assert!(
            lag_history(t).seconds.is_empty(),
            "a table gone is forgotten"
        );
    }
}
