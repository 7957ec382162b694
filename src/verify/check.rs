//! The background comparison `run` makes (`[verify] interval_s`): every table, once per
//! interval, in chunks, at a bounded read rate, beside replication and never in its way.
//!
//! # How
//! Rows are compared by their canonical text (the same MD5 row hashes as [`super`]), chunk
//! by chunk, in two passes per table:
//! 1. The source in primary-key order, [`chunk_rows`] keys at a time: each chunk's row hashes,
//!    and the same keys looked up on the target. A key the target lacks is a candidate
//!    *missing* row, a different hash a candidate *different* one.
//! 2. The target in primary-key order, looking its keys up on the source: a key the source
//!    lacks is a candidate *extra* row.
//!
//! Keys cross from one side to the other as canonical text, turned back into typed values
//! on the other side, so collations and orderings never have to agree.
//!
//! # In flight is not different
//! A candidate is looked at again before it is called anything:
//! - Polling: the committed watermark is read first, then the target row, then the source
//!   row with a flag saying whether its keyset is at or behind that watermark. A source row
//!   past the watermark is on its way (the poller reads it next), not missing or different.
//!   Behind the watermark the poller never looks again, so a difference there is drift: a
//!   row deleted on the source (extra), inserted or updated with a cursor value behind the
//!   watermark (missing, different), or a target row changed by hand.
//! - Binlog capture: the source's binlog position is read after the first look, and the
//!   check waits (at most [`SETTLE_WAIT`]) until the table's committed position has passed
//!   it, so every change made before the first look is applied; then target and source are
//!   read again. A row whose source hash changed in between is *unsettled* (looked at
//!   next time), never reported.
//!
//! # Repairs
//! With `[verify] repair = true`, each confirmed row is set to what the source holds now,
//! inside a transaction that holds the table's repair lock exclusively. Every batch the
//! writer applies holds the same lock shared (see [`crate::state::ownership::repair_lock`]), so a
//! repair sees the target at a committed position and reads the source after it: what it
//! writes is never older than what the target has, and the changes still to come (row
//! images, or newer polled rows) end at the source's state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use sea_orm::sqlx::{self, AssertSqlSafe, Connection, MySqlConnection, PgConnection, Row as _};
use tracing::{info, warn};

use super::{apply_repair, describe_key, Plan, TableReport, SHOWN_KEYS};
use crate::config::{Settings, TableSettings};
use crate::error::{Error, Result, Side};
use crate::model::TableModel;
use crate::shutdown::Shutdown;
use crate::source::capture::{self, Head, SourcePosition};
use crate::source::mysql::read::bind_value;
use crate::source::mysql::{self, ReadSpec};
use crate::source::poll::keyset::{self, Keyset};
use crate::source::TablePlan;
use crate::state::{self, ownership, StateKey};
use crate::telemetry::TableHandle;
use crate::value::{Row, Value};

/// How long a binlog check waits for the pipeline to apply what the source held at the
/// first look (idle tables' positions move every 10 s).
const SETTLE_WAIT: Duration = Duration::from_secs(30);

/// Keys per chunk: a tenth of a second's budget, within 100..=1000.
fn chunk_rows(max_rows_per_s: u64) -> usize {
    (max_rows_per_s / 10).clamp(100, 1000) as usize
}

/// One table the check looks at.
pub struct Checked {
    pub settings: TableSettings,
    pub handle: Arc<TableHandle>,
}

/// Starts the background verify when `[verify] interval_s` is set: every table of
/// `settings` (whose handles `handles` are, in the same order) is compared until `round`
/// ends. Spawned on the current actix System.
pub fn start(
    settings: &Settings,
    handles: impl Iterator<Item = Arc<TableHandle>>,
    round: &Shutdown,
) {
    if settings.verify.interval_s == 0 {
        return;
    }
    let checked = settings
        .tables
        .iter()
        .zip(handles)
        .map(|(t, handle)| Checked {
            settings: t.clone(),
            handle,
        })
        .collect();
    actix::spawn(run(settings.clone(), checked, round.clone()));
}

