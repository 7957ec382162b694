//! A whole lane (poller → batcher → writer) between a [`ScriptedSource`] and a
//! [`MemorySink`].

use std::time::Duration;

use super::lane::{Lane, Limits};
use super::{changes, handles, model, no_position, position, retryable, row, upserts};
use super::{Committed, MemoryHandle, MemorySink, ScriptedSource, SourceHandle};
use crate::error::{Error, Result};
use crate::model::Change;
use crate::pipeline::Event;
use crate::source::{After, Step};
use crate::telemetry::TableHandle;

const WAIT: Duration = Duration::from_secs(5);

struct Run {
    lane: Lane,
    mem: MemoryHandle,
    source: SourceHandle,
    handles: std::sync::Arc<[std::sync::Arc<TableHandle>]>,
}

/// Runs a lane of `tables` tables over `script` until its writer finishes.
fn run(tables: usize, limits: Limits, script: Vec<Result<Step>>) -> Run {
    let sink = MemorySink::new((0..tables).map(|t| (t, model(&format!("t{t}")))));
    let source = ScriptedSource::new(script);
    let (mem, log) = (sink.handle(), source.handle());
    let h = handles(tables);
    let lane = Lane::full(Box::new(source), Box::new(sink), h.clone(), limits);
    assert!(lane.wait_finished(WAIT), "the lane did not finish");
    Run {
        lane,
        mem,
        source: log,
        handles: h,
    }
}

#[test]
fn a_lane_carries_every_change_to_the_sink() {
    let later = vec![Change::delete(row(0, "")), Change::upsert(row(1, "x"))];
    let r = run(
        2,
        Limits::default(),
        vec![
            ScriptedSource::read(upserts(0, 0..3, position(1)), After::More),
            ScriptedSource::read(upserts(1, 0..2, position(1)), After::CaughtUp),
            ScriptedSource::read(changes(0, later, position(2)), After::CaughtUp),
            Ok(Step::Idle),
        ],
    );
    assert_eq!(r.mem.rows(0), [row(1, "x"), row(2, "v2")]);
    assert_eq!(r.mem.rows(1), [row(0, "v0"), row(1, "v1")]);
    assert_eq!(r.mem.position(0), Some(position(2)));
    assert_eq!(r.mem.position(1), Some(position(1)));
    // Each caught-up table's batch went first, then the news.
    assert_eq!(r.mem.state().caught_up, [1, 0]);
    assert_eq!(r.source.log().left, 0);
    assert_eq!(r.handles[0].snapshot().rows_written, 5);
    assert!(r
        .lane
        .events()
        .iter()
        .all(|e| matches!(e, Event::LaneFinished { .. })));
}

#[test]
fn a_retryable_source_error_resets_the_source_and_loses_nothing() {
    let r = run(
        1,
        Limits::default(),
        vec![
            ScriptedSource::read(upserts(0, 0..2, position(1)), After::More),
            Err(retryable("reading")),
            ScriptedSource::read(upserts(0, 2..4, position(2)), After::CaughtUp),
        ],
    );
    let log = r.source.log().clone();
    assert_eq!((log.resets, log.next_without_reset), (vec![2], 0));
    assert_eq!(r.mem.rows(0).len(), 4);
    assert_eq!(r.mem.position(0), Some(position(2)));
    assert_eq!(r.handles[0].snapshot().retries.get("poller"), Some(&1));
}

#[test]
fn a_table_that_fails_stops_and_the_others_go_on() {
    let r = run(
        2,
        Limits::default(),
        vec![
            ScriptedSource::read(upserts(0, 0..2, position(1)), After::More),
            ScriptedSource::read(upserts(1, 0..1, position(1)), After::More),
            Ok(Step::Failed {
                table: 0,
                error: Error::Other("a value that cannot be read".into()),
            }),
            ScriptedSource::read(upserts(1, 1..2, position(2)), After::CaughtUp),
            Ok(Step::Idle),
        ],
    );
    assert!(r.lane.events().iter().any(|e| matches!(
        e,
        Event::TableFailed {
            table: 0,
            stage: "poller",
            ..
        }
    )));
    // What was read of it before is dropped, not written.
    assert_eq!((r.mem.rows(0), r.mem.position(0)), (vec![], None));
    assert_eq!(r.mem.rows(1).len(), 2);
    assert_eq!(r.mem.position(1), Some(position(2)));
}

#[test]
fn a_large_source_transaction_commits_once_with_its_chunks() {
    let chunk = upserts(0, 0..2, no_position()).bytes;
    let r = run(
        2,
        Limits {
            batch_bytes: chunk,
            ..Limits::default()
        },
        vec![
            ScriptedSource::txn(vec![upserts(0, 0..2, no_position())], false),
            ScriptedSource::txn(vec![upserts(0, 2..4, no_position())], false),
            ScriptedSource::txn(
                vec![upserts(0, 4..5, position(9)), upserts(1, 0..1, position(9))],
                true,
            ),
            Ok(Step::Idle),
        ],
    );
    assert_eq!(
        r.mem.commits(),
        [Committed {
            batches: 3,
            changes: [(0, 5), (1, 1)].into(),
            positions: [(0, position(9)), (1, position(9))].into(),
            transactions: 1,
        }]
    );
    assert_eq!(r.mem.rows(0).len(), 5);
}
