//! The writer actor alone, fed batches by the test, over a [`MemorySink`].

use std::time::Duration;

use crossbeam_channel::Sender;

use super::lane::Lane;
use super::{changes, handles, key, model, no_position, position, row, upserts};
use super::{MemoryHandle, MemorySink};
use crate::error::Error;
use crate::model::{Batch, Change, ChangeSet};
use crate::pipeline::{BatchMsg, Event, Lease};
use crate::telemetry::TableHandle;
use crate::value::Value;

type Handles = std::sync::Arc<[std::sync::Arc<TableHandle>]>;

const WAIT: Duration = Duration::from_secs(5);

fn send(tx: &Sender<BatchMsg>, parts: Vec<ChangeSet>, commit: bool) {
    let batch = Batch {
        parts,
        commit,
        transactions: 0,
    };
    tx.send(BatchMsg::Batch(batch, Lease::default())).unwrap();
}

/// A writer over a memory sink of `tables` tables.
fn writer(tables: usize) -> (Lane, Sender<BatchMsg>, MemoryHandle, Handles) {
    let sink = MemorySink::new((0..tables).map(|t| (t, model(&format!("t{t}")))));
    let mem = sink.handle();
    let h = handles(tables);
    let (lane, tx) = Lane::writer(Box::new(sink), h.clone());
    (lane, tx, mem, h)
}

fn failed(e: &Event, table: usize, what: fn(&Error) -> bool) -> bool {
    matches!(e, Event::TableFailed { table: t, stage: "writer", error } if *t == table && what(error))
}

/// Three batches of one table whose changes only end right applied in order.
fn three_batches(tx: &Sender<BatchMsg>) {
    send(tx, vec![upserts(0, 1..3, position(1))], true);
    let second = vec![
        Change::update(row(1, "b"), None),
        Change::delete(row(2, "")),
    ];
    send(tx, vec![changes(0, second, position(2))], true);
    let third = vec![Change::update(row(3, "c"), Some(vec![Value::Int(1)]))];
    send(tx, vec![changes(0, third, position(3))], true);
}

fn positions(mem: &MemoryHandle) -> Vec<crate::model::Position> {
    mem.commits()
        .iter()
        .map(|c| c.positions[&0].clone())
        .collect()
}

#[test]
fn batches_are_applied_in_order() {
    let (lane, tx, mem, h) = writer(1);
    three_batches(&tx);
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    assert_eq!(mem.rows(0), [row(3, "c")]);
    assert_eq!(positions(&mem), [position(1), position(2), position(3)]);
    let m = h[0].snapshot();
    assert_eq!(
        (m.rows_written, m.batches, m.position),
        (5, 3, Some(position(3)))
    );
}

#[test]
fn a_retryable_sink_error_resets_the_sink_and_retries_the_batch() {
    let (lane, tx, mem, _) = writer(1);
    mem.fail_apply(2);
    three_batches(&tx);
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    let s = mem.state();
    assert_eq!((s.applies, s.resets), (4, 1));
    drop(s);
    // Nothing lost, nothing applied twice.
    assert_eq!(mem.rows(0), [row(3, "c")]);
    assert_eq!(positions(&mem), [position(1), position(2), position(3)]);
    let applied: usize = mem.commits().iter().map(|c| c.changes[&0]).sum();
    assert_eq!(applied, 5);
    assert!(!lane
        .events()
        .iter()
        .any(|e| matches!(e, Event::TableFailed { .. })));
}

/// Arms a failure of table 0, then writes a batch of table 0, one of table 1 and one more of
/// table 0: table 0 stops with the error `is` accepts, table 1 goes on.
fn table_0_stops(
    arm: impl FnOnce(&MemoryHandle),
    is: fn(&Error) -> bool,
) -> (MemoryHandle, Handles) {
    let (lane, tx, mem, h) = writer(2);
    arm(&mem);
    send(&tx, vec![upserts(0, 1..4, position(1))], true);
    send(&tx, vec![upserts(1, 0..1, position(1))], true);
    send(&tx, vec![upserts(0, 4..5, position(2))], true);
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    assert!(lane.events().iter().any(|e| failed(e, 0, is)));
    // Nothing of it is committed; its later batch never reached the sink.
    assert_eq!((mem.rows(0), mem.position(0)), (vec![], None));
    assert_eq!(mem.state().applies, 2);
    // The failed batch's transaction is dropped (a sink may leave it open on a permanent
    // error: PostgreSQL's would commit its rows with the next batch).
    assert_eq!(mem.state().resets, 1);
    assert!(h[0].stopped() && !h[1].stopped());
    assert_eq!(mem.rows(1), [row(0, "v0")]);
    assert_eq!(mem.position(1), Some(position(1)));
    (mem, h)
}

