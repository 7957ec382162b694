//! The batcher: groups each table's change sets into batches. A table's batch is sent when
//! the next change set would not fit it (`batch_rows`, `batch_bytes`), when `linger` has
//! passed since its first change, when the source says the table is caught up or held
//! back, when a source transaction asks for it (`Txn::flush`: a copy's chunks beside the
//! binlog stream), and at the end. If the batches it holds for all its tables together pass
//! `batch_bytes`, the largest goes at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Handler, Message, SyncContext};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{send, BatchMsg, Lease, ReadMsg};
use crate::model::{Batch, ChangeSet, TableId};
use crate::shutdown::Shutdown;
use crate::telemetry::TableHandle;

pub struct BatcherConfig {
    pub batch_rows: usize,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub input: Receiver<ReadMsg>,
    pub out: Sender<BatchMsg>,
    pub handles: Arc<[Arc<TableHandle>]>,
    /// Tables whose changes keep their order among each other (`source::ordered_tables`):
    /// a transaction's changes of one are added to its part only while no part of another
    /// such table follows that part.
    pub ordered: Arc<std::collections::HashSet<TableId>>,
    pub shutdown: Shutdown,
}

/// A table's batch being filled.
struct Pending {
    set: ChangeSet,
    lease: Lease,
    /// When its first change arrived: the linger clock.
    since: Instant,
}

/// Source transactions kept whole (binlog): one batch for all tables, sent only at a
/// transaction boundary, or in chunks (`commit: false`) while one transaction outgrows it.
struct TxnPending {
    parts: Vec<ChangeSet>,
    index: HashMap<TableId, usize>,
    lease: Lease,
    rows: usize,
    bytes: usize,
    /// Whole source transactions held (not counting position-only updates).
    transactions: u64,
    since: Instant,
    /// The last source transaction is not complete yet.
    open: bool,
}

struct Inner {
    cfg: BatcherConfig,
    pending: HashMap<TableId, Pending>,
    txn: Option<TxnPending>,
    /// Tables whose `CaughtUp` was passed on with no batch sent since: an idle source's
    /// repeated caught-up flushes are passed on once.
    caught_up_sent: std::collections::HashSet<TableId>,
}

/// `None` once finished (dropping the channel's sender ends the writer).
pub struct Batcher(Option<Inner>);

impl Batcher {
    pub fn new(cfg: Option<BatcherConfig>) -> Self {
        Batcher(cfg.map(|cfg| Inner {
            cfg,
            pending: HashMap::new(),
            txn: None,
            caught_up_sent: Default::default(),
        }))
    }

    /// Takes one message (or the linger timeout) and acts on it; false once finished. What
    /// one [`NextBatch`] does, callable without an actor (tests).
    pub(crate) fn step(&mut self) -> bool {
        let Some(inner) = self.0.as_mut() else {
            return false;
        };
        if !inner.step() {
            self.0 = None;
        }
        self.0.is_some()
    }
}

impl Actor for Batcher {
    type Context = SyncContext<Self>;
}

/// Take the next message (or the linger timeout) and act on it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NextBatch;

impl Inner {
    /// Sends `table`'s batch on; false when the writer is gone.
    fn flush(&mut self, table: TableId) -> bool {
        let Some(p) = self.pending.remove(&table) else {
            return true;
        };
        let h = &self.cfg.handles[table];
        if h.stopped() {
            // The table failed: its batch is dropped (a restart reads it again).
            return true;
        }
        h.batch_queued(1);
        self.caught_up_sent.remove(&table);
        send(
            &self.cfg.out,
            BatchMsg::Batch(
                Batch {
                    parts: vec![p.set],
                    commit: true,
                    transactions: 0,
                },
                p.lease,
            ),
            &self.cfg.shutdown,
        )
    }

