//! The batcher, stepped on the test's thread: when a batch is sent, and what it holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::{changes, handles, no_position, position, upserts};
use crate::error::Error;
use crate::model::{ChangeSet, Position, TableId};
use crate::pipeline::batcher::{Batcher, BatcherConfig};
use crate::pipeline::{BatchMsg, Lease, ReadMsg};
use crate::shutdown::Shutdown;
use crate::source::Txn;
use crate::telemetry::TableHandle;

const HOUR: Duration = Duration::from_secs(3600);

/// What came out of the batcher, in short.
#[derive(Debug, PartialEq)]
enum Out {
    /// `commit`, each part's table and changes, the transactions it completes.
    Batch(bool, Vec<(TableId, usize)>, u64),
    CaughtUp(TableId),
}

struct Rig {
    batcher: Batcher,
    tx: Option<Sender<ReadMsg>>,
    out: Receiver<BatchMsg>,
    handles: Arc<[Arc<TableHandle>]>,
    /// Every batch sent so far, in full.
    sent: Vec<BatchMsg>,
}

fn rig(batch_rows: usize, batch_bytes: usize, linger: Duration) -> Rig {
    let (tx, input) = bounded(64);
    let (out_tx, out) = bounded(64);
    let handles = handles(3);
    let batcher = Batcher::new(Some(BatcherConfig {
        batch_rows,
        batch_bytes,
        linger,
        input,
        out: out_tx,
        handles: handles.clone(),
        ordered: Default::default(),
        shutdown: Shutdown::new(),
    }));
    Rig {
        batcher,
        tx: Some(tx),
        out,
        handles,
        sent: Vec::new(),
    }
}

impl Rig {
    /// Hands the batcher one message and lets it act on it.
    fn feed(&mut self, msg: ReadMsg) {
        self.tx.as_ref().expect("not ended").send(msg).unwrap();
        assert!(self.batcher.step());
    }

    fn set(&mut self, set: ChangeSet) {
        self.feed(ReadMsg::Changes(set, Lease::default()));
    }

    fn txn(&mut self, parts: Vec<ChangeSet>, complete: bool) {
        self.txn_flushed(parts, complete, false);
    }

    fn txn_flushed(&mut self, parts: Vec<ChangeSet>, complete: bool, flush: bool) {
        self.feed(ReadMsg::Txn(
            Txn {
                parts,
                complete,
                flush,
            },
            Lease::default(),
        ));
    }

    /// The input ends: the batcher sends what it holds and finishes.
    fn end(&mut self) {
        self.tx = None;
        assert!(!self.batcher.step());
    }

    /// What was sent since the last look.
    fn took(&mut self) -> Vec<Out> {
        let new: Vec<BatchMsg> = self.out.try_iter().collect();
        let short = new
            .iter()
            .map(|m| match m {
                BatchMsg::Batch(b, _) => Out::Batch(
                    b.commit,
                    b.parts.iter().map(|p| (p.table, p.changes.len())).collect(),
                    b.transactions,
                ),
                BatchMsg::CaughtUp(t) => Out::CaughtUp(*t),
            })
            .collect();
        self.sent.extend(new);
        short
    }

    /// The positions of the last batch sent.
    fn last_positions(&self) -> Vec<Position> {
        match self.sent.last() {
            Some(BatchMsg::Batch(b, _)) => b.parts.iter().map(|p| p.position.clone()).collect(),
            other => panic!("no batch last: {other:?}"),
        }
    }
}

/// `n` upserts of `table` holding `bytes` bytes, as far as the batcher counts.
fn sized(table: TableId, n: i64, bytes: usize, position: Position) -> ChangeSet {
    let mut set = upserts(table, 0..n, position);
    set.bytes = bytes;
    set
}

#[test]
fn a_batch_that_reaches_its_row_limit_is_sent() {
    let mut r = rig(3, usize::MAX, HOUR);
    r.set(upserts(0, 0..2, position(1)));
    assert_eq!(r.took(), []);
    r.set(upserts(0, 2..3, position(2)));
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 3)], 0)]);
    // The batch carries the position after its last change.
    assert_eq!(r.last_positions(), [position(2)]);
}

