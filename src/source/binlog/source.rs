//! The binlog source: snapshots first (the tables without a position), then the stream from
//! the oldest position of all tables.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::info;

use super::snapshot::{Snapshot, TableCopy};
use super::stream::Stream;
use super::table::BTable;
use super::txn::Out;
use super::{BinlogPos, SnapshotProgress, Stored};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::model::{Change, ChangeSet};
use crate::source::mysql::{self, Flavor};
use crate::source::poll::PollOptions;
use crate::source::{After, OpenTable, Read, Source, Step, TablePlan, Txn};
use crate::value::row_bytes;

/// How often idle tables' positions are moved up to the stream's, so a restart never reads
/// far back for a table that rarely changes.
const POSITIONS_EVERY: Duration = Duration::from_secs(10);

enum Phase {
    Start,
    Snapshot(Snapshot),
    Stream(Box<Stream>),
    Done,
}

pub struct BinlogSource {
    url: String,
    server_id: u32,
    database: String,
    zero_dates: crate::config::ZeroDates,
    opts: PollOptions,
    tables: Vec<BTable>,
    phase: Phase,
    /// `--once`: the server's position at start.
    target: Option<BinlogPos>,
    /// Where this process's snapshot was consistent with (read from the server just now).
    taken: Option<BinlogPos>,
    positions_at: Instant,
}

