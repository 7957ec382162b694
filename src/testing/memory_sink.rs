//! [`MemorySink`]: the [`Sink`] contract over in-memory tables.
//!
//! - Each table is a `BTreeMap` from primary key to row; positions are stored per table.
//! - A batch is applied to a copy of the tables and takes effect whole or not at all: a
//!   `commit: true` batch commits its changes and its positions together; a `commit: false`
//!   batch (a chunk) is held in an open transaction that commits with the next `commit: true`
//!   batch and is discarded by [`Sink::reset`].
//! - Changes are applied in order: inserts, updates and upserts overwrite the row with the
//!   same key, an update whose key changed removes the old key's row, a delete of an absent
//!   row does nothing, a truncate empties the table.
//! - Where the contract leaves it open, it does as `PgSink` does: a position-less part of a
//!   committing batch fails it ([`Error::Other`]); [`Sink::in_transaction`] is true from the
//!   start of an apply (`BEGIN`) until its commit or a reset, so also after a failed apply;
//!   an apply after a failed one, without a reset, goes on in the same transaction (what the
//!   failed batch applied is not in it: the contract says it commits nothing).
//!
//! Failures are injected through the [`MemoryHandle`]: a retryable error on the nth apply
//! (the connection is lost before anything is applied: every call fails until a reset), a
//! table fenced (its positions are refused at commit), a row refused (`on_bad_row`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;

use crate::config::OnBadRow;
use crate::error::{Error, Result};
use crate::model::{Batch, ChangeSet, Op, Position, TableId, TableModel};
use crate::sink::{CaughtUp, PartApplied, Sink};
use crate::value::{Row, Value};

/// A primary key's values, in key order, ordered so that they can key a `BTreeMap`.
#[derive(Debug, Clone, PartialEq)]
pub struct Key(pub Vec<Value>);

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Same kinds compare by value; different kinds by their JSON form (never in one key
        // column of a test).
        let one = |a: &Value, b: &Value| match (a, b) {
            (Value::Int(x), Value::Int(y)) => x.cmp(y),
            (Value::UInt(x), Value::UInt(y)) => x.cmp(y),
            (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
            (Value::Text(x), Value::Text(y)) => x.cmp(y),
            (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
            _ => serde_json::to_string(a)
                .expect("values serialise")
                .cmp(&serde_json::to_string(b).expect("values serialise")),
        };
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| one(a, b))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| self.0.len().cmp(&other.0.len()))
    }
}

/// One table's rows, by primary key.
pub type Rows = BTreeMap<Key, Row>;

/// A row refused with `on_bad_row = "dead_letter"`, committed with its batch.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub table: TableId,
    pub row: Row,
    pub reason: String,
}

/// One commit: the batches it ended (its chunks and itself), the changes they applied per
/// table, and the positions it stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub batches: usize,
    pub changes: BTreeMap<TableId, usize>,
    pub positions: BTreeMap<TableId, Position>,
    pub transactions: u64,
}

/// What is committed, what was called, and the failures armed.
#[derive(Debug, Default)]
pub struct MemoryState {
    pub tables: BTreeMap<TableId, Rows>,
    pub positions: BTreeMap<TableId, Position>,
    pub dead_letters: Vec<DeadLetter>,
    pub commits: Vec<Committed>,
    /// Calls to `apply`, failed ones included.
    pub applies: usize,
    pub resets: usize,
    /// Calls to `caught_up`, in order.
    pub caught_up: Vec<TableId>,
    /// What [`Sink::in_transaction`] last answered would be.
    pub in_transaction: bool,
    fail_applies: BTreeSet<usize>,
    fenced: BTreeSet<TableId>,
    bad_rows: BTreeSet<(TableId, Key)>,
}

/// A shared view of a [`MemorySink`], kept by the test while the sink is owned elsewhere.
#[derive(Debug, Clone, Default)]
pub struct MemoryHandle(Arc<Mutex<MemoryState>>);

impl MemoryHandle {
    pub fn state(&self) -> MutexGuard<'_, MemoryState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `n`th call to `apply` (counting from 1, calls made already included) fails with a
    /// retryable error before it applies anything.
    pub fn fail_apply(&self, n: usize) {
        self.state().fail_applies.insert(n);
    }

    /// Another process owns `table` now: a batch storing its position fails with
    /// [`Error::Fenced`].
    pub fn fence(&self, table: TableId) {
        self.state().fenced.insert(table);
    }

    /// The target refuses the row with this key.
    pub fn bad_row(&self, table: TableId, key: Key) {
        self.state().bad_rows.insert((table, key));
    }