    fn add(&mut self, set: ChangeSet, lease: Lease) -> bool {
        let t = set.table;
        self.cfg.handles[t].rows_batched(set.changes.len());
        let (rows, bytes) = (self.cfg.batch_rows, self.cfg.batch_bytes);
        let fits = |p: &Pending| {
            p.set.changes.len() + set.changes.len() <= rows && p.set.bytes + set.bytes <= bytes
        };
        // Rows of a new shape never share a batch part with rows of the old one.
        if self
            .pending
            .get(&t)
            .is_some_and(|p| !fits(p) || set.shape.is_some())
            && !self.flush(t)
        {
            return false;
        }
        match self.pending.get_mut(&t) {
            Some(p) => {
                let ChangeSet {
                    changes,
                    position,
                    bytes,
                    source_time,
                    ..
                } = set;
                p.set.changes.extend(changes);
                p.set.position = position;
                p.set.bytes += bytes;
                p.set.source_time = source_time.or(p.set.source_time);
                p.lease.merge(lease);
            }
            None => {
                self.pending.insert(
                    t,
                    Pending {
                        set,
                        lease,
                        since: Instant::now(),
                    },
                );
            }
        }
        let p = &self.pending[&t];
        if (p.set.changes.len() >= rows || p.set.bytes >= bytes) && !self.flush(t) {
            return false;
        }
        // All tables' batches together stay within one batch's bytes.
        while self.pending.values().map(|p| p.set.bytes).sum::<usize>() > bytes {
            let largest = self
                .pending
                .iter()
                .max_by_key(|(_, p)| p.set.bytes)
                .map(|(t, _)| *t)
                .expect("not empty");
            if !self.flush(largest) {
                return false;
            }
        }
        true
    }

    /// Sends the transactions held; `commit: false` for a chunk of an open one.
    fn flush_txn(&mut self, commit: bool) -> bool {
        let Some(t) = self.txn.take() else {
            return true;
        };
        let open = t.open;
        let mut parts = t.parts;
        parts.retain(|p| !self.cfg.handles[p.table].stopped());
        for p in &parts {
            self.cfg.handles[p.table].batch_queued(1);
        }
        if !commit {
            // The rest of the open transaction follows into a fresh batch.
            self.txn = Some(TxnPending {
                parts: Vec::new(),
                index: HashMap::new(),
                lease: Lease::default(),
                rows: 0,
                bytes: 0,
                transactions: 0,
                since: Instant::now(),
                open,
            });
        }
        send(
            &self.cfg.out,
            BatchMsg::Batch(
                Batch {
                    parts,
                    commit,
                    transactions: t.transactions,
                },
                t.lease,
            ),
            &self.cfg.shutdown,
        )
    }

