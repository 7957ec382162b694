//! Transaction assembly: the changes of the transaction being read, gathered per table,
//! handed out whole when it ends (with the position after it) or in chunks while it grows.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{BinlogPos, Stored};
use crate::error::Error;
use crate::model::{Change, ChangeSet, Position, TableId, TableModel};
use crate::source::Txn;

/// What reading the stream produced.
pub(super) enum Out {
    Txn(Txn),
    /// Nothing arrived for a moment: the tables are caught up.
    Idle,
    /// The stream stands at the boundary it was asked to stop at (see `Stream::next`).
    Reached,
    /// A table's change could not be read: that table stops.
    Failed {
        table: TableId,
        error: Error,
    },
}

/// The transaction being read.
pub(super) struct OpenTxn {
    /// Where it started: a stream reconnected mid-transaction starts there again.
    pub(super) start: BinlogPos,
    parts: Vec<ChangeSet>,
    /// Table (index into the source's tables) → part.
    index: HashMap<usize, usize>,
    /// What the parts not handed out yet hold.
    pub(super) bytes: usize,
    /// Chunks of it handed out already.
    chunks: usize,
    /// Every table it changed, chunks handed out included: each gets the end position.
    touched: Vec<TableId>,
    /// The ordered tables among them (see [`OpenTxn::add`]).
    ordered: Vec<TableId>,
    /// An XA transaction's group, up to its `XA PREPARE`: held whole until its commit, never
    /// handed out in chunks (see `xa.rs`).
    pub(super) xa: bool,
    /// `SAVEPOINT`s set in it, oldest first, with what it held then (see
    /// [`OpenTxn::rollback_to`]).
    savepoints: Vec<(String, Mark)>,
}

/// What an open transaction held when a savepoint was set: how many chunks it had handed
/// out, and each part's changes and bytes.
#[derive(Debug, Clone)]
struct Mark {
    chunks: usize,
    parts: Vec<(usize, usize)>,
}

/// Why a `ROLLBACK TO` cannot be followed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Undo {
    /// The savepoint was not read in this transaction.
    Unknown,
    /// Changes after the savepoint were handed out already, in a chunk.
    Chunked,
}

impl OpenTxn {
    /// A transaction whose group starts at `start`; `xa`: an XA transaction's, up to its
    /// `XA PREPARE`.
    pub(super) fn new(start: BinlogPos, xa: bool) -> Self {
        OpenTxn {
            start,
            parts: Vec::new(),
            index: HashMap::new(),
            bytes: 0,
            chunks: 0,
            touched: Vec::new(),
            ordered: Vec::new(),
            xa,
            savepoints: Vec::new(),
        }
    }

    /// `SAVEPOINT name`: what the transaction holds now is kept by a later `ROLLBACK TO` it
    /// (a savepoint of the same name set again replaces the older one, as on the server).
    pub(super) fn savepoint(&mut self, name: &str) {
        self.savepoints
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        let mark = Mark {
            chunks: self.chunks,
            parts: self
                .parts
                .iter()
                .map(|p| (p.changes.len(), p.bytes))
                .collect(),
        };
        self.savepoints.push((name.to_string(), mark));
    }

    /// `ROLLBACK TO [SAVEPOINT] name`: the changes read since the savepoint are taken back
    /// (MariaDB writes the statement, with the rows events before it, when the transaction
    /// also changed a non-transactional table; the server took them back). Savepoints set
    /// after it are gone; it stays. A part the savepoint did not hold keeps its place,
    /// empty, so that a table's pending shape it carries is not lost.
    pub(super) fn rollback_to(&mut self, name: &str) -> Result<(), Undo> {
        let at = self
            .savepoints
            .iter()
            .rposition(|(n, _)| n.eq_ignore_ascii_case(name))
            .ok_or(Undo::Unknown)?;
        let mark = self.savepoints[at].1.clone();
        if mark.chunks != self.chunks {
            return Err(Undo::Chunked);
        }
        self.savepoints.truncate(at + 1);
        for (i, p) in self.parts.iter_mut().enumerate() {
            let (len, bytes) = mark.parts.get(i).copied().unwrap_or((0, 0));
            p.changes.truncate(len);
            p.bytes = bytes;
        }
        self.bytes = self.parts.iter().map(|p| p.bytes).sum();
        Ok(())
    }

    /// The tables the transaction changed so far (chunks handed out included).
    pub(super) fn touched(&self) -> &[TableId] {
        &self.touched
    }