impl BinlogSource {
    pub fn new(settings: &Settings, once: bool, tables: Vec<OpenTable>) -> Result<Self> {
        let opts = PollOptions::new(settings, once);
        let tables = tables
            .into_iter()
            .map(|t| {
                let TablePlan::Binlog(plan) = &*t.plan else {
                    return Err(Error::Other(format!(
                        "table {:?} was planned for another capture mode",
                        t.handle.name
                    )));
                };
                let stored = t
                    .start
                    .as_ref()
                    .map(|p| Stored::decode(&plan.spec.model, p))
                    .transpose()?;
                let (from, snapshot) = match stored {
                    None => (None, Some(None)),
                    Some(s) => (Some(s.binlog), s.snapshot.map(|p| p.after)),
                };
                let first = opts.page_bytes / (plan.avg_row_bytes as usize * 2).max(64);
                Ok(BTable {
                    id: t.id,
                    spec: plan.spec.clone(),
                    keyset: plan.keyset.clone(),
                    decoders: plan.decoders.clone(),
                    handle: t.handle,
                    reported: from.clone(),
                    from,
                    snapshot,
                    copy: TableCopy::new(&plan.spec, &plan.keyset, first.clamp(1, opts.page_rows)),
                    done: false,
                    config: settings.tables.get(t.id).cloned().ok_or_else(|| {
                        Error::Other(format!("table #{} has no [[tables]] entry", t.id))
                    })?,
                    table_map: None,
                    pending_shape: None,
                    renames: Vec::new(),
                    indexes_stale: false,
                    ordered: t.ordered,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BinlogSource {
            url: settings.source.url.clone(),
            server_id: settings.replica_id(),
            database: crate::config::database_of(&settings.source.url),
            zero_dates: settings.source.zero_dates,
            opts,
            tables,
            phase: Phase::Start,
            target: None,
            taken: None,
            positions_at: Instant::now(),
        })
    }

    fn live(t: &BTable) -> bool {
        !t.done && !t.handle.stopped()
    }

    /// Streams from the oldest position of the tables still served. Positions in more than
    /// one server's binlog (a failover came before every table's position moved to the new
    /// server) are met by GTID: the stream starts where all of them are.
    fn start_stream(&mut self) -> Result<()> {
        let froms: Vec<&BinlogPos> = self
            .tables
            .iter()
            .filter(|t| Self::live(t))
            .filter_map(|t| t.from.as_ref())
            .collect();
        let Some(&first) = froms.first() else {
            self.phase = Phase::Done;
            return Ok(());
        };
        let (from, by_gtid) = if froms.iter().all(|f| f.same_server(first)) {
            (
                froms
                    .iter()
                    .copied()
                    .min()
                    .cloned()
                    .unwrap_or_else(|| first.clone()),
                false,
            )
        } else {
            let gtid = froms
                .iter()
                .map(|f| {
                    f.gtid.clone().ok_or_else(|| {
                        Error::Other(format!(
                            "the tables' binlog positions are in more than one server's binlog ({} and {}) and {f} has no GTID state, so no one place serves them all: start over (stop sluice, delete this pipeline's rows from sluice.replication_state, empty the target tables)",
                            first.server(),
                            f.server()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .reduce(|a, b| a.meet(&b));
            (
                BinlogPos {
                    gtid,
                    ..first.clone()
                },
                true,
            )
        };
        info!(from = %from, server = %from.server(), by_gtid, "reading the binlog");
        let trusted = self
            .taken
            .as_ref()
            .is_some_and(|t| *t == from && t.same_server(&from) && t.gtid == from.gtid);
        self.phase = Phase::Stream(Box::new(Stream::new(
            from,
            by_gtid,
            trusted,
            self.database.clone(),
            self.zero_dates,
        )));
        Ok(())
    }

    async fn step(&mut self) -> Result<Step> {
        loop {
            match &mut self.phase {
                Phase::Start => {
                    if self.opts.once && self.target.is_none() {
                        let mut conn = mysql::connect(&self.url).await?;
                        let flavor = Flavor::detect(&mut conn).await?;
                        let mut target = super::current_position(&mut conn, flavor).await?;
                        let (id, uuid) = super::server_identity(&mut conn, flavor).await?;
                        (target.server_id, target.server_uuid) = (Some(id), uuid);
                        info!(position = %target, "catching up to the binlog position as of start");
                        self.target = Some(target);
                    }
                    if self
                        .tables
                        .iter()
                        .any(|t| Self::live(t) && t.snapshot.is_some())
                    {
                        self.phase = Phase::Snapshot(Snapshot::begin(&self.url).await?);
                    } else {
                        self.start_stream()?;
                    }
                }
                Phase::Snapshot(snap) => {
                    let Some(i) = self
                        .tables
                        .iter()
                        .position(|t| Self::live(t) && t.snapshot.is_some())
                    else {
                        if let Phase::Snapshot(snap) =
                            std::mem::replace(&mut self.phase, Phase::Start)
                        {
                            snap.finish().await?;
                        }
                        self.start_stream()?;
                        continue;
                    };
                    let (page_bytes, page_rows) = (self.opts.page_bytes, self.opts.page_rows);
                    let t = &mut self.tables[i];
                    if t.snapshot == Some(None) && t.from.is_none() {
                        info!(table = %t.spec.model.name, consistent_with = %snap.pos, "snapshot of the table started");
                    }
                    self.taken = Some(snap.pos.clone());
                    let from = t.from.get_or_insert_with(|| snap.pos.clone()).clone();
                    let after = t.snapshot.clone().flatten();
                    let (rows, done) = match snap
                        .read(
                            &t.spec,
                            &mut t.copy,
                            after.as_deref(),
                            page_bytes,
                            page_rows,
                        )
                        .await
                    {
                        Ok(x) => x,
                        Err(e) if e.is_retryable() => return Err(e),
                        Err(error) => {
                            t.done = true;
                            return Ok(Step::Failed { table: t.id, error });
                        }
                    };
                    if let Some(last) = rows.last() {
                        t.snapshot = Some(Some(t.keyset.of(last)));
                    }
                    let stored = Stored {
                        binlog: from,
                        snapshot: (!done).then(|| SnapshotProgress {
                            after: t.snapshot.clone().flatten(),
                        }),
                    };
                    if done {
                        t.snapshot = None;
                        // Its position moves with the stream's from now on, changed or not.
                        t.reported = Some(stored.binlog.clone());
                        info!(table = %t.spec.model.name, "snapshot of the table done; its changes follow from the binlog");
                    }
                    let bytes = rows.iter().map(row_bytes).sum();
                    let set = ChangeSet {
                        table: t.id,
                        changes: rows.into_iter().map(Change::insert).collect(),
                        position: stored.position(),
                        bytes,
                        source_time: None,
                        shape: None,
                    };
                    crate::failpoint::hit("after_read");
                    return Ok(Step::Read(Read {
                        table: t.id,
                        changes: Some(set),
                        after: if done { After::CaughtUp } else { After::More },
                    }));
                }
                Phase::Stream(st) => {
                    if let Some(target) = &self.target {
                        // The server accepts the position first (it may not hold it at all).
                        st.connect_if_needed(&self.url, self.server_id).await?;
                        // Read that far (positions may stay behind, at a prepared XA).
                        let read_to = st.read_to();
                        // Never before the server has accepted the position (it may not
                        // hold it at all).
                        if st.opened()
                            && !st.in_transaction()
                            && read_to.same_server(target)
                            && read_to >= *target
                        {
                            info!(position = %st.read_to(), "caught up with the binlog as of start");
                            // Every table's position moves up to here before the end.
                            let boundary = st.boundary();
                            self.phase = Phase::Done;
                            if let Some(txn) = self.advance_idle(boundary) {
                                return Ok(Step::Txn(txn));
                            }
                            continue;
                        }
                    }
                    let chunk = self.opts.page_bytes;
                    match st
                        .next(&self.url, self.server_id, &mut self.tables, chunk)
                        .await?
                    {
                        Out::Txn(txn) => {
                            if txn.complete {
                                let pos = st.boundary();
                                for p in &txn.parts {
                                    if let Some(t) =
                                        self.tables.iter_mut().find(|t| t.id == p.table)
                                    {
                                        t.reported = Some(pos.clone());
                                    }
                                }
                            }
                            crate::failpoint::hit("after_read");
                            return Ok(Step::Txn(txn));
                        }
                        Out::Failed { table, error } => {
                            let Some(t) = self.tables.iter_mut().find(|t| t.id == table) else {
                                return Ok(Step::Failed { table, error });
                            };
                            t.done = true;
                            return Ok(crate::source::table_failed(table, &t.config, error));
                        }
                        Out::Idle => {
                            let boundary = st.boundary();
                            if self.positions_at.elapsed() >= POSITIONS_EVERY {
                                self.positions_at = Instant::now();
                                if let Some(txn) = self.advance_idle(boundary) {
                                    return Ok(Step::Txn(txn));
                                }
                            }
                            return Ok(Step::Idle);
                        }
                    }
                }
                Phase::Done => return Ok(Step::Finished),
            }
        }
    }

    /// Moves the positions of tables that saw no change lately up to `boundary`.
    fn advance_idle(&mut self, boundary: BinlogPos) -> Option<Txn> {
        let position = Stored {
            binlog: boundary.clone(),
            snapshot: None,
        }
        .position();
        let mut parts = Vec::new();
        for t in self
            .tables
            .iter_mut()
            .filter(|t| !t.done && !t.handle.stopped())
        {
            // A position on another server (before a failover) is behind any of this one; one
            // without its GTID state (a snapshot's, an older sluice's) gains it.
            if t.reported.as_ref().is_some_and(|r| {
                !r.same_server(&boundary)
                    || *r < boundary
                    || (r.gtid.is_none() && boundary.gtid.is_some())
            }) {
                t.reported = Some(boundary.clone());
                parts.push(ChangeSet {
                    table: t.id,
                    changes: Vec::new(),
                    position: position.clone(),
                    bytes: 0,
                    source_time: None,
                    shape: None,
                });
            }
        }
        (!parts.is_empty()).then_some(Txn {
            parts,
            complete: true,
        })
    }
}

impl Source for BinlogSource {
    fn next(&mut self) -> BoxFuture<'_, Result<Step>> {
        Box::pin(self.step())
    }

    fn reset(&mut self) {
        match &mut self.phase {
            // The snapshot's transaction is gone: a new one takes over where the copy got.
            Phase::Snapshot(_) => self.phase = Phase::Start,
            Phase::Stream(st) => st.reset(),
            Phase::Start | Phase::Done => {}
        }
    }
}