/// Compares every table of `tables` once per `[verify] interval_s` until `round` ends.
/// Failures are logged and retried at the next interval; they never stop replication.
pub async fn run(settings: Settings, tables: Vec<Checked>, round: Shutdown) {
    let every = Duration::from_secs(settings.verify.interval_s);
    let mut conns: Option<(MySqlConnection, PgConnection)> = None;
    let mut next = Instant::now() + every;
    // The last failure per table: said at warn once, then at debug while it repeats.
    let mut failed: HashMap<String, String> = HashMap::new();
    loop {
        if round
            .sleep(next.saturating_duration_since(Instant::now()))
            .await
        {
            return;
        }
        next = Instant::now() + every;
        for t in &tables {
            if round.requested() {
                return;
            }
            if t.handle.stopped() {
                continue;
            }
            let (my, pg) = match conns.as_mut() {
                Some(c) => c,
                None => match connect(&settings).await {
                    Ok(c) => conns.insert(c),
                    Err(e) => {
                        warn!(error = %e, "the background verify cannot connect; it tries again at the next interval");
                        break;
                    }
                },
            };
            let mut check = Check {
                settings: &settings,
                table: &t.settings,
                handle: &t.handle,
                my,
                pg,
                round: &round,
                budget: Budget::new(settings.verify.max_rows_per_s),
            };
            match check.table().await {
                Ok(Some(report)) => {
                    failed.remove(&t.settings.name);
                    record(&settings, t, pg, report).await;
                }
                Ok(None) => {}
                Err(Error::Shutdown) => return,
                Err(e) => {
                    let said = failed.insert(t.settings.name.clone(), e.to_string());
                    if said.as_deref() == Some(e.to_string().as_str()) {
                        tracing::debug!(table = %t.settings.name, error = %e, "the background verify of the table failed again");
                    } else {
                        warn!(table = %t.settings.name, error = %e, "the background verify of the table failed; it is compared again at each interval");
                    }
                    conns = None;
                }
            }
        }
    }
}

async fn connect(settings: &Settings) -> Result<(MySqlConnection, PgConnection)> {
    let my = mysql::connect(&settings.source.url).await?;
    let pg = crate::sink::postgres::connect(&settings.target.url, "verify").await?;
    Ok((my, pg))
}

/// Publishes a table's report: metrics and `/readyz`, its state row (for `status`), and a
/// warning when it differs.
async fn record(settings: &Settings, t: &Checked, pg: &mut PgConnection, report: TableReport) {
    let key = StateKey::new(&settings.pipeline_name, &report.table);
    if report.mismatches() > 0 {
        warn!(
            table = %report.table,
            missing = report.missing,
            extra = report.extra,
            different = report.different,
            repaired = report.upserted + report.deleted,
            "background verify: {}",
            summary(&report)
        );
    } else {
        info!(table = %report.table, rows = report.source_rows, in_flight = report.in_flight, seconds = format!("{:.2}", report.seconds), "background verify: equal");
    }
    let json = serde_json::to_value(&report).unwrap_or_default();
    let stored = sqlx::query(
        "UPDATE sluice.replication_state SET verify = $3 WHERE pipeline = $1 AND table_name = $2",
    )
    .bind(&key.pipeline)
    .bind(&key.table)
    .bind(json)
    .execute(&mut *pg)
    .await;
    if let Err(e) = stored {
        warn!(table = %report.table, error = %e, "cannot store the background verify's report");
    }
    t.handle.verified(report);
}

/// The read budget of one table's check: rows per second on each side.
struct Budget {
    per_s: f64,
    started: Instant,
    source: u64,
    target: u64,
}

impl Budget {
    fn new(per_s: u64) -> Self {
        Budget {
            per_s: per_s as f64,
            started: Instant::now(),
            source: 0,
            target: 0,
        }
    }

    /// Waits while the table has a backlog to catch up (replication comes first; the time
    /// waited does not count towards the budget), then until the rows read so far fit the
    /// budget. Err on shutdown.
    async fn pace(&mut self, round: &Shutdown, handle: &TableHandle) -> Result<()> {
        let paused = Instant::now();
        while !handle.caught_up() && !handle.stopped() {
            if round.sleep(Duration::from_millis(200)).await {
                return Err(Error::Shutdown);
            }
        }
        self.started += paused.elapsed();
        let due = Duration::from_secs_f64(self.source.max(self.target) as f64 / self.per_s);
        let wait = due.saturating_sub(self.started.elapsed());
        if !wait.is_zero() && round.sleep(wait).await {
            return Err(Error::Shutdown);
        }
        Ok(())
    }
}

