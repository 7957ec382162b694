//! The binlog source: the stream from the oldest position of all tables, and the tables
//! that need a copy copied, either before it or beside it.
//!
//! When no table streams yet (a new pipeline), every table is copied first, in one
//! consistent snapshot (`Phase::Snapshot`: the fastest copy, which may defer the target's
//! primary key). When others stream (a table added later, or copied again), a table is
//! copied beside the stream on MariaDB, a chunk at a time: each chunk read in a snapshot of
//! its own at the exact binlog position the server reports for it, held until the stream
//! stands at that position, and applied there, in the stream's order (committed on the
//! writer's second connection, `pipeline::side`). Every change of the
//! table from where its copy started is applied as it comes (as upserts and deletes, whole
//! row images), so a chunk finds the target as the source was at its position for the
//! rows copied before it and for every row changed since, and the rows it brings are the
//! source's there: the table ends exact, and no other table waits for more than a chunk's
//! read. A chunk read after the stream had passed its position (the binlog is written a
//! moment before InnoDB commits) is read again.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::info;

use super::snapshot::{Chunk, Chunker, Snapshot};
use super::stream::Stream;
use super::table::{BTable, TableCopy};
use super::txn::Out;
use super::{BinlogPos, SnapshotProgress, Stored};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::model::{Change, ChangeSet};
use crate::source::mysql::{self, Flavor};
use crate::source::poll::PollOptions;
use crate::source::{After, OpenTable, Read, Source, Step, TablePlan, Txn};
use crate::value::{row_bytes, Row, Value};

/// How often idle tables' positions are moved up to the stream's, so a restart never reads
/// far back for a table that rarely changes.
const POSITIONS_EVERY: Duration = Duration::from_secs(10);

/// Chunks of a copy beside the stream in flight (read, not yet committed) before the next
/// waits: four pages, two batches of [`CHUNKS_PER_BATCH`]. With two chunks in flight and a
/// batch gathering chunks until `linger_ms` passed or the stream went quiet, the reader
/// stopped while the writer wrote and the writer waited while the reader read: the copy ran
/// at 0.51-0.60x the key-after pipe. With the next chunks read while others are written,
/// 0.73-0.92x (sbtest) and 0.61-0.78x (orders). The chunks now commit on the writer's second
/// connection (`pipeline::side`), so streamed changes of other tables do not wait behind
/// them, and more in flight costs their lag little: measured A/B in one session, four in
/// flight sent two at a time gave 0.82-0.87x (sbtest) and 0.78-0.82x (orders) over five
/// runs; eight sent four at a time 0.86-1.04x and 0.78-0.89x over four, at 5-8 MiB more
/// peak RSS (35-40 MiB) and the median lag of a streamed change 14-17 ms against 10-12.
/// `benches/beside.sh 2000000`.
const CHUNKS_AHEAD: usize = 8;

/// Chunks a batch holds at most: it goes to the writer with its fourth chunk, so that the
/// next four are read while these are written.
const CHUNKS_PER_BATCH: u64 = 4;

/// A chunk read, waiting for the stream to reach its position.
struct Pending {
    chunk: Chunk,
    /// Tests (`chunk_late`): the stream reads on past the chunk's position first.
    late: bool,
}

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
    /// Tables are copied beside the stream (see the module's doc).
    beside: bool,
    /// The connections chunks are read on: up to `readers`, one chunk each at a time.
    chunkers: Vec<Chunker>,
    /// `[pipeline] max_source_connections` less the stream's, the helpers' and the
    /// background verify's: how many tables' chunks are read at once (at least one).
    readers: usize,
    /// Where the last chunks read went: the next ones start after it (the tables in turn).
    turn: usize,
    /// The chunks read, each waiting for the stream to reach its position: one per table at
    /// most.
    pending: Vec<Pending>,
    /// A table whose last chunk was handed out: its copy is over (indexes, foreign keys).
    copied: Option<crate::model::TableId>,
    /// The changes of tables being copied handed out since the last chunk was read, with
    /// where their group started: a chunk read at a position the stream had passed already
    /// gets those after it again (see `beside_step`).
    replay: std::collections::VecDeque<(BinlogPos, crate::model::TableId, Vec<Change>, usize)>,
    /// The bytes `replay` holds: at most four pages, the oldest dropped first, and then
    /// `replay_floor` is where the oldest dropped group started: a chunk at or before it
    /// that the stream had passed is read again rather than applied short of a change.
    replay_bytes: usize,
    replay_floor: Option<BinlogPos>,
    /// `[source] on_binlog_gone`, and whether the tables' files were looked at.
    on_binlog_gone: crate::config::OnBinlogGone,
    gone_checked: bool,
    /// Bytes read and not yet committed (see `HeldBytes`).
    held: crate::source::HeldBytes,
    /// The next chunk waits for the chunks in flight to be written: the stream is read
    /// meanwhile, looking again soon when it is quiet.
    paced: bool,
    /// Chunks handed out (see [`CHUNKS_PER_BATCH`]).
    chunks_out: u64,
}