    /// Chunks of it were handed out already.
    pub(super) fn chunked(&self) -> bool {
        self.chunks > 0
    }

    /// Adds changes of table `ti` (index into the source's tables; `table` its id). The
    /// table's first part in the transaction (or chunk) carries its `pending_shape`; in an XA
    /// transaction, held until its commit while later transactions of the table may apply
    /// first, the part takes it only at the commit (`take_shapes`). An `ordered` table's
    /// changes go to its part only while no other ordered table's part follows it; else they
    /// start a part of their own, so that the target applies them in the source's order
    /// (a parent's delete after the child rows inserted before it, which its cascade takes).
    pub(super) fn add(
        &mut self,
        ti: usize,
        table: TableId,
        ordered: bool,
        pending_shape: &mut Option<Arc<TableModel>>,
        changes: Vec<Change>,
        bytes: usize,
    ) {
        if !self.touched.contains(&table) {
            self.touched.push(table);
        }
        if ordered && !self.ordered.contains(&table) {
            self.ordered.push(table);
        }
        let open = self.index.get(&ti).copied().filter(|&p| {
            !ordered
                || self.parts[p + 1..]
                    .iter()
                    .all(|q| !self.ordered.contains(&q.table))
        });
        let part = match open {
            Some(p) => p,
            None => {
                let first = !self.parts.iter().any(|p| p.table == table);
                self.index.insert(ti, self.parts.len());
                let shape = if self.xa || !first {
                    None
                } else {
                    pending_shape.take()
                };
                self.parts.push(part(table, Vec::new(), shape));
                self.parts.len() - 1
            }
        };
        self.parts[part].changes.extend(changes);
        self.parts[part].bytes += bytes;
        self.bytes += bytes;
    }

    /// At an XA transaction's commit: each part without a shape carries its table's pending
    /// one, if the transactions applied since it was prepared did not carry it already.
    pub(super) fn take_shapes(
        &mut self,
        mut pending: impl FnMut(TableId) -> Option<Arc<TableModel>>,
    ) {
        for p in &mut self.parts {
            if p.shape.is_none() {
                p.shape = pending(p.table);
            }
        }
    }

    /// Hands out what the transaction holds so far, keeping it open.
    pub(super) fn chunk(&mut self) -> Txn {
        self.chunks += 1;
        self.index.clear();
        self.bytes = 0;
        Txn {
            parts: std::mem::take(&mut self.parts),
            complete: false,
            flush: false,
        }
    }

    /// The transaction ended at `pos` (its commit at `ts`): what is left to hand out, if
    /// anything.
    pub(super) fn end(self, pos: &BinlogPos, ts: u32) -> Option<Txn> {
        if self.parts.is_empty() && self.chunks == 0 {
            return None;
        }
        let mut parts = self.parts;
        // Tables changed only in chunks already handed out: their position moves too.
        for table in self.touched {
            if !parts.iter().any(|p| p.table == table) {
                parts.push(part(table, Vec::new(), None));
            }
        }
        Some(finish(parts, pos, ts))
    }
}

/// A part of a transaction: `finish` sets its position and commit time.
pub(super) fn part(
    table: TableId,
    changes: Vec<Change>,
    shape: Option<Arc<TableModel>>,
) -> ChangeSet {
    ChangeSet {
        table,
        changes,
        position: Position(serde_json::Value::Null),
        bytes: 0,
        source_time: None,
        shape,
        first_reads: false,
        beside: false,
    }
}

/// A transaction's commit time, for lag: the binlog stamps events in whole seconds, so
/// within the event's second the moment sluice read it stands for it (exact to a few
/// milliseconds when the stream is caught up); an event read later than its second (a
/// backlog) is taken at the end of that second.
fn commit_time(ts: u32, read_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let start = DateTime::from_timestamp(i64::from(ts), 0)?;
    let end = start + chrono::Duration::microseconds(999_999);
    Some(read_at.clamp(start, end))
}