/// A row that differed at first look.
struct Candidate {
    key: Vec<String>,
    /// Its source row hash at first look (`None`: no such row on the source).
    source: Option<String>,
}

/// What a second look found.
enum Verdict {
    Missing,
    Extra,
    Different,
    /// Equal now, or a change still on its way.
    InFlight,
    /// Changed on the source while looked at, or not yet applied: next time.
    Unsettled,
}

/// One table's check.
struct Check<'a> {
    settings: &'a Settings,
    table: &'a TableSettings,
    handle: &'a TableHandle,
    my: &'a mut MySqlConnection,
    pg: &'a mut PgConnection,
    round: &'a Shutdown,
    budget: Budget,
}

/// How the table's rows are told apart from changes in flight.
enum Mode {
    /// The polling keyset, to compare with the watermark.
    Poll(Keyset),
    Binlog(capture::Mode),
}

impl Check<'_> {
    /// Compares the table; `None` when it is not being replicated yet (no position, or in
    /// its initial load or snapshot).
    async fn table(&mut self) -> Result<Option<TableReport>> {
        let started = Instant::now();
        let key = StateKey::new(&self.settings.pipeline_name, &self.table.name);
        let plan = crate::source::plan_table(self.my, self.settings, self.table).await?;
        let Some(stored) = state::load(self.pg, &key).await? else {
            return Ok(None);
        };
        let (Some(position), None) = (stored.position, stored.deferred_key) else {
            return Ok(None);
        };
        let mode = match &plan {
            TablePlan::Poll(p) => {
                if SourcePosition::read(&position).is_none_or(|p| p.loading()) {
                    return Ok(None);
                }
                Mode::Poll(p.keyset.clone())
            }
            TablePlan::Binlog(_) => {
                if SourcePosition::read(&position).is_none_or(|p| p.loading()) {
                    return Ok(None);
                }
                Mode::Binlog(capture::Mode::of(self.settings))
            }
        };
        let spec = plan.spec();
        let t = &*spec.model;
        let p = Plan::checked(spec, self.table, self.settings)?;
        let mut report = TableReport {
            table: t.name.clone(),
            skipped_columns: p.skipped(t),
            ..Default::default()
        };
        let n = chunk_rows(self.settings.verify.max_rows_per_s);
        let mut confirmed: Vec<(Vec<String>, Verdict)> = Vec::new();
        // 1. The source's rows, looked up on the target.
        self.budget.pace(self.round, self.handle).await?;
        let mut after: Option<Vec<String>> = None;
        loop {
            let rows = self.source_chunk(&p, after.as_deref(), n).await?;
            report.source_rows += rows.len() as u64;
            report.chunks += 1;
            let keys: Vec<Vec<String>> = rows.iter().map(|(k, _)| k.clone()).collect();
            let found = self.target_hashes(t, &p, &keys).await?;
            let candidates: Vec<Candidate> = rows
                .iter()
                .enumerate()
                .filter(|(i, (_, h))| found.get(i) != Some(h))
                .map(|(_, (k, h))| Candidate {
                    key: k.clone(),
                    source: Some(h.clone()),
                })
                .collect();
            self.settle(t, &p, &mode, candidates, &mut report, &mut confirmed)
                .await?;
            self.budget.pace(self.round, self.handle).await?;
            if rows.len() < n {
                break;
            }
            after = rows.last().map(|(k, _)| k.clone());
        }
        // 2. The target's keys, looked up on the source.
        let mut after: Option<Vec<String>> = None;
        loop {
            let keys = self.target_keys(t, &p, after.as_deref(), n).await?;
            report.target_rows += keys.len() as u64;
            report.chunks += 1;
            let present = self.source_keys(&p, &keys).await?;
            let candidates: Vec<Candidate> = keys
                .iter()
                .filter(|k| !present.contains(*k))
                .map(|k| Candidate {
                    key: k.clone(),
                    source: None,
                })
                .collect();
            self.settle(t, &p, &mode, candidates, &mut report, &mut confirmed)
                .await?;
            self.budget.pace(self.round, self.handle).await?;
            if keys.len() < n {
                break;
            }
            after = keys.last().cloned();
        }
        for (key, verdict) in &confirmed {
            let (count, keys) = match verdict {
                Verdict::Missing => (&mut report.missing, &mut report.missing_keys),
                Verdict::Extra => (&mut report.extra, &mut report.extra_keys),
                Verdict::Different => (&mut report.different, &mut report.different_keys),
                Verdict::InFlight | Verdict::Unsettled => continue,
            };
            *count += 1;
            if keys.len() < SHOWN_KEYS {
                keys.push(describe_key(t, key));
            }
        }
        if self.settings.verify.repair && !confirmed.is_empty() {
            let keys: Vec<Vec<String>> = confirmed.into_iter().map(|(k, _)| k).collect();
            for part in keys.chunks(n) {
                let (upserted, deleted) = self.repair(spec, &p, &key, part).await?;
                report.upserted += upserted;
                report.deleted += deleted;
            }
            report.equal_after_repair = Some(true);
        }
        report.read_source = self.budget.source;
        report.read_target = self.budget.target;
        report.seconds = started.elapsed().as_secs_f64();
        report.checked_at = Some(chrono::Utc::now());
        Ok(Some(report))
    }

    /// Source rows after `after` in key order: (key texts, row hash).
    async fn source_chunk(
        &mut self,
        p: &Plan,
        after: Option<&[String]>,
        n: usize,
    ) -> Result<Vec<(Vec<String>, String)>> {
        let (cond, binds) = match after {
            Some(_) => {
                let (c, b) = keyset::condition(&p.my_pk, &p.my_key_param, true, true);
                (format!("WHERE {c}"), b)
            }
            None => (String::new(), Vec::new()),
        };
        let sql = format!(
            "SELECT {}, MD5({}) FROM {} {cond} ORDER BY {} LIMIT {n}",
            p.my_key_text.join(", "),
            p.my_row,
            p.my_from,
            p.my_pk.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for i in binds {
            q = q.bind(after.expect("bound only after a key")[i].clone());
        }
        let width = p.my_pk.len();
        let rows = q
            .fetch_all(&mut *self.my)
            .await
            .map_err(|e| Error::db(Side::Source, "reading a chunk of row hashes", &e))?;
        self.budget.source += rows.len() as u64;
        rows.iter()
            .map(|r| {
                Ok((
                    texts(r, 0, width, Side::Source)?,
                    text(r, width, Side::Source)?,
                ))
            })
            .collect()
    }

    /// Row hashes of the target rows keyed `keys`, by the key's index in `keys`.
    async fn target_hashes(
        &mut self,
        t: &TableModel,
        p: &Plan,
        keys: &[Vec<String>],
    ) -> Result<HashMap<usize, String>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let width = p.pg_pk.len();
        let arrays: Vec<String> = (1..=width).map(|j| format!("${j}::text[]")).collect();
        let names: Vec<String> = (0..width).map(|j| format!("sluice_k{j}")).collect();
        let on: Vec<String> = t
            .primary_key
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                format!(
                    "{} = {}",
                    p.pg_pk[j],
                    super::pg_from_text(t, i, &format!("sluice_keys.{}", names[j]))
                )
            })
            .collect();
        let sql = format!(
            "SELECT sluice_keys.sluice_i, md5({}) FROM {} JOIN unnest({}) WITH ORDINALITY AS sluice_keys({}, sluice_i) ON {}",
            p.pg_row,
            p.pg_from,
            arrays.join(", "),
            names.join(", "),
            on.join(" AND ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for j in 0..width {
            q = q.bind(keys.iter().map(|k| k[j].clone()).collect::<Vec<_>>());
        }
        let mut out = HashMap::with_capacity(keys.len());
        let mut stream = q.fetch(&mut *self.pg);
        while let Some(r) = stream
            .try_next()
            .await
            .map_err(|e| Error::db(Side::Target, "looking rows up by key", &e))?
        {
            let i: i64 = r
                .try_get(0)
                .map_err(|e| Error::db(Side::Target, "reading a row hash", &e))?;
            out.insert(i as usize - 1, text(&r, 1, Side::Target)?);
        }
        drop(stream);
        self.budget.target += out.len() as u64;
        Ok(out)
    }

    /// Target keys after `after` in the target's key order.
    async fn target_keys(
        &mut self,
        t: &TableModel,
        p: &Plan,
        after: Option<&[String]>,
        n: usize,
    ) -> Result<Vec<Vec<String>>> {
        let cond = match after {
            Some(_) => {
                let params: Vec<String> = t
                    .primary_key
                    .iter()
                    .enumerate()
                    .map(|(j, &i)| super::pg_from_text(t, i, &format!("${}", j + 1)))
                    .collect();
                format!("WHERE ({}) > ({})", p.pg_pk.join(", "), params.join(", "))
            }
            None => String::new(),
        };
        let sql = format!(
            "SELECT {} FROM {} {cond} ORDER BY {} LIMIT {n}",
            p.pg_key_text.join(", "),
            p.pg_from,
            p.pg_pk.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for v in after.unwrap_or_default() {
            q = q.bind(v.clone());
        }
        let rows = q
            .fetch_all(&mut *self.pg)
            .await
            .map_err(|e| Error::db(Side::Target, "reading a chunk of keys", &e))?;
        self.budget.target += rows.len() as u64;
        let width = p.pg_pk.len();
        rows.iter()
            .map(|r| texts(r, 0, width, Side::Target))
            .collect()
    }

    /// `WHERE` condition selecting the source rows keyed `keys` (binds: every key's texts
    /// in order).
    fn source_key_in(p: &Plan, keys: &[Vec<String>]) -> String {
        if p.my_pk.len() == 1 {
            let ph = vec![p.my_key_param[0].as_str(); keys.len()].join(", ");
            return format!("{} IN ({ph})", p.my_pk[0]);
        }
        let one: Vec<String> = p
            .my_pk
            .iter()
            .zip(&p.my_key_param)
            .map(|(c, ph)| format!("{c} = {ph}"))
            .collect();
        let one = format!("({})", one.join(" AND "));
        vec![one.as_str(); keys.len()].join(" OR ")
    }

    /// Which of `keys` the source holds.
    async fn source_keys(
        &mut self,
        p: &Plan,
        keys: &[Vec<String>],
    ) -> Result<HashSet<Vec<String>>> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let rows = source_by_keys(
            self.my,
            &mut self.budget,
            &p.my_key_text.join(", "),
            p,
            keys,
            &[],
            "looking keys up",
        )
        .await?;
        let width = p.my_pk.len();
        rows.iter()
            .map(|r| texts(r, 0, width, Side::Source))
            .collect()
    }

    /// The source rows keyed `keys` now: key → (row hash, at or behind `settled`, the
    /// polling watermark; always true without one).
    async fn source_hashes(
        &mut self,
        p: &Plan,
        keys: &[Vec<String>],
        settled: Option<(&TableModel, &Keyset, &[Value])>,
    ) -> Result<HashMap<Vec<String>, (String, bool)>> {
        let (flag, values) = match settled {
            Some((t, ks, values)) => {
                let cols: Vec<String> = ks
                    .columns
                    .iter()
                    .map(|&i| mysql::quote(&t.columns[i].name))
                    .collect();
                let phs = vec!["?".to_string(); cols.len()];
                let (cond, binds) = keyset::condition(&cols, &phs, false, false);
                (
                    format!("({cond})"),
                    binds.into_iter().map(|i| values[i].clone()).collect(),
                )
            }
            None => ("1".to_string(), Vec::new()),
        };
        let select = format!("{}, MD5({}), {flag}", p.my_key_text.join(", "), p.my_row);
        let rows = source_by_keys(
            self.my,
            &mut self.budget,
            &select,
            p,
            keys,
            &values,
            "reading rows again",
        )
        .await?;
        let width = p.my_pk.len();
        rows.iter()
            .map(|r| {
                let settled: Option<i64> = r
                    .try_get(width + 1)
                    .map_err(|e| Error::db(Side::Source, "reading a row hash", &e))?;
                Ok((
                    texts(r, 0, width, Side::Source)?,
                    (text(r, width, Side::Source)?, settled == Some(1)),
                ))
            })
            .collect()
    }

    /// Looks at `candidates` again (see the module doc) and adds the verdicts to `out`.
    async fn settle(
        &mut self,
        t: &TableModel,
        p: &Plan,
        mode: &Mode,
        candidates: Vec<Candidate>,
        report: &mut TableReport,
        out: &mut Vec<(Vec<String>, Verdict)>,
    ) -> Result<()> {
        if candidates.is_empty() {
            return Ok(());
        }
        let key = StateKey::new(&self.settings.pipeline_name, &t.name);
        let watermark = match mode {
            Mode::Poll(ks) => {
                let position = state::load(self.pg, &key)
                    .await?
                    .and_then(|s| s.position)
                    .ok_or_else(|| Error::Other("the table's position is gone".into()))?;
                Some(ks.decode(t, &position)?)
            }
            Mode::Binlog(capture) => {
                let head = capture.head(self.my).await?.ok_or_else(|| {
                    Error::Other("binlog capture: the source has no binary log head".into())
                })?;
                if !self.applied_through(&key, &head).await? {
                    report.unsettled += candidates.len() as u64;
                    return Ok(());
                }
                None
            }
        };
        let keys: Vec<Vec<String>> = candidates.iter().map(|c| c.key.clone()).collect();
        let target = self.target_hashes(t, p, &keys).await?;
        let settled = match (mode, &watermark) {
            (Mode::Poll(ks), Some(w)) => Some((t, ks, w.as_slice())),
            _ => None,
        };
        let source = self.source_hashes(p, &keys, settled).await?;
        for (i, c) in candidates.into_iter().enumerate() {
            let now = source.get(&c.key);
            let verdict = match mode {
                Mode::Poll(_) => match (now, target.get(&i)) {
                    (Some((_, false)), _) => Verdict::InFlight,
                    (None, None) => Verdict::InFlight,
                    (None, Some(_)) => Verdict::Extra,
                    (Some(_), None) => Verdict::Missing,
                    (Some((h, true)), Some(th)) if h != th => Verdict::Different,
                    (Some(_), Some(_)) => Verdict::InFlight,
                },
                Mode::Binlog(_) if now.map(|(h, _)| h) != c.source.as_ref() => Verdict::Unsettled,
                Mode::Binlog(_) => match (now, target.get(&i)) {
                    (None, Some(_)) => Verdict::Extra,
                    (Some(_), None) => Verdict::Missing,
                    (Some((h, _)), Some(th)) if h != th => Verdict::Different,
                    _ => Verdict::InFlight,
                },
            };
            match verdict {
                Verdict::InFlight => report.in_flight += 1,
                Verdict::Unsettled => report.unsettled += 1,
                _ => out.push((c.key, verdict)),
            }
        }
        Ok(())
    }

    /// Binlog capture: waits until the table's committed position is at or past `head`.
    /// False when it is not within [`SETTLE_WAIT`].
    async fn applied_through(&mut self, key: &StateKey, head: &Head) -> Result<bool> {
        let until = Instant::now() + SETTLE_WAIT;
        loop {
            let at = state::load(self.pg, key).await?.and_then(|s| s.position);
            if at
                .as_ref()
                .and_then(SourcePosition::read)
                .is_some_and(|p| p.covers(head))
            {
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            if self.round.sleep(Duration::from_millis(200)).await {
                return Err(Error::Shutdown);
            }
        }
    }

    /// Sets the target rows keyed `keys` to what the source holds now (deleting those it
    /// does not), under the table's repair lock. Returns (upserted, deleted).
    async fn repair(
        &mut self,
        spec: &ReadSpec,
        p: &Plan,
        key: &StateKey,
        keys: &[Vec<String>],
    ) -> Result<(u64, u64)> {
        let err = |ctx: &'static str| move |e: sqlx::Error| Error::db(Side::Target, ctx, &e);
        let mut tx = self.pg.begin().await.map_err(err("beginning a repair"))?;
        // The writer's batches wait (a repair is a few hundred rows at most); a batch that
        // is slow to finish makes the repair give up until the next interval instead.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '10s'; SELECT {}",
            ownership::repair_lock(key, false)
        )))
        .execute(&mut *tx)
        .await
        .map_err(err("taking the table's repair lock"))?;
        let select = format!("{}, {}", spec.select_list(), p.my_key_text.join(", "));
        let found = source_by_keys(
            self.my,
            &mut self.budget,
            &select,
            p,
            keys,
            &[],
            "reading rows to repair",
        )
        .await?;
        let width = spec.select_width();
        let mut rows: Vec<Row> = Vec::with_capacity(found.len());
        let mut present = HashSet::with_capacity(found.len());
        for r in &found {
            rows.push(spec.decode_row(r)?);
            present.insert(texts(r, width, p.my_pk.len(), Side::Source)?);
        }
        let gone: Vec<Vec<String>> = keys
            .iter()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        apply_repair(&spec.model, p, &mut tx, &rows, &gone).await?;
        tx.commit().await.map_err(err("committing a repair"))?;
        Ok((rows.len() as u64, gone.len() as u64))
    }
}