#[test]
fn a_fenced_table_stops_and_the_others_go_on() {
    table_0_stops(|m| m.fence(0), |e| matches!(e, Error::Fenced { .. }));
}

#[test]
fn a_bad_row_stops_its_table_and_nothing_of_its_batch_is_committed() {
    let (_, h) = table_0_stops(
        |m| m.bad_row(0, key(2)),
        |e| matches!(e, Error::BadRow { .. }),
    );
    assert_eq!(h[0].snapshot().bad_rows, 1);
}

#[test]
fn a_retryable_error_mid_transaction_breaks_the_lane_without_a_retry() {
    let (lane, tx, mem, _) = writer(1);
    mem.fail_apply(2);
    send(&tx, vec![upserts(0, 0..2, no_position())], false);
    send(&tx, vec![upserts(0, 2..4, no_position())], false);
    assert!(lane.wait_event(WAIT, |e| matches!(e, Event::LaneBroken { lane: 0, .. })));
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    let s = mem.state();
    // Not retried: what the first chunk applied went with the transaction.
    assert_eq!((s.applies, s.resets, s.in_transaction), (2, 1, false));
    assert!(s.commits.is_empty() && s.tables.values().all(|t| t.is_empty()));
}

/// Once a transaction spanning several batches is lost, everything that follows is dropped
/// until the lane is restarted: its last chunk must not commit alone, with the position of
/// the transaction's end, leaving the first chunks' rows lost for good.
#[test]
fn after_a_broken_lane_the_rest_of_its_transaction_is_not_committed() {
    let (lane, tx, mem, _) = writer(1);
    mem.fail_apply(2);
    send(&tx, vec![upserts(0, 0..2, no_position())], false);
    send(&tx, vec![upserts(0, 2..4, no_position())], false);
    send(&tx, vec![upserts(0, 4..5, position(9))], true);
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    assert_eq!(mem.position(0), None, "rows committed: {:?}", mem.rows(0));
}

/// A non-retryable error in a chunk stops its table and drops the transaction (nothing of it
/// commits, the failed table's first chunk included); the lane starts again from the stored
/// positions, so the other tables read the transaction again without the failed one.
#[test]
fn a_bad_row_mid_transaction_stops_its_table_and_restarts_the_lane() {
    let (lane, tx, mem, _) = writer(2);
    mem.bad_row(0, key(5));
    send(
        &tx,
        vec![
            upserts(0, 0..2, no_position()),
            upserts(1, 0..2, no_position()),
        ],
        false,
    );
    send(&tx, vec![upserts(0, 4..6, no_position())], false);
    assert!(lane.wait_event(WAIT, |e| failed(e, 0, |e| matches!(
        e,
        Error::BadRow { .. }
    ))));
    assert!(lane.wait_event(WAIT, |e| matches!(e, Event::LaneBroken { lane: 0, .. })));
    assert!(!mem.state().in_transaction);
    send(
        &tx,
        vec![upserts(0, 6..7, position(9)), upserts(1, 2..3, position(9))],
        true,
    );
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    let s = mem.state();
    assert!(s.commits.is_empty() && s.tables.values().all(|t| t.is_empty()));
    drop(s);
    assert_eq!(mem.position(0), None);
    assert_eq!(mem.position(1), None);
}