    /// The committed rows of `table`, in key order.
    pub fn rows(&self, table: TableId) -> Vec<Row> {
        self.state()
            .tables
            .get(&table)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The committed position of `table`.
    pub fn position(&self, table: TableId) -> Option<Position> {
        self.state().positions.get(&table).cloned()
    }

    pub fn commits(&self) -> Vec<Committed> {
        self.state().commits.clone()
    }
}

/// The open transaction, or the batch being applied: tables as they are inside it.
#[derive(Debug, Clone, Default)]
struct Work {
    tables: BTreeMap<TableId, Rows>,
    models: HashMap<TableId, Arc<TableModel>>,
    dead_letters: Vec<DeadLetter>,
    batches: usize,
    changes: BTreeMap<TableId, usize>,
}

/// See the module doc.
pub struct MemorySink {
    shared: MemoryHandle,
    /// The shapes committed.
    models: HashMap<TableId, Arc<TableModel>>,
    on_bad_row: OnBadRow,
    /// `BEGIN` was issued, and neither a commit nor a reset followed (`PgSink`'s `open`).
    open: bool,
    /// What the open transaction applied (the chunks before), when one is open.
    txn: Option<Work>,
    /// The connection was lost: every call fails until a reset.
    lost: bool,
}

impl MemorySink {
    /// A sink for these tables, empty; `on_bad_row = "stop"`.
    pub fn new(tables: impl IntoIterator<Item = (TableId, Arc<TableModel>)>) -> Self {
        MemorySink {
            shared: MemoryHandle::default(),
            models: tables.into_iter().collect(),
            on_bad_row: OnBadRow::Stop,
            open: false,
            txn: None,
            lost: false,
        }
    }

    pub fn on_bad_row(mut self, on_bad_row: OnBadRow) -> Self {
        self.on_bad_row = on_bad_row;
        self
    }

    /// Another sink of the same tables, committing into the same memory (a second
    /// connection to the same target).
    pub fn another(&self) -> MemorySink {
        MemorySink {
            shared: self.shared.clone(),
            models: self.models.clone(),
            on_bad_row: self.on_bad_row,
            open: false,
            txn: None,
            lost: false,
        }
    }

    pub fn handle(&self) -> MemoryHandle {
        self.shared.clone()
    }

    fn lost_connection() -> Error {
        super::retryable("applying a batch in memory")
    }

    fn apply_now(&mut self, batch: &Batch) -> Result<Vec<PartApplied>> {
        let mut shared = self.shared.state();
        shared.applies += 1;
        if self.lost {
            return Err(Self::lost_connection());
        }
        let n = shared.applies;
        if shared.fail_applies.remove(&n) {
            // The connection is gone before anything was sent, with any open transaction.
            self.lost = true;
            self.txn = None;
            return Err(Self::lost_connection());
        }
        self.open = true;
        shared.in_transaction = true;
        let before = self.txn.take().unwrap_or_else(|| Work {
            tables: shared.tables.clone(),
            models: self.models.clone(),
            ..Work::default()
        });
        let mut work = before.clone();
        let applied = self.apply_parts(&shared, &mut work, batch);
        let applied = match applied {
            Ok(a) if batch.commit => Self::store_positions(&shared, &work, batch).map(|()| a),
            other => other,
        };
        let applied = match applied {
            Ok(a) => a,
            Err(e) => {
                // Nothing of the failed batch stays; the transaction stays open.
                self.txn = Some(before);
                return Err(e);
            }
        };
        work.batches += 1;
        if !batch.commit {
            self.txn = Some(work);
            return Ok(applied);
        }
        // Only the tables the transaction wrote: another instance (a lane's second
        // connection) may have committed others meanwhile.
        for t in work.changes.keys() {
            match work.tables.remove(t) {
                Some(rows) => shared.tables.insert(*t, rows),
                None => shared.tables.remove(t),
            };
        }
        for p in &batch.parts {
            shared.positions.insert(p.table, p.position.clone());
        }
        shared.dead_letters.extend(work.dead_letters);
        shared.commits.push(Committed {
            batches: work.batches,
            changes: work.changes,
            positions: batch
                .parts
                .iter()
                .map(|p| (p.table, p.position.clone()))
                .collect(),
            transactions: batch.transactions,
        });
        self.models = work.models;
        self.open = false;
        shared.in_transaction = false;
        Ok(applied)
    }

