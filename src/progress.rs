//! Progress of `run`: on a terminal, one bar per table (indicatif) with rows/s and ETA;
//! otherwise one plain log line per table every `SLUICE_PROGRESS_MS` (default 10,000 ms)
//! while rows move, and a last one when the run ends. With more than
//! [`PER_TABLE_UP_TO`] tables, one bar (or line) covers them all.
//!
//! The total is an estimate taken once at start: source rows minus target rows. Counting a
//! large table would cost a full index scan on each side while the load runs, so a side
//! holding at least 100,000 rows by its statistics (InnoDB's `TABLE_ROWS`,
//! PostgreSQL's `reltuples`) is taken at that estimate; smaller ones are counted. Rows that
//! are updates of replicated rows are counted as progress too, so a bar may end past 100%
//! (it grows to fit).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sea_orm::sqlx::{self, AssertSqlSafe, Row as _};
use tracing::info;

use crate::config::Settings;
use crate::conn::SharedHelpers;
use crate::sink::postgres::types::qualified;

/// Up to this many tables get a bar (or line) each; more share one.
pub const PER_TABLE_UP_TO: usize = 8;

/// What a bar or line reports on: one table, or all of them.
fn group_of(table: &str, many: bool) -> String {
    if many {
        "all tables".to_string()
    } else {
        table.to_string()
    }
}

/// Rows written per group, from the stats store.
fn done_by_group(tables: &[String], many: bool) -> BTreeMap<String, u64> {
    let snap = crate::telemetry::snapshot();
    let mut out = BTreeMap::new();
    for t in tables {
        if let Some(m) = snap.get(t) {
            *out.entry(group_of(t, many)).or_insert(0) += m.rows_written;
        }
    }
    out
}

/// Tables whose statistics say they hold fewer rows than this are counted exactly.
const COUNT_BELOW: i64 = crate::source::mysql::COUNT_BELOW as i64;

/// Rows still to replicate per table, estimated (`None` when a count failed).
async fn remaining(
    settings: &Settings,
    helpers: &SharedHelpers,
    tables: &[String],
) -> BTreeMap<String, Option<u64>> {
    let mut helpers = helpers.lock().await;
    let mut out = BTreeMap::new();
    let (Ok(my), Ok(pg)) = helpers
        .both(&settings.source.url, &settings.target.url)
        .await
    else {
        return out;
    };
    for t in tables {
        let src = crate::source::mysql::rows_for_progress(my, t)
            .await
            .map(|n| n as i64);
        // Where the table lands (`[[tables]] target`).
        let target = match settings.tables.iter().position(|c| c.name == *t) {
            Some(i) => crate::sink::postgres::map::TableMap::for_table(settings, i).qualified(t),
            None => qualified(&settings.target.schema, t),
        };
        let estimate: i64 = sqlx::query_scalar(
            "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = $1::text::regclass",
        )
        .bind(&target)
        .fetch_one(&mut *pg)
        .await
        .unwrap_or(0);
        let tgt = if estimate >= COUNT_BELOW {
            Some(estimate)
        } else {
            sqlx::query(AssertSqlSafe(format!("SELECT count(*) FROM {target}")))
                .fetch_one(&mut *pg)
                .await
                .ok()
                .and_then(|r| r.try_get::<i64, _>(0).ok())
        };
        out.insert(
            t.clone(),
            src.zip(tgt).map(|(s, t)| s.saturating_sub(t).max(0) as u64),
        );
    }
    out
}

/// Reports progress until the returned handle is dropped or aborted; call [`Reporter::finish`]
/// at the end of the run for the last line.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    state: std::sync::Arc<std::sync::Mutex<Option<Bars>>>,
    started: Instant,
    tables: Vec<String>,
    many: bool,
}

struct Bars {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
}