/// A sink that waits for the test's word before each apply (`Ok`), or fails it (`Err`).
struct Gated {
    inner: MemorySink,
    gate: crossbeam_channel::Receiver<bool>,
    /// Applies asked of it.
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl crate::sink::Sink for Gated {
    fn apply<'a>(
        &'a mut self,
        batch: &'a Batch,
    ) -> futures::future::BoxFuture<'a, crate::error::Result<Vec<crate::sink::PartApplied>>> {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let go = self.gate.recv_timeout(WAIT).unwrap_or(false);
        if !go {
            return Box::pin(async { Err(super::retryable("the copy's connection (injected)")) });
        }
        self.inner.apply(batch)
    }

    fn caught_up(
        &mut self,
        table: crate::model::TableId,
    ) -> futures::future::BoxFuture<'_, crate::error::Result<crate::sink::CaughtUp>> {
        self.inner.caught_up(table)
    }

    fn reset(&mut self) {
        self.inner.reset()
    }

    fn in_transaction(&self) -> bool {
        self.inner.in_transaction()
    }
}

/// A writer of two tables whose copy's connection applies only when the test says so.
fn writer_beside() -> (
    Lane,
    Sender<BatchMsg>,
    MemoryHandle,
    Handles,
    crossbeam_channel::Sender<bool>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let sink = MemorySink::new((0..2).map(|t| (t, model(&format!("t{t}")))));
    let mem = sink.handle();
    let (gate_tx, gate) = crossbeam_channel::unbounded();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let side = Gated {
        inner: sink.another(),
        gate,
        asked: asked.clone(),
    };
    let h = handles(2);
    let (lane, tx) = Lane::writer_beside(Box::new(sink), Some(Box::new(side)), h.clone());
    (lane, tx, mem, h, gate_tx, asked)
}

fn chunk(table: usize, ids: std::ops::Range<i64>, position: crate::model::Position) -> ChangeSet {
    ChangeSet {
        beside: true,
        ..upserts(table, ids, position)
    }
}

fn until(what: &str, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_copys_chunks_commit_on_their_own_connection_and_the_tables_changes_follow_them() {
    let (lane, tx, mem, h, gate, asked) = writer_beside();
    // The chunk of table 0 and a streamed change of table 1, in one batch.
    send(
        &tx,
        vec![chunk(0, 1..4, position(1)), upserts(1, 1..2, position(1))],
        true,
    );
    send(&tx, vec![upserts(1, 2..3, position(2))], true);
    // Table 1 is not held behind the chunk, which waits for the gate.
    until("table 1's batches", || mem.position(1) == Some(position(2)));
    assert!(mem.rows(0).is_empty());
    // Table 0's own change follows its chunk, on the copy's connection, and table 1's next
    // batch does not wait for either.
    let update = vec![Change::update(row(1, "b"), None)];
    send(&tx, vec![changes(0, update, position(2))], true);
    send(&tx, vec![upserts(1, 3..4, position(3))], true);
    until("table 1's third batch", || {
        mem.position(1) == Some(position(3))
    });
    assert_eq!((mem.rows(0), mem.position(0)), (vec![], None));
    gate.send(true).unwrap();
    until("the chunk", || mem.position(0) == Some(position(1)));
    assert_eq!(mem.rows(0), [row(1, "v1"), row(2, "v2"), row(3, "v3")]);
    gate.send(true).unwrap();
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    assert_eq!(mem.rows(0), [row(1, "b"), row(2, "v2"), row(3, "v3")]);
    assert_eq!(mem.position(0), Some(position(2)));
    assert_eq!(mem.rows(1).len(), 3);
    let m = h[0].snapshot();
    assert_eq!(
        (m.rows_written, m.batches, m.position),
        (4, 2, Some(position(2)))
    );
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 2);
}