    fn add_txn(&mut self, txn: crate::source::Txn, lease: Lease) -> bool {
        let flush = txn.flush;
        // Order: whatever per-table batches are held go first.
        let held: Vec<TableId> = self.pending.keys().copied().collect();
        if !held.into_iter().all(|t| self.flush(t)) {
            return false;
        }
        // A source transaction, not a position-only update: it changed rows, here or in
        // chunks before.
        let continues = self.txn.as_ref().is_some_and(|t| t.open);
        // Rows of a new shape never share a batch part with rows of the old one (a schema
        // change is a transaction of its own on the source: never inside an open one).
        let reshaped = self.txn.as_ref().is_some_and(|t| {
            !t.open
                && txn
                    .parts
                    .iter()
                    .any(|p| p.shape.is_some() && t.index.contains_key(&p.table))
        });
        if reshaped && !self.flush_txn(true) {
            return false;
        }
        let real = continues || txn.parts.iter().any(|p| !p.changes.is_empty());
        let t = self.txn.get_or_insert_with(|| TxnPending {
            parts: Vec::new(),
            index: HashMap::new(),
            lease: Lease::default(),
            rows: 0,
            bytes: 0,
            transactions: 0,
            since: Instant::now(),
            open: false,
        });
        t.lease.merge(lease);
        t.open = !txn.complete;
        t.transactions += u64::from(txn.complete && real);
        for mut part in txn.parts {
            // A table whose changes keep their order with others' (foreign keys) commits
            // with them, chunks of its copy included.
            part.beside &= !self.cfg.ordered.contains(&part.table);
            self.cfg.handles[part.table].rows_batched(part.changes.len());
            t.rows += part.changes.len();
            t.bytes += part.bytes;
            // An ordered table's part takes more changes only while no other ordered table's
            // part follows it; else its changes start a part of their own, in their place.
            let ordered = &self.cfg.ordered;
            let open_part = t.index.get(&part.table).copied().filter(|&i| {
                !ordered.contains(&part.table)
                    || t.parts[i + 1..].iter().all(|q| !ordered.contains(&q.table))
            });
            match open_part {
                Some(i) => {
                    let p = &mut t.parts[i];
                    p.changes.extend(part.changes);
                    p.bytes += part.bytes;
                    // Chunks carry no position; a complete transaction's parts do.
                    if !part.position.0.is_null() {
                        p.position = part.position;
                    }
                    p.source_time = part.source_time.or(p.source_time);
                    p.beside |= part.beside;
                }
                None => {
                    t.index.insert(part.table, t.parts.len());
                    t.parts.push(part);
                }
            }
        }
        let (rows, bytes) = (self.cfg.batch_rows, self.cfg.batch_bytes);
        match (t.open, t.rows >= rows || t.bytes >= bytes || flush) {
            (true, _) if t.bytes >= bytes => self.flush_txn(false),
            (false, true) => self.flush_txn(true),
            _ => true,
        }
    }

    /// One message, or the linger of the oldest batch. False when done.
    fn step(&mut self) -> bool {
        let txn_deadline = self
            .txn
            .as_ref()
            .filter(|t| !t.open)
            .map(|t| t.since + self.cfg.linger);
        let deadline = self
            .pending
            .values()
            .map(|p| p.since + self.cfg.linger)
            .chain(txn_deadline)
            .min();
        let msg = match deadline {
            Some(d) => self.cfg.input.recv_deadline(d),
            None => self
                .cfg
                .input
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(ReadMsg::Changes(set, lease)) => self.add(set, lease),
            Ok(ReadMsg::Flush { table, caught_up }) => {
                if !self.flush(table) {
                    return false;
                }
                if caught_up && self.caught_up_sent.insert(table) {
                    return send(&self.cfg.out, BatchMsg::CaughtUp(table), &self.cfg.shutdown);
                }
                true
            }
            Ok(ReadMsg::Txn(txn, lease)) => self.add_txn(txn, lease),
            Ok(ReadMsg::Idle) => {
                let held: Vec<TableId> = self.pending.keys().copied().collect();
                held.into_iter().all(|t| self.flush(t))
                    && (self.txn.as_ref().is_none_or(|t| t.open) || self.flush_txn(true))
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if self
                    .txn
                    .as_ref()
                    .is_some_and(|t| !t.open && t.since + self.cfg.linger <= now)
                    && !self.flush_txn(true)
                {
                    return false;
                }
                let due: Vec<TableId> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.since + self.cfg.linger <= now)
                    .map(|(t, _)| *t)
                    .collect();
                due.into_iter().all(|t| self.flush(t))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let all: Vec<TableId> = self.pending.keys().copied().collect();
                for t in all {
                    if !self.flush(t) {
                        break;
                    }
                }
                // A transaction cut short is dropped: it is read again on the next start.
                if self.txn.as_ref().is_some_and(|t| !t.open) {
                    self.flush_txn(true);
                }
                false
            }
        }
    }
}

impl Handler<NextBatch> for Batcher {
    type Result = ();

    /// Takes message after message on this thread until finished (see the poller's).
    fn handle(&mut self, _: NextBatch, _: &mut SyncContext<Self>) {
        while self.step() {}
    }
}