impl BinlogSource {
    pub fn new(
        settings: &Settings,
        once: bool,
        tables: Vec<OpenTable>,
        held: crate::source::HeldBytes,
    ) -> Result<Self> {
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
                    None => (None, Some(SnapshotProgress::default())),
                    Some(s) => (Some(s.binlog), s.snapshot),
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
                    deferred_key: t.deferred_key,
                    empty_first: false,
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
            beside: false,
            chunkers: Vec::new(),
            readers: settings
                .pipeline
                .max_source_connections
                .saturating_sub(2 + usize::from(settings.verify.interval_s > 0))
                .max(1),
            turn: 0,
            pending: Vec::new(),
            copied: None,
            replay: Default::default(),
            replay_bytes: 0,
            replay_floor: None,
            on_binlog_gone: settings.source.on_binlog_gone,
            gone_checked: false,
            held,
            paced: false,
            chunks_out: 0,
        })
    }

    /// `on_binlog_gone = "snapshot"`: a table whose position is in a binlog file the server
    /// purged is copied again (its target emptied first) instead of stopping the run.
    async fn copy_again_where_binlog_gone(&mut self) -> Result<()> {
        let mut conn = mysql::connect(&self.url).await?;
        let flavor = Flavor::detect(&mut conn).await?;
        let (id, uuid) = super::server_identity(&mut conn, flavor).await?;
        let files = super::binary_logs(&mut conn).await?;
        let here = BinlogPos {
            server_id: Some(id),
            server_uuid: uuid,
            ..BinlogPos::at(String::new(), 4)
        };
        for t in self.tables.iter_mut().filter(|t| Self::live(t)) {
            let Some(from) = &t.from else { continue };
            if !from.same_server(&here)
                || files.is_empty()
                || files.iter().any(|(f, _)| *f == from.file)
            {
                continue;
            }
            tracing::warn!(table = %t.spec.model.name, position = %from, oldest = %files[0].0, "the source no longer has the binlog file of the table's position ([source] on_binlog_gone = \"snapshot\"): its target is emptied and it is copied again");
            crate::telemetry::binlog_gone_copy(&t.spec.model.name);
            t.from = None;
            t.reported = None;
            t.snapshot = Some(SnapshotProgress::default());
            t.empty_first = true;
        }
        Ok(())
    }

    /// A table still to copy (or being copied).
    fn copying(t: &BTable) -> bool {
        Self::live(t) && t.snapshot.is_some()
    }

    /// Whether the tables to copy go beside the stream: others stream already, none of
    /// them has its key deferred, and the server reports each snapshot's exact position
    /// (MariaDB). Opens the connection chunks are read on when so.
    async fn choose_beside(&mut self) -> Result<bool> {
        let streaming = self
            .tables
            .iter()
            .any(|t| Self::live(t) && t.snapshot.is_none() && t.from.is_some());
        let keyed = self
            .tables
            .iter()
            .filter(|t| Self::copying(t))
            .all(|t| !t.deferred_key);
        if !streaming || !keyed {
            return Ok(false);
        }
        let mut conn = mysql::connect(&self.url).await?;
        if !Flavor::detect(&mut conn).await?.mariadb {
            info!("MySQL reports no binlog position for a consistent snapshot: the tables to copy are copied before the stream goes on");
            return Ok(false);
        }
        Ok(true)
    }

    /// The table part of a stream transaction, or an idle move, of a table being copied
    /// carries how far its copy got.
    fn with_progress(
        &self,
        table: crate::model::TableId,
        position: crate::model::Position,
    ) -> crate::model::Position {
        let Some(t) = self
            .tables
            .iter()
            .find(|t| t.id == table && t.snapshot.is_some())
        else {
            return position;
        };
        match serde_json::from_value::<Stored>(position.0.clone()) {
            Ok(mut stored) => {
                stored.snapshot = t.snapshot.clone();
                stored.position()
            }
            // Not a stored position (a chunk of a transaction still open): left as is.
            Err(_) => position,
        }
    }

    /// Beside the stream: a chunk read to hand out once the stream stands at its position,
    /// or the next chunks to read. `None`: nothing to do before reading the stream on.
    async fn beside_step(&mut self) -> Result<Option<Step>> {
        if let Some(table) = self.copied.take() {
            return Ok(Some(Step::Read(Read {
                table,
                changes: None,
                after: After::CaughtUp,
            })));
        }
        if let Some(step) = self.hand_out() {
            return Ok(Some(step));
        }
        self.read_chunks().await
    }

    /// The chunk, of those read, that the stream stands at (the earliest first), as the
    /// transaction that applies it.
    fn hand_out(&mut self) -> Option<Step> {
        let Phase::Stream(st) = &self.phase else {
            return None;
        };
        // The table stopped, the stream is another server's now, or the table's shape
        // changed since the chunk was read: read it again.
        let tables = &self.tables;
        self.pending.retain(|p| {
            let t = &tables[p.chunk.table];
            Self::live(t)
                && (!st.opened() || st.read_to().same_server(&p.chunk.at))
                && t.pending_shape.is_none()
                && t.spec.model.version == p.chunk.version
        });
        let ready = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| !self.held_late(p) && st.reached(&p.chunk.at))
            .min_by(|(_, a), (_, b)| a.chunk.at.cmp(&b.chunk.at))
            .map(|(i, _)| i)?;
        let chunk = self.pending.swap_remove(ready).chunk;
        let pos = st.boundary();
        let id = self.tables[chunk.table].id;
        // The stream passed the chunk's position before the chunk was read (the binlog
        // is written a moment before the engine commits): the table's changes handed
        // out since then come again after the chunk's rows, which are older. (They are
        // whole row images: applied again, rows outside the chunk end as they were.)
        let again: Vec<Change> = self
            .replay
            .iter()
            .filter(|(start, table, _, _)| {
                *table == id && start.same_server(&chunk.at) && *start >= chunk.at
            })
            .flat_map(|(_, _, changes, _)| changes.iter().cloned())
            .collect();
        let t = &mut self.tables[chunk.table];
        if !again.is_empty() {
            tracing::debug!(table = %t.spec.model.name, at = %chunk.at, stream = %pos, changes = again.len(), "a chunk read behind the stream: the changes since its position follow it again");
        }
        let last = chunk.rows.last().map(|r| t.keyset.of(r));
        if let Some(p) = &mut t.snapshot {
            p.copied(last, chunk.rows.len());
            p.beside = true;
        }
        let stored = Stored {
            binlog: pos.clone(),
            snapshot: t.snapshot.clone().filter(|_| !chunk.done),
        };
        if chunk.done {
            t.snapshot = None;
            self.copied = Some(t.id);
            info!(table = %t.spec.model.name, "copy of the table done beside the stream; its changes follow from the binlog");
        }
        t.reported = Some(pos);
        let mut set = t.copied_rows(chunk.rows, again, &stored);
        set.beside = true;
        crate::failpoint::hit("after_read");
        self.chunks_out += 1;
        Some(Step::Txn(Txn {
            parts: vec![set],
            complete: true,
            flush: self.chunks_out.is_multiple_of(CHUNKS_PER_BATCH) || chunk.done,
        }))
    }

    /// Tests (`chunk_late`): the chunk is held until the stream has handed out a change of
    /// its table from past its position.
    fn held_late(&self, p: &Pending) -> bool {
        let table = self.tables[p.chunk.table].id;
        p.late
            && !self
                .replay
                .iter()
                .any(|(start, t, _, _)| *t == table && *start >= p.chunk.at)
    }

    /// Reads the next chunk of each table being copied that has none waiting, up to
    /// `readers` tables at once, each on a connection of its own, the tables in turn.
    async fn read_chunks(&mut self) -> Result<Option<Step>> {
        let waiting: Vec<usize> = (0..self.tables.len())
            .map(|k| (self.turn + 1 + k) % self.tables.len())
            .filter(|&i| {
                Self::copying(&self.tables[i]) && !self.pending.iter().any(|p| p.chunk.table == i)
            })
            .take(self.readers)
            .collect();
        if waiting.is_empty() {
            if self.pending.is_empty() {
                // Every copy is done: the connections go back to the server.
                self.chunkers.clear();
            }
            return Ok(None);
        }
        // Chunks read faster than the target takes them would queue up in the lane, and the
        // streamed changes behind them: the next ones wait while [`CHUNKS_AHEAD`] chunks'
        // worth is in flight (some being written while the next are read and gathered). A
        // chunk is half a page.
        let chunk_bytes = (self.opts.page_bytes / 2).max(1);
        if (self.held)() > CHUNKS_AHEAD * chunk_bytes {
            self.paced = true;
            return Ok(None);
        }
        while self.chunkers.len() < waiting.len() {
            self.chunkers.push(Chunker::open(&self.url).await?);
        }
        self.turn = *waiting.last().expect("not empty");
        let page = (chunk_bytes, self.opts.page_rows);
        let reads = self
            .tables
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| waiting.contains(i))
            .zip(self.chunkers.iter_mut())
            .map(|((i, t), chunker)| async move { (i, chunker.read(i, t, page).await) });
        let read = futures::future::join_all(reads).await;
        let mut failed = None;
        for (i, chunk) in read {
            match chunk {
                Ok(chunk) => self.accept(chunk),
                Err(e) if failed.is_none() => failed = Some(copy_failed(&mut self.tables[i], e)),
                // Read again at the next turn (or failing then).
                Err(_) => {}
            }
        }
        failed.transpose()
    }

    /// A chunk just read waits for the stream to reach its position (or is read again, when
    /// the changes to follow it were dropped).
    fn accept(&mut self, chunk: Chunk) {
        let id = self.tables[chunk.table].id;
        // The table's changes whose group started before the chunk's position are in it.
        self.replay.retain(|(start, table, _, _)| {
            !(*table == id && start.same_server(&chunk.at) && *start < chunk.at)
        });
        self.replay_bytes = self.replay.iter().map(|(_, _, _, b)| b).sum();
        let t = &mut self.tables[chunk.table];
        // The stream passed the chunk's position, and changes after it were dropped from the
        // replay for room: read the chunk again later rather than apply it short of them.
        if let (Phase::Stream(st), Some(floor)) = (&self.phase, &self.replay_floor) {
            let read_to = st.read_to();
            if read_to.same_server(&chunk.at) && read_to > chunk.at && *floor >= chunk.at {
                tracing::debug!(table = %t.spec.model.name, at = %chunk.at, "a chunk read behind the stream with its replay cut short; reading it again");
                return;
            }
        }
        if t.from.is_none() {
            // Its changes apply from the first chunk's position on: the target holds none
            // of the table's rows before it.
            info!(table = %t.spec.model.name, from = %chunk.at, "copy of the table started beside the stream");
            t.from = Some(chunk.at.clone());
            t.reported = Some(chunk.at.clone());
        }
        self.pending.push(Pending {
            chunk,
            late: crate::failpoint::is("chunk_late"),
        });
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
        // Read from this server by this process: a snapshot's position, or one a batch of
        // this process committed (a new round starting from where the last one got).
        let same = |t: &BinlogPos| *t == from && t.same_server(&from) && t.gtid == from.gtid;
        let trusted = self.taken.as_ref().is_some_and(same)
            || crate::telemetry::committed_here().iter().any(|p| {
                serde_json::from_value::<Stored>(p.0.clone()).is_ok_and(|s| same(&s.binlog))
            });
        info!(from = %from, server = %from.server(), by_gtid, read_here = trusted, "reading the binlog");
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
                    if self.on_binlog_gone == crate::config::OnBinlogGone::Snapshot
                        && !self.gone_checked
                    {
                        self.copy_again_where_binlog_gone().await?;
                        self.gone_checked = true;
                    }
                    let copy = self.tables.iter().any(Self::copying);
                    if copy && !self.beside && !self.choose_beside().await? {
                        self.phase = Phase::Snapshot(Snapshot::begin(&self.url).await?);
                    } else {
                        if copy && !self.beside {
                            for t in self.tables.iter().filter(|t| Self::copying(t)) {
                                if let (Some(from), Some(p)) = (&t.from, &t.snapshot) {
                                    let after = p.after.as_ref().map_or("the start".into(), |k| {
                                        k.iter().map(Value::display).collect::<Vec<_>>().join(", ")
                                    });
                                    info!(table = %t.spec.model.name, after = %after, changes_from = %from, "copy of the table resumed beside the stream");
                                }
                            }
                        }
                        self.beside = copy || self.beside;
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
                    let page = (self.opts.page_bytes, self.opts.page_rows);
                    let t = &mut self.tables[i];
                    if t.snapshot.as_ref().is_some_and(|p| p.after.is_none()) && t.from.is_none() {
                        info!(table = %t.spec.model.name, consistent_with = %snap.pos, "snapshot of the table started");
                    }
                    self.taken = Some(snap.pos.clone());
                    let from = t.from.get_or_insert_with(|| snap.pos.clone()).clone();
                    let (rows, done) = match snap.read(t, page).await {
                        Ok(x) => x,
                        Err(e) => return copy_failed(t, e),
                    };
                    let last = rows.last().map(|r| t.keyset.of(r));
                    if let Some(p) = &mut t.snapshot {
                        p.copied(last, rows.len());
                    }
                    let stored = Stored {
                        binlog: from,
                        snapshot: t.snapshot.clone().filter(|_| !done),
                    };
                    if done {
                        t.snapshot = None;
                        // Its position moves with the stream's from now on, changed or not.
                        t.reported = Some(stored.binlog.clone());
                        info!(table = %t.spec.model.name, "snapshot of the table done; its changes follow from the binlog");
                    }
                    let set = t.copied_rows(rows, Vec::new(), &stored);
                    crate::failpoint::hit("after_read");
                    return Ok(Step::Read(Read {
                        table: t.id,
                        changes: Some(set),
                        after: if done { After::CaughtUp } else { After::More },
                    }));
                }
                // A table the stream put back to copying (another table swapped in).
                Phase::Stream(_) if !self.beside && self.tables.iter().any(Self::copying) => {
                    self.beside = true;
                }
                Phase::Stream(_) if self.beside => {
                    if let Some(step) = self.beside_step().await? {
                        return Ok(step);
                    }
                    match self.stream_step().await? {
                        Some(step) => return Ok(step),
                        None => continue,
                    }
                }
                Phase::Stream(_) => match self.stream_step().await? {
                    Some(step) => return Ok(step),
                    None => continue,
                },
                Phase::Done => return Ok(Step::Finished),
            }
        }
    }

    /// Reads the stream on (up to the pending chunk's position, if any). `None`: go round
    /// again (the phase changed, or the stream stands at the chunk's position).
    async fn stream_step(&mut self) -> Result<Option<Step>> {
        let copying = self.tables.iter().any(Self::copying);
        // Tests (`chunk_late`): read on past the chunk's position, until a change of its
        // table there has been handed out.
        let stop_at = self
            .pending
            .iter()
            .filter(|p| !self.held_late(p))
            .map(|p| &p.chunk.at)
            .min()
            .cloned();
        let Phase::Stream(st) = &mut self.phase else {
            return Ok(None);
        };
        if let (Some(target), false) = (&self.target, copying) {
            // The server accepts the position first (it may not hold it at all).
            st.connect_if_needed(&self.url, self.server_id).await?;
            // Read that far (positions may stay behind, at a prepared XA).
            let read_to = st.read_to();
            // Never before the server has accepted the position (it may not hold it at all).
            if st.opened()
                && !st.in_transaction()
                && read_to.same_server(target)
                && read_to >= *target
            {
                info!(position = %st.read_to(), "caught up with the binlog as of start");
                // Every table's position moves up to here before the end.
                let boundary = st.boundary();
                self.phase = Phase::Done;
                return Ok(self.advance_idle(boundary).map(Step::Txn));
            }
        }
        let chunk = self.opts.page_bytes;
        st.quick_idle = std::mem::take(&mut self.paced);
        let out = st
            .next(
                &self.url,
                self.server_id,
                &mut self.tables,
                chunk,
                stop_at.as_ref(),
            )
            .await?;
        let (boundary, group_from) = (st.boundary(), st.group_from().clone());
        // A statement on its own (DDL) is logged once done, so a chunk read after the stream
        // saw it holds its effect already, whatever position the snapshot reports (MariaDB's
        // counts transactions' commits only): never applied again after a chunk.
        let ddl = st.ddl_out();
        // The stream may have put a table back to copying (another table swapped in): its
        // position carries that from this transaction on.
        let copying = copying || self.tables.iter().any(Self::copying);
        match out {
            Out::Reached => Ok(None),
            Out::Txn(mut txn) => {
                if copying {
                    // A chunk waiting for the stream to reach it needs nothing from before.
                    let needed = |table: usize| {
                        self.pending.iter().all(|c| {
                            self.tables[c.chunk.table].id != table
                                || !group_from.same_server(&c.chunk.at)
                                || group_from >= c.chunk.at
                        })
                    };
                    for p in &txn.parts {
                        if needed(p.table)
                            && !ddl
                            && !p.changes.is_empty()
                            && self
                                .tables
                                .iter()
                                .any(|t| t.id == p.table && t.snapshot.is_some())
                        {
                            self.replay.push_back((
                                group_from.clone(),
                                p.table,
                                p.changes.clone(),
                                p.bytes,
                            ));
                            self.replay_bytes += p.bytes;
                        }
                    }
                    while self.replay_bytes > 4 * self.opts.page_bytes {
                        let Some((start, _, _, bytes)) = self.replay.pop_front() else {
                            break;
                        };
                        self.replay_bytes -= bytes;
                        self.replay_floor = Some(start);
                    }
                    for p in &mut txn.parts {
                        let position = std::mem::replace(
                            &mut p.position,
                            crate::model::Position(serde_json::Value::Null),
                        );
                        p.position = self.with_progress(p.table, position);
                    }
                }
                if txn.complete {
                    for p in &txn.parts {
                        if let Some(t) = self.tables.iter_mut().find(|t| t.id == p.table) {
                            t.reported = Some(boundary.clone());
                        }
                    }
                }
                crate::failpoint::hit("after_read");
                Ok(Some(Step::Txn(txn)))
            }
            Out::Failed { table, error } => {
                let Some(t) = self.tables.iter_mut().find(|t| t.id == table) else {
                    return Ok(Some(Step::Failed { table, error }));
                };
                t.done = true;
                Ok(Some(crate::source::table_failed(table, &t.config, error)))
            }
            Out::Idle => {
                for p in &mut self.pending {
                    p.late = false;
                }
                if self.positions_at.elapsed() >= POSITIONS_EVERY {
                    self.positions_at = Instant::now();
                    if let Some(txn) = self.advance_idle(boundary) {
                        return Ok(Some(Step::Txn(txn)));
                    }
                }
                Ok(Some(Step::Idle))
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
        let progress: Vec<(crate::model::TableId, crate::model::Position)> = self
            .tables
            .iter()
            .filter(|t| t.snapshot.is_some())
            .map(|t| (t.id, self.with_progress(t.id, position.clone())))
            .collect();
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
                let position = progress
                    .iter()
                    .find(|(id, _)| *id == t.id)
                    .map_or_else(|| position.clone(), |(_, p)| p.clone());
                parts.push(ChangeSet {
                    table: t.id,
                    changes: Vec::new(),
                    position,
                    bytes: 0,
                    source_time: None,
                    shape: None,
                    first_reads: false,
                    beside: false,
                });
            }
        }
        (!parts.is_empty()).then_some(Txn {
            parts,
            complete: true,
            flush: false,
        })
    }
}