#[test]
fn a_batch_the_copys_connection_fails_is_applied_on_the_lanes_with_those_queued_after_it() {
    let (lane, tx, mem, h, gate, asked) = writer_beside();
    send(&tx, vec![chunk(0, 1..3, position(1))], true);
    send(&tx, vec![chunk(0, 3..5, position(2))], true);
    let delete = vec![Change::delete(row(1, ""))];
    send(&tx, vec![changes(0, delete, position(3))], true);
    send(&tx, vec![upserts(1, 1..2, position(1))], true);
    until("table 1's batch", || mem.position(1) == Some(position(1)));
    // Caught up: waits for the copy's connection, and runs after everything of table 0.
    tx.send(BatchMsg::CaughtUp(0)).unwrap();
    // The first chunk fails there: it and the two after it are applied here, in order.
    gate.send(false).unwrap();
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    assert_eq!(mem.rows(0), [row(2, "v2"), row(3, "v3"), row(4, "v4")]);
    assert_eq!(mem.position(0), Some(position(3)));
    assert_eq!(
        positions_of(&mem, 0),
        [position(1), position(2), position(3)]
    );
    assert_eq!(mem.state().caught_up, [0]);
    assert!(h[0].snapshot().failed.is_none());
    // The two after the failed one came back unapplied.
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn a_schema_change_of_a_table_being_copied_waits_for_its_chunks_and_stays_on_the_lanes_connection()
{
    let (lane, tx, mem, _, gate, asked) = writer_beside();
    send(&tx, vec![chunk(0, 1..3, position(1))], true);
    let reshaped = ChangeSet {
        shape: Some(model("t0")),
        ..upserts(0, 3..4, position(2))
    };
    send(&tx, vec![reshaped], true);
    // Its next chunk goes on the lane's connection: the gate is opened once only.
    send(&tx, vec![chunk(0, 4..5, position(3))], true);
    gate.send(true).unwrap();
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    // In order: the schema change after the chunk held on the copy's connection.
    assert_eq!(
        positions_of(&mem, 0),
        [position(1), position(2), position(3)]
    );
    assert_eq!(mem.rows(0).len(), 4);
    assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// The positions `table` committed, in order.
fn positions_of(mem: &MemoryHandle, table: usize) -> Vec<crate::model::Position> {
    mem.commits()
        .iter()
        .filter_map(|c| c.positions.get(&table).cloned())
        .collect()
}

#[test]
fn a_copy_caught_up_is_finished_once_its_chunks_commit_and_the_other_tables_do_not_wait() {
    let (lane, tx, mem, _, gate, _) = writer_beside();
    send(&tx, vec![chunk(0, 1..3, position(1))], true);
    tx.send(BatchMsg::CaughtUp(0)).unwrap();
    send(&tx, vec![upserts(1, 1..2, position(1))], true);
    until("table 1's batch", || mem.position(1) == Some(position(1)));
    assert!(
        mem.state().caught_up.is_empty(),
        "finished before its chunk committed"
    );
    gate.send(true).unwrap();
    until("the copy to be finished", || mem.state().caught_up == [0]);
    assert_eq!(mem.position(0), Some(position(1)));
    drop(tx);
    assert!(lane.wait_finished(WAIT));
}

/// A sink whose apply panics, as a bug would.
struct Panicking;

impl crate::sink::Sink for Panicking {
    fn apply<'a>(
        &'a mut self,
        _: &'a Batch,
    ) -> futures::future::BoxFuture<'a, crate::error::Result<Vec<crate::sink::PartApplied>>> {
        panic!("the copy's sink failed (injected)")
    }

    fn caught_up(
        &mut self,
        _: crate::model::TableId,
    ) -> futures::future::BoxFuture<'_, crate::error::Result<crate::sink::CaughtUp>> {
        Box::pin(async { Ok(crate::sink::CaughtUp::default()) })
    }

    fn reset(&mut self) {}

    fn in_transaction(&self) -> bool {
        false
    }
}

#[test]
fn a_copy_writer_that_dies_with_batches_restarts_the_lane_rather_than_losing_them() {
    let sink = MemorySink::new((0..2).map(|t| (t, model(&format!("t{t}")))));
    let mem = sink.handle();
    let (lane, tx) = Lane::writer_beside(Box::new(sink), Some(Box::new(Panicking)), handles(2));
    send(&tx, vec![chunk(0, 1..3, position(1))], true);
    // Table 0's next change must follow the lost chunk: it waits, and finds it gone.
    send(&tx, vec![upserts(0, 3..4, position(2))], true);
    assert!(lane.wait_event(WAIT, |e| matches!(e, Event::LaneBroken { lane: 0, .. })));
    send(&tx, vec![upserts(1, 1..2, position(1))], true);
    drop(tx);
    assert!(lane.wait_finished(WAIT));
    // Nothing after the lost batch is committed: the lane reads it all again.
    assert_eq!((mem.position(0), mem.position(1)), (None, None));
}