/// Sets the positions (the transaction's end) and commit time of a transaction's parts.
pub(super) fn finish(mut parts: Vec<ChangeSet>, pos: &BinlogPos, ts: u32) -> Txn {
    let position = Stored {
        binlog: pos.clone(),
        snapshot: None,
    }
    .position();
    let at = commit_time(ts, Utc::now());
    for p in &mut parts {
        p.position = position.clone();
        p.source_time = at;
    }
    Txn {
        parts,
        complete: true,
        flush: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn txn_with(rows: &[(usize, i64)]) -> OpenTxn {
        let mut t = OpenTxn::new(BinlogPos::at("mysql-bin.000001", 4), false);
        for &(ti, id) in rows {
            t.add(
                ti,
                ti,
                false,
                &mut None,
                vec![Change::insert(vec![Value::Int(id)])],
                10,
            );
        }
        t
    }

    fn ids(t: &OpenTxn) -> Vec<(TableId, usize)> {
        t.parts.iter().map(|p| (p.table, p.changes.len())).collect()
    }

    #[test]
    fn a_rollback_to_a_savepoint_takes_back_what_came_after_it() {
        let mut t = txn_with(&[(0, 1)]);
        t.savepoint("s1");
        t.add(
            0,
            0,
            false,
            &mut None,
            vec![Change::insert(vec![Value::Int(2)])],
            10,
        );
        t.add(
            1,
            1,
            false,
            &mut None,
            vec![Change::insert(vec![Value::Int(3)])],
            10,
        );
        t.savepoint("s2");
        t.add(
            1,
            1,
            false,
            &mut None,
            vec![Change::insert(vec![Value::Int(4)])],
            10,
        );
        assert_eq!(t.rollback_to("S2"), Ok(()));
        assert_eq!((ids(&t), t.bytes), (vec![(0, 2), (1, 1)], 30));
        // s2 stays after a rollback to it; s1 takes back everything after it.
        assert_eq!(t.rollback_to("s2"), Ok(()));
        assert_eq!(t.rollback_to("s1"), Ok(()));
        assert_eq!((ids(&t), t.bytes), (vec![(0, 1), (1, 0)], 10));
        // Savepoints after s1 are gone with the rollback.
        assert_eq!(t.rollback_to("s2"), Err(Undo::Unknown));
        assert_eq!(t.rollback_to("never"), Err(Undo::Unknown));
    }

    #[test]
    fn a_rollback_past_a_chunk_handed_out_cannot_be_followed() {
        let mut t = txn_with(&[(0, 1)]);
        t.savepoint("s");
        t.add(
            0,
            0,
            false,
            &mut None,
            vec![Change::insert(vec![Value::Int(2)])],
            10,
        );
        let _ = t.chunk();
        assert!(t.chunked());
        assert_eq!(t.rollback_to("s"), Err(Undo::Chunked));
        // A savepoint set after the chunk is fine.
        t.savepoint("later");
        t.add(
            0,
            0,
            false,
            &mut None,
            vec![Change::insert(vec![Value::Int(3)])],
            10,
        );
        assert_eq!(t.rollback_to("later"), Ok(()));
        assert_eq!(ids(&t), vec![(0, 0)]);
    }

    #[test]
    fn commit_times_are_read_times_within_the_event_second() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let ts = at("2026-11-25T10:00:00Z").timestamp() as u32;
        // Read during its second: the read time.
        assert_eq!(
            commit_time(ts, at("2026-11-25T10:00:00.250Z")),
            Some(at("2026-11-25T10:00:00.250Z"))
        );
        // Read later (a backlog): the end of its second.
        assert_eq!(
            commit_time(ts, at("2026-11-25T10:05:00Z")),
            Some(at("2026-11-25T10:00:00.999999Z"))
        );
        // A clock behind the server's: the event's second.
        assert_eq!(
            commit_time(ts, at("2026-11-25T09:59:59Z")),
            Some(at("2026-11-25T10:00:00Z"))
        );
    }

    #[test]
    fn ordered_tables_keep_the_source_order_in_parts_of_their_own() {
        // Parent (0) and child (1) ordered, 2 not: insert parent, insert child, delete parent,
        // a change of the unordered table between.
        let mut t = OpenTxn::new(BinlogPos::at("mysql-bin.000001", 4), false);
        let add = |t: &mut OpenTxn, ti: usize, ordered: bool| {
            t.add(
                ti,
                ti,
                ordered,
                &mut None,
                vec![Change::insert(vec![Value::Int(1)])],
                10,
            )
        };
        add(&mut t, 0, true);
        add(&mut t, 0, true);
        add(&mut t, 1, true);
        add(&mut t, 2, false);
        add(&mut t, 0, true);
        add(&mut t, 2, false);
        add(&mut t, 1, true);
        assert_eq!(ids(&t), vec![(0, 2), (1, 1), (2, 2), (0, 1), (1, 1)]);
        // Unordered tables keep one part each, as before.
        let t = txn_with(&[(0, 1), (1, 2), (0, 3)]);
        assert_eq!(ids(&t), vec![(0, 2), (1, 1)]);
    }
}