/// `SELECT select FROM <table> WHERE <key is one of keys>`, binding `first` (the select
/// list's own placeholders) then the keys.
async fn source_by_keys(
    my: &mut MySqlConnection,
    budget: &mut Budget,
    select: &str,
    p: &Plan,
    keys: &[Vec<String>],
    first: &[Value],
    what: &'static str,
) -> Result<Vec<sqlx::mysql::MySqlRow>> {
    let sql = format!(
        "SELECT {select} FROM {} WHERE {}",
        p.my_from,
        Check::source_key_in(p, keys)
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for v in first {
        q = bind_value(q, v);
    }
    for v in keys.iter().flatten() {
        q = q.bind(v.clone());
    }
    let rows = q
        .fetch_all(&mut *my)
        .await
        .map_err(|e| Error::db(Side::Source, what, &e))?;
    budget.source += rows.len() as u64;
    Ok(rows)
}

/// One line on a background report: when, and what it found.
pub fn summary(r: &TableReport) -> String {
    let when = r.checked_at.map_or("at an unknown time".to_string(), |at| {
        format!("{}", at.format("%Y-%m-%d %H:%M:%S UTC"))
    });
    let found = if r.mismatches() == 0 {
        format!("equal ({} rows compared", r.source_rows)
    } else {
        let mut parts = Vec::new();
        for (what, n, keys) in [
            ("missing on the target", r.missing, &r.missing_keys),
            ("extra on the target", r.extra, &r.extra_keys),
            ("different", r.different, &r.different_keys),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what} ({})", keys.join("; ")));
            }
        }
        let repaired = match r.equal_after_repair {
            Some(true) => format!(
                "; repaired: {} upserted, {} deleted",
                r.upserted, r.deleted
            ),
            _ => "; NOT repaired (`[verify] repair = true`, or stop `run` and `sluice verify --repair`)".into(),
        };
        format!(
            "DIFFERENT: {}{repaired} ({} rows compared",
            parts.join(", "),
            r.source_rows
        )
    };
    format!(
        "{when}: {found}, {} in flight, {:.1} s)",
        r.in_flight, r.seconds
    )
}

/// Column `i` of a result row as text.
fn text<R: sqlx::Row>(r: &R, i: usize, side: Side) -> Result<String>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    r.try_get(i)
        .map_err(|e| Error::db(side, "reading a canonical text", &e))
}

/// Columns `from..from + n` of a result row as texts.
fn texts<R: sqlx::Row>(r: &R, from: usize, n: usize, side: Side) -> Result<Vec<String>>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    (from..from + n).map(|i| text(r, i, side)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_budget() {
        assert_eq!(chunk_rows(200_000), 1000);
        assert_eq!(chunk_rows(2_000), 200);
        assert_eq!(chunk_rows(100), 100);
    }
}