    /// Applies every part's changes to `work`.
    fn apply_parts(
        &self,
        shared: &MemoryState,
        work: &mut Work,
        batch: &Batch,
    ) -> Result<Vec<PartApplied>> {
        batch
            .parts
            .iter()
            .map(|part| self.apply_part(shared, work, part))
            .collect()
    }

    fn apply_part(
        &self,
        shared: &MemoryState,
        work: &mut Work,
        part: &ChangeSet,
    ) -> Result<PartApplied> {
        let t = part.table;
        if let Some(shape) = &part.shape {
            work.models.insert(t, shape.clone());
        }
        let model = work
            .models
            .get(&t)
            .cloned()
            .ok_or_else(|| Error::Other(format!("table #{t} is not served by this sink")))?;
        let rows = work.tables.entry(t).or_default();
        let key_of = |row: &Row| Key(model.key_of(row));
        let mut dead = 0;
        for c in &part.changes {
            match c.op {
                Op::Truncate => rows.clear(),
                Op::Delete => {
                    rows.remove(&key_of(&c.row));
                }
                Op::Insert | Op::Update | Op::Upsert => {
                    let key = key_of(&c.row);
                    if shared.bad_rows.contains(&(t, key.clone())) {
                        let reason = "refused by the target (injected)".to_string();
                        if self.on_bad_row == OnBadRow::Stop {
                            return Err(Error::BadRow {
                                table: model.name.clone(),
                                key: model.describe_key(&c.row),
                                reason,
                            });
                        }
                        work.dead_letters.push(DeadLetter {
                            table: t,
                            row: c.row.clone(),
                            reason,
                        });
                        dead += 1;
                        continue;
                    }
                    if let Some(old) = &c.old_key {
                        rows.remove(&Key(old.to_vec()));
                    }
                    rows.insert(key, c.row.clone());
                }
            }
        }
        *work.changes.entry(t).or_default() += part.changes.len() - dead;
        let plain = part.changes.iter().all(|c| {
            matches!(c.op, Op::Insert | Op::Upsert) || (c.op == Op::Update && c.old_key.is_none())
        });
        Ok(PartApplied {
            table: t,
            rows: part.changes.len() - dead,
            merged: !plain,
            dead_lettered: dead,
            filtered: 0,
        })
    }

    /// The checks of storing a committing batch's positions: each part has one, and its
    /// table is still owned.
    fn store_positions(shared: &MemoryState, work: &Work, batch: &Batch) -> Result<()> {
        for p in &batch.parts {
            let name = || work.models[&p.table].name.clone();
            if p.position.0.is_null() {
                return Err(Error::Other(format!(
                    "a batch of {:?} came without its position; nothing of it is committed",
                    name()
                )));
            }
            if shared.fenced.contains(&p.table) {
                return Err(Error::Fenced {
                    table: name(),
                    message: "another process owns the table (injected)".into(),
                });
            }
        }
        Ok(())
    }
}

impl Sink for MemorySink {
    fn apply<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<Vec<PartApplied>>> {
        let r = self.apply_now(batch);
        Box::pin(std::future::ready(r))
    }

    fn caught_up(&mut self, table: TableId) -> BoxFuture<'_, Result<CaughtUp>> {
        let r = if self.lost {
            Err(Self::lost_connection())
        } else {
            self.shared.state().caught_up.push(table);
            Ok(CaughtUp::default())
        };
        Box::pin(std::future::ready(r))
    }

    fn reset(&mut self) {
        self.lost = false;
        self.open = false;
        self.txn = None;
        let mut shared = self.shared.state();
        shared.resets += 1;
        shared.in_transaction = false;
    }

