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