#[test]
fn a_set_that_would_pass_the_row_limit_starts_the_next_batch() {
    let mut r = rig(3, usize::MAX, HOUR);
    r.set(upserts(0, 0..2, position(1)));
    r.set(upserts(0, 2..4, position(2)));
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 2)], 0)]);
    assert_eq!(r.last_positions(), [position(1)]);
    r.feed(ReadMsg::Idle);
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 2)], 0)]);
    assert_eq!(r.last_positions(), [position(2)]);
}

#[test]
fn a_batch_that_reaches_its_byte_limit_is_sent() {
    let mut r = rig(usize::MAX, 200, HOUR);
    r.set(sized(0, 1, 100, position(1)));
    assert_eq!(r.took(), []);
    r.set(sized(0, 1, 100, position(2)));
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 2)], 0)]);
    // 150 + 100 would pass 200: the 150 go alone.
    r.set(sized(0, 1, 150, position(3)));
    r.set(sized(0, 1, 100, position(4)));
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 1)], 0)]);
    assert_eq!(r.last_positions(), [position(3)]);
}

#[test]
fn the_largest_batch_goes_when_all_tables_together_pass_the_byte_limit() {
    let mut r = rig(usize::MAX, 250, HOUR);
    r.set(sized(0, 1, 100, position(1)));
    r.set(sized(1, 2, 120, position(1)));
    assert_eq!(r.took(), []);
    r.set(sized(2, 3, 60, position(1)));
    assert_eq!(r.took(), [Out::Batch(true, vec![(1, 2)], 0)]);
}

#[test]
fn a_batch_is_sent_when_the_linger_started_at_its_first_change_ends() {
    let linger = Duration::from_millis(300);
    let mut r = rig(usize::MAX, usize::MAX, linger);
    let first = Instant::now();
    r.set(upserts(0, 0..1, position(1)));
    // A second change some time later (the gap is this test's input, not a wait for
    // something to happen): it must not push the deadline back.
    std::thread::sleep(linger * 2 / 3);
    let second = first.elapsed();
    r.set(upserts(0, 1..2, position(2)));
    assert_eq!(r.took(), []);
    // Nothing more comes: the step waits for the linger and sends the batch.
    assert!(r.batcher.step());
    let at = first.elapsed();
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 2)], 0)]);
    assert!(at >= linger, "sent after {at:?}, before the linger");
    assert!(
        at < second + linger,
        "sent after {at:?}: the linger started again at the second change ({second:?})"
    );
}

#[test]
fn flush_and_idle_send_what_is_held() {
    let mut r = rig(usize::MAX, usize::MAX, HOUR);
    r.set(upserts(0, 0..2, position(1)));
    r.set(upserts(1, 0..1, position(1)));
    // Caught up with table 0: its batch, then the news, once.
    r.feed(ReadMsg::Flush {
        table: 0,
        caught_up: true,
    });
    assert_eq!(
        r.took(),
        [Out::Batch(true, vec![(0, 2)], 0), Out::CaughtUp(0)]
    );
    r.feed(ReadMsg::Flush {
        table: 0,
        caught_up: true,
    });
    assert_eq!(r.took(), []);
    // Held back (not caught up): the batch only.
    r.feed(ReadMsg::Flush {
        table: 1,
        caught_up: false,
    });
    assert_eq!(r.took(), [Out::Batch(true, vec![(1, 1)], 0)]);
    // Idle: every table's batch.
    r.set(upserts(0, 2..3, position(2)));
    r.set(upserts(2, 0..1, position(1)));
    r.feed(ReadMsg::Idle);
    let mut got = r.took();
    got.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        got,
        [
            Out::Batch(true, vec![(0, 1)], 0),
            Out::Batch(true, vec![(2, 1)], 0)
        ]
    );
    // Caught up again after a batch was sent: passed on again.
    r.feed(ReadMsg::Flush {
        table: 0,
        caught_up: true,
    });
    assert_eq!(r.took(), [Out::CaughtUp(0)]);
}