    fn in_transaction(&self) -> bool {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;
    use crate::model::Change;
    use crate::testing::{changes, key, model, no_position, position, row, upserts};

    fn sink() -> (MemorySink, MemoryHandle) {
        let s = MemorySink::new([(0, model("a")), (1, model("b"))]);
        let h = s.handle();
        (s, h)
    }

    fn batch(parts: Vec<ChangeSet>, commit: bool) -> Batch {
        Batch {
            parts,
            commit,
            transactions: 0,
        }
    }

    #[test]
    fn changes_apply_in_order_and_twice_end_the_same() {
        let (mut s, h) = sink();
        let b = batch(
            vec![changes(
                0,
                vec![
                    Change::insert(row(7, "a")),
                    Change::truncate(),
                    Change::insert(row(1, "a")),
                    Change::insert(row(2, "a")),
                    Change::upsert(row(1, "b")),
                    // Key 2 becomes key 3; deleting an absent row does nothing.
                    Change::update(row(3, "a"), Some(vec![Value::Int(2)])),
                    Change::delete(row(9, "")),
                    Change::insert(row(4, "a")),
                    Change::update(row(4, "b"), None),
                    Change::insert(row(5, "a")),
                    Change::delete(row(5, "")),
                ],
                position(1),
            )],
            true,
        );
        for _ in 0..2 {
            let applied = block_on(s.apply(&b)).unwrap();
            assert_eq!(applied[0].rows, 11);
            assert_eq!(h.rows(0), [row(1, "b"), row(3, "a"), row(4, "b")]);
            assert_eq!(h.position(0), Some(position(1)));
        }
        assert_eq!(h.commits().len(), 2);
    }

    #[test]
    fn a_failed_batch_commits_nothing_and_leaves_the_transaction_open() {
        let (mut s, h) = sink();
        block_on(s.apply(&batch(vec![upserts(0, 0..1, position(1))], true))).unwrap();
        h.bad_row(1, key(2));
        let b = batch(
            vec![upserts(0, 1..3, position(2)), upserts(1, 0..3, position(2))],
            true,
        );
        let e = block_on(s.apply(&b)).unwrap_err();
        assert!(
            matches!(e, Error::BadRow { ref key, .. } if key == "id=2"),
            "{e}"
        );
        assert_eq!(h.rows(0), [row(0, "v0")]);
        assert_eq!((h.position(0), h.position(1)), (Some(position(1)), None));
        // As PgSink: in the transaction until a commit or a reset. The next batch goes on
        // in it, without what the failed one applied.
        assert!(s.in_transaction());
        block_on(s.apply(&batch(vec![upserts(1, 5..6, position(3))], true))).unwrap();
        assert!(!s.in_transaction());
        assert_eq!((h.rows(0).len(), h.rows(1).len()), (1, 1));
        block_on(s.apply(&batch(vec![upserts(0, 5..6, no_position())], false))).unwrap();
        s.reset();
        assert!(!s.in_transaction());
    }

    #[test]
    fn a_dead_letter_commits_with_the_rest() {
        let (s, h) = sink();
        let mut s = s.on_bad_row(OnBadRow::DeadLetter);
        h.bad_row(0, key(1));
        let applied = block_on(s.apply(&batch(vec![upserts(0, 0..3, position(1))], true)));
        assert_eq!(applied.unwrap()[0].dead_lettered, 1);
        assert_eq!(h.rows(0), [row(0, "v0"), row(2, "v2")]);
        assert_eq!(h.state().dead_letters[0].row, row(1, "v1"));
    }

    #[test]
    fn chunks_commit_with_the_next_committing_batch_and_a_reset_discards_them() {
        let (mut s, h) = sink();
        let chunk = |ids| batch(vec![upserts(0, ids, no_position())], false);
        block_on(s.apply(&chunk(0..2))).unwrap();
        assert!(s.in_transaction());
        assert!(h.rows(0).is_empty());
        s.reset();
        block_on(s.apply(&chunk(2..4))).unwrap();
        block_on(s.apply(&batch(vec![upserts(0, 4..5, position(9))], true))).unwrap();
        assert!(!s.in_transaction());
        assert_eq!(h.rows(0).len(), 3);
        assert_eq!(h.commits()[0].batches, 2);
        assert_eq!(h.position(0), Some(position(9)));
    }

    #[test]
    fn a_retryable_failure_lasts_until_a_reset() {
        let (mut s, h) = sink();
        h.fail_apply(1);
        let b = batch(vec![upserts(0, 0..1, position(1))], true);
        assert!(block_on(s.apply(&b)).unwrap_err().is_retryable());
        assert!(block_on(s.apply(&b)).unwrap_err().is_retryable());
        assert!(block_on(s.caught_up(0)).is_err());
        s.reset();
        block_on(s.apply(&b)).unwrap();
        assert_eq!(h.rows(0).len(), 1);
    }

    #[test]
    fn fenced_or_position_less_batches_commit_nothing() {
        let (mut s, h) = sink();
        h.fence(1);
        let b = batch(
            vec![upserts(0, 0..1, position(1)), upserts(1, 0..1, position(1))],
            true,
        );
        let e = block_on(s.apply(&b)).unwrap_err();
        assert!(matches!(e, Error::Fenced { .. }), "{e}");
        s.reset();
        let e = block_on(s.apply(&batch(vec![upserts(0, 0..1, no_position())], true)));
        assert!(matches!(e, Err(Error::Other(_))));
        assert!(h.state().tables.values().all(|t| t.is_empty()));
        assert!(h.state().positions.is_empty());
    }
}