pub fn start(settings: &Settings, helpers: SharedHelpers, tables: Vec<String>) -> Reporter {
    let terminal = std::io::stderr().is_terminal();
    let every = Duration::from_millis(
        std::env::var("SLUICE_PROGRESS_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if terminal { 200 } else { 10_000 })
            .max(10),
    );
    let state = std::sync::Arc::new(std::sync::Mutex::new(None::<Bars>));
    let tables_for_finish = tables.clone();
    let settings = settings.clone();
    let st = state.clone();
    let started = Instant::now();
    let many = tables.len() > PER_TABLE_UP_TO;
    let task = actix_rt::spawn(async move {
        let mut totals: BTreeMap<String, Option<u64>> = BTreeMap::new();
        for (t, n) in remaining(&settings, &helpers, &tables).await {
            let e = totals.entry(group_of(&t, many)).or_insert(Some(0));
            *e = e.zip(n).map(|(a, b)| a + b);
        }
        let groups: Vec<String> = totals.keys().cloned().collect();
        if terminal {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {human_pos}/{human_len} rows  {per_sec}  ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            let bars = groups
                .iter()
                .map(|t| {
                    let b = multi.add(ProgressBar::new(
                        totals.get(t).copied().flatten().unwrap_or(0),
                    ));
                    b.set_style(style.clone());
                    b.set_prefix(t.clone());
                    (t.clone(), b)
                })
                .collect();
            *st.lock().unwrap_or_else(|p| p.into_inner()) = Some(Bars { multi, bars });
        }
        // Per table: rows at the last line, and when it was written.
        let mut last: BTreeMap<String, (u64, Instant)> = BTreeMap::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let done = done_by_group(&tables, many);
            if terminal {
                let guard = st.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(b) = guard.as_ref() {
                    for (g, bar) in &b.bars {
                        if let Some(&n) = done.get(g) {
                            if n > bar.length().unwrap_or(0) {
                                bar.set_length(n);
                            }
                            bar.set_position(n);
                        }
                    }
                }
                continue;
            }
            for (g, &n) in &done {
                let now = Instant::now();
                let (prev, at) = last.get(g).copied().unwrap_or((0, started));
                if n == prev {
                    continue;
                }
                last.insert(g.clone(), (n, now));
                line(g, n, prev, now - at, totals.get(g).copied().flatten());
            }
        }
    });
    Reporter {
        task,
        state,
        started,
        tables: tables_for_finish,
        many,
    }
}

fn line(table: &str, done: u64, prev: u64, over: Duration, total: Option<u64>) {
    let rate = (done - prev) as f64 / over.as_secs_f64().max(1e-3);
    match total {
        Some(total) if total > 0 => {
            // An estimate can fall short: the total grows to what was done.
            let total = total.max(done);
            let left = total.saturating_sub(done);
            let eta = if rate > 0.0 {
                format!("{:.0} s", left as f64 / rate)
            } else {
                "unknown".into()
            };
            info!(
                table,
                rows = done,
                of = total,
                rows_per_second = rate as u64,
                "progress: {done}/{total} rows ({:.0}%), {:.0} rows/s, ETA {eta}",
                (done as f64 * 100.0 / total as f64).min(100.0),
                rate
            );
        }
        _ => info!(
            table,
            rows = done,
            rows_per_second = rate as u64,
            "progress: {done} rows, {rate:.0} rows/s"
        ),
    }
}

impl Reporter {
    /// Stops reporting; bars are finished, and off a terminal one last line per table says
    /// what was done.
    pub fn finish(self) {
        self.task.abort();
        let bars = self.state.lock().unwrap_or_else(|p| p.into_inner()).take();
        let done = done_by_group(&self.tables, self.many);
        match bars {
            Some(b) => {
                for (g, bar) in &b.bars {
                    if let Some(&n) = done.get(g) {
                        bar.set_position(n);
                    }
                    bar.finish();
                }
                let _ = b.multi.clear();
            }
            None => {
                let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                for (g, &n) in &done {
                    info!(
                        table = %g,
                        rows = n,
                        "progress: {n} rows in {secs:.1} s ({:.0} rows/s), done",
                        n as f64 / secs
                    );
                }
            }
        }
    }
}