#[test]
fn what_is_held_is_sent_at_the_end() {
    let mut r = rig(usize::MAX, usize::MAX, HOUR);
    r.set(upserts(0, 0..2, position(1)));
    r.txn(vec![upserts(1, 0..1, position(7))], true);
    // The per-table batch went before the transaction; the transaction is held, and so is
    // the next set.
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 2)], 0)]);
    r.set(upserts(0, 2..3, position(2)));
    assert_eq!(r.took(), []);
    r.end();
    assert_eq!(
        r.took(),
        [
            Out::Batch(true, vec![(0, 1)], 0),
            Out::Batch(true, vec![(1, 1)], 1)
        ]
    );
    assert_eq!(r.last_positions(), [position(7)]);
}

#[test]
fn a_stopped_tables_batch_is_dropped() {
    let mut r = rig(usize::MAX, usize::MAX, HOUR);
    r.set(upserts(0, 0..2, position(1)));
    r.handles[0].fail(Arc::new(Error::Other("failed".into())));
    r.feed(ReadMsg::Idle);
    assert_eq!(r.took(), []);
}

#[test]
fn source_transactions_stay_whole() {
    let mut r = rig(3, usize::MAX, HOUR);
    // Larger than a batch: sent whole, at its end.
    r.txn(
        vec![upserts(0, 0..2, position(1)), upserts(1, 0..2, position(1))],
        true,
    );
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 2), (1, 2)], 1)]);
    // Small ones share a batch, which ends at a transaction's end.
    r.txn(vec![upserts(0, 2..3, position(2))], true);
    r.txn(vec![upserts(0, 3..4, position(3))], true);
    assert_eq!(r.took(), []);
    r.txn(vec![upserts(1, 2..4, position(4))], true);
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 2), (1, 2)], 3)]);
    assert_eq!(r.last_positions(), [position(3), position(4)]);
}

#[test]
fn a_transaction_that_asks_for_it_sends_the_batch_at_once() {
    // A copy's chunks beside the stream: the second goes with the first, without waiting for
    // the linger or the limits, whatever streamed in between.
    let mut r = rig(usize::MAX, usize::MAX, HOUR);
    r.txn_flushed(vec![upserts(1, 0..3, position(1))], true, false);
    r.txn(vec![upserts(0, 0..1, position(2))], true);
    assert_eq!(r.took(), []);
    r.txn_flushed(vec![upserts(1, 3..6, position(3))], true, true);
    assert_eq!(r.took(), [Out::Batch(true, vec![(1, 6), (0, 1)], 3)]);
    assert_eq!(r.last_positions(), [position(3), position(2)]);
    // The next batch starts empty and waits again.
    r.txn(vec![upserts(0, 1..2, position(4))], true);
    assert_eq!(r.took(), []);
}

#[test]
fn a_large_transaction_goes_in_chunks_committed_by_the_last() {
    let mut r = rig(usize::MAX, 250, HOUR);
    r.txn(vec![sized(0, 1, 100, no_position())], false);
    r.txn(vec![sized(0, 1, 100, no_position())], false);
    assert_eq!(r.took(), []);
    r.txn(
        vec![
            sized(0, 1, 30, no_position()),
            sized(1, 1, 30, no_position()),
        ],
        false,
    );
    assert_eq!(r.took(), [Out::Batch(false, vec![(0, 3), (1, 1)], 0)]);
    assert_eq!(r.last_positions(), [no_position(), no_position()]);
    // Idle does not end an open transaction.
    r.feed(ReadMsg::Idle);
    assert_eq!(r.took(), []);
    r.txn(vec![sized(0, 1, 300, no_position())], false);
    assert_eq!(r.took(), [Out::Batch(false, vec![(0, 1)], 0)]);
    r.txn(
        vec![
            changes(0, vec![], position(9)),
            changes(1, vec![], position(9)),
        ],
        true,
    );
    assert_eq!(r.took(), []);
    r.feed(ReadMsg::Idle);
    assert_eq!(r.took(), [Out::Batch(true, vec![(0, 0), (1, 0)], 1)]);
    assert_eq!(r.last_positions(), [position(9), position(9)]);
}

#[test]
fn a_transaction_cut_short_by_the_end_is_dropped() {
    let mut r = rig(usize::MAX, usize::MAX, HOUR);
    r.txn(vec![upserts(0, 0..2, no_position())], false);
    r.end();
    assert_eq!(r.took(), []);
}