impl BTable {
    /// A page or chunk of the table's copy, as the change set that applies it at `stored`:
    /// the target emptied first when the copy starts so, the rows, then `again` (its
    /// changes replayed after a chunk read behind the stream).
    fn copied_rows(&mut self, rows: Vec<Row>, again: Vec<Change>, stored: &Stored) -> ChangeSet {
        let bytes = rows.iter().map(row_bytes).sum::<usize>()
            + again.iter().map(|c| row_bytes(&c.row)).sum::<usize>();
        let mut changes = Vec::with_capacity(rows.len() + again.len() + 1);
        if std::mem::take(&mut self.empty_first) {
            changes.push(Change::truncate());
        }
        changes.extend(rows.into_iter().map(Change::insert));
        changes.extend(again);
        ChangeSet {
            table: self.id,
            changes,
            position: stored.position(),
            bytes,
            source_time: None,
            shape: None,
            first_reads: false,
            beside: false,
        }
    }
}

/// A copy's read failed: retried when the error is transient, otherwise the table stops.
fn copy_failed(t: &mut BTable, e: Error) -> Result<Step> {
    if e.is_retryable() {
        return Err(e);
    }
    t.done = true;
    Ok(Step::Failed {
        table: t.id,
        error: e,
    })
}

impl Source for BinlogSource {
    fn next(&mut self) -> BoxFuture<'_, Result<Step>> {
        Box::pin(self.step())
    }

    fn reset(&mut self) {
        match &mut self.phase {
            // The snapshot's transaction is gone: a new one takes over where the copy got.
            Phase::Snapshot(_) => self.phase = Phase::Start,
            Phase::Stream(st) => {
                st.reset();
                // Its connection may be gone too; a chunk read stays good (its position is
                // ahead of where the stream reconnects).
                self.chunkers.clear();
            }
            Phase::Start | Phase::Done => {}
        }
    }
}
