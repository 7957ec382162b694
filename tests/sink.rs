//! The PostgreSQL sink through its contract (`sluice::sink::Sink`), against a real
//! PostgreSQL: inserts, updates, deletes and key changes end exactly as applied, a batch
//! applied twice ends the same, and a process that lost a table's ownership writes nothing.

mod common;

use std::sync::Arc;

use common::TestDb;
use sea_orm::sqlx::PgConnection;
use sluice::config::{CopyFormat, OnBadRow};
use sluice::error::Error;
use sluice::model::{Batch, Change, ChangeSet, Column, Kind, Position, TableModel};
use sluice::sink::postgres::{self, ddl, initial_load, PgSink, SinkOptions, SinkTable};
use sluice::sink::Sink;
use sluice::state::{self, StateKey};
use sluice::value::{Row, Value};

const PIPELINE: &str = "sink-test";

fn model() -> Arc<TableModel> {
    let col = |name: &str, kind, nullable| Column {
        name: name.into(),
        source_type: "test".into(),
        kind,
        nullable,
        null_on_zero_date: false,
        default: None,
        renamed_from: None,
        target_type: None,
    };
    Arc::new(TableModel {
        name: "items".into(),
        columns: vec![
            col("id", Kind::Int { bytes: 8 }, false),
            col("v", Kind::Text, true),
        ],
        primary_key: vec![0],
        indexes: vec![],
        version: 1,
    })
}

fn row(id: i64, v: &str) -> Row {
    vec![Value::Int(id), Value::Text(v.into())]
}

fn batch(changes: Vec<Change>, pos: i64) -> Batch {
    Batch {
        parts: vec![ChangeSet {
            table: 0,
            changes,
            position: Position(serde_json::json!({ "test": pos })),
            bytes: 0,
            source_time: None,
            shape: None,
            first_reads: false,
            beside: false,
        }],
        commit: true,
        transactions: 1,
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    conn: PgConnection,
    key: StateKey,
    epoch: i64,
    url: String,
}

/// The state tables, the target table, and this process's claim on it.
fn fixture(db: &TestDb) -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = db.target_url.clone();
    let (conn, key, epoch) = rt.block_on(async {
        let orm = sea_orm::Database::connect(&url).await.unwrap();
        migration::run_on_target(&orm, &migration::State)
            .await
            .unwrap();
        let mut conn = postgres::connect(&url, "test").await.unwrap();
        ddl::ensure_table(&mut conn, "public", &model(), false, Default::default())
            .await
            .unwrap();
        let key = StateKey::new(PIPELINE, "items");
        let epoch = state::claim(&mut conn, &key, "test").await.unwrap();
        (conn, key, epoch)
    });
    Fixture {
        rt,
        conn,
        key,
        epoch,
        url,
    }
}

fn sink(f: &Fixture, deferred_key: Option<String>) -> PgSink {
    sink_of(
        f,
        vec![table(0, model(), f.epoch, deferred_key, "sink_test")],
    )
}

fn table(
    id: usize,
    model: Arc<TableModel>,
    epoch: i64,
    deferred_key: Option<String>,
    handle: &str,
) -> SinkTable {
    SinkTable {
        id,
        model,
        epoch,
        deferred_key,
        version_columns: vec![],
        foreign_keys: vec![],
        loading: false,
        on_drop_column: Default::default(),
        handle: sluice::telemetry::register(handle),
        map: sluice::sink::postgres::map::TableMap::plain("public"),
    }
}

fn sink_of(f: &Fixture, tables: Vec<SinkTable>) -> PgSink {
    PgSink::new(
        SinkOptions {
            url: f.url.clone(),
            schema: "public".into(),
            pipeline: PIPELINE.into(),
            on_bad_row: OnBadRow::Stop,
            copy_format: CopyFormat::Auto,
            role: "test".into(),
            helpers: Default::default(),
            lock_wait: Default::default(),
            indexes: None,
        },
        tables,
    )
}

fn rows(db: &TestDb) -> Vec<Vec<Option<String>>> {
    db.pg_rows("SELECT id::text, v FROM public.items ORDER BY items.id")
}

fn expect(pairs: &[(i64, &str)]) -> Vec<Vec<Option<String>>> {
    pairs
        .iter()
        .map(|(id, v)| vec![Some(id.to_string()), Some(v.to_string())])
        .collect()
}

fn stored_position(db: &TestDb) -> String {
    db.pg_rows("SELECT position::text FROM sluice.replication_state")[0][0]
        .clone()
        .unwrap()
}

#[test]
fn inserts_updates_deletes_and_key_changes_end_as_applied() {
    let db = TestDb::new();
    let f = fixture(&db);
    let mut s = sink(&f, None);
    let first = batch(
        vec![
            Change::insert(row(1, "a")),
            Change::insert(row(2, "b")),
            Change::insert(row(3, "c")),
            Change::insert(row(4, "d")),
        ],
        1,
    );
    f.rt.block_on(s.apply(&first)).unwrap();
    assert_eq!(rows(&db), expect(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")]));
    let second = batch(
        vec![
            Change::update(row(1, "a2"), None),
            Change::delete(vec![Value::Int(2), Value::Null]),
            // Key 3 becomes key 30.
            Change::update(row(30, "c"), Some(vec![Value::Int(3)])),
            // Deleted, then inserted again, in one batch.
            Change::delete(row(4, "d")),
            Change::insert(row(4, "d2")),
            // A delete of a row that is not there does nothing.
            Change::delete(row(99, "")),
            Change::upsert(row(5, "e")),
        ],
        2,
    );
    let applied = f.rt.block_on(s.apply(&second)).unwrap();
    assert_eq!(applied[0].rows, 7);
    assert!(applied[0].merged);
    let want = expect(&[(1, "a2"), (4, "d2"), (5, "e"), (30, "c")]);
    assert_eq!(rows(&db), want);
    assert_eq!(stored_position(&db), r#"{"test": 2}"#);
    assert_eq!(
        db.pg_i64("SELECT rows_replicated FROM sluice.replication_state"),
        11
    );
    // At least once: the same batch again changes nothing.
    f.rt.block_on(s.apply(&second)).unwrap();
    assert_eq!(rows(&db), want);
}

/// A part of updates only goes through `UPDATE … FROM` the stage rather than the upsert; a
/// row the target lacks (deleted there by hand) comes back, as the upsert brought it back.
#[test]
fn a_part_of_updates_only_updates_in_place_and_brings_back_a_row_the_target_lacked() {
    let db = TestDb::new();
    let f = fixture(&db);
    let mut s = sink(&f, None);
    let rows3 = |a: &str, b: &str, c: &str| {
        vec![
            Change::update(row(1, a), None),
            Change::update(row(2, b), None),
            Change::update(row(3, c), None),
        ]
    };
    f.rt.block_on(s.apply(&batch(
        vec![
            Change::insert(row(1, "a")),
            Change::insert(row(2, "b")),
            Change::insert(row(3, "c")),
        ],
        1,
    )))
    .unwrap();
    // Updates of rows that are all there, twice for key 1 (the last wins).
    let mut changes = rows3("a1", "b1", "c1");
    changes.push(Change::update(row(1, "a2"), None));
    let applied = f.rt.block_on(s.apply(&batch(changes, 2))).unwrap();
    assert!(applied[0].merged);
    assert_eq!(rows(&db), expect(&[(1, "a2"), (2, "b1"), (3, "c1")]));
    db.pg("DELETE FROM public.items WHERE id = 2");
    f.rt.block_on(s.apply(&batch(rows3("a3", "b3", "c3"), 3)))
        .unwrap();
    assert_eq!(rows(&db), expect(&[(1, "a3"), (2, "b3"), (3, "c3")]));
    assert_eq!(stored_position(&db), r#"{"test": 3}"#);
}

/// A batch of two tables stores both positions (in one statement), a table with two parts in
/// the batch its last one's; once another process takes one of them over, the next batch of
/// both writes nothing and names that table.
#[test]
fn a_batch_of_two_tables_stores_both_positions_and_names_the_one_taken_over() {
    let db = TestDb::new();
    let mut f = fixture(&db);
    let other = Arc::new(TableModel {
        name: "others".into(),
        ..(*model()).clone()
    });
    let other_key = StateKey::new(PIPELINE, "others");
    let other_epoch = f.rt.block_on(async {
        ddl::ensure_table(&mut f.conn, "public", &other, false, Default::default())
            .await
            .unwrap();
        state::claim(&mut f.conn, &other_key, "test").await.unwrap()
    });
    let mut s = sink_of(
        &f,
        vec![
            table(0, model(), f.epoch, None, "sink_test"),
            table(1, other, other_epoch, None, "sink_test_others"),
        ],
    );
    let both = |pos: i64, id: i64| {
        let mut b = batch(vec![Change::insert(row(id, "a"))], pos);
        let mut other = batch(vec![Change::insert(row(id, "b"))], pos * 10);
        other.parts[0].table = 1;
        b.parts.append(&mut other.parts);
        b
    };
    f.rt.block_on(s.apply(&both(1, 1))).unwrap();
    let positions = || {
        db.pg_rows(
            "SELECT table_name, position::text, rows_replicated::text \
             FROM sluice.replication_state ORDER BY table_name",
        )
    };
    let row3 = |t: &str, p: &str, n: &str| vec![Some(t.into()), Some(p.into()), Some(n.into())];
    assert_eq!(
        positions(),
        vec![
            row3("items", r#"{"test": 1}"#, "1"),
            row3("others", r#"{"test": 10}"#, "1")
        ]
    );
    // A table with two parts in one batch (tables whose changes keep their order with
    // others'): its last part's position, every part's rows.
    let mut b = both(2, 2);
    let mut again = batch(vec![Change::insert(row(3, "c"))], 3);
    b.parts.append(&mut again.parts);
    f.rt.block_on(s.apply(&b)).unwrap();
    assert_eq!(
        positions(),
        vec![
            row3("items", r#"{"test": 3}"#, "3"),
            row3("others", r#"{"test": 20}"#, "2")
        ]
    );
    f.rt.block_on(state::claim(&mut f.conn, &other_key, "someone else"))
        .unwrap();
    let err = f.rt.block_on(s.apply(&both(4, 4))).unwrap_err();
    match &err {
        Error::Fenced { table, .. } => assert_eq!(table, "others"),
        e => panic!("{e}"),
    }
    assert_eq!(
        positions(),
        vec![
            row3("items", r#"{"test": 3}"#, "3"),
            row3("others", r#"{"test": 20}"#, "2")
        ]
    );
    assert_eq!(db.pg_i64("SELECT count(*) FROM public.items"), 3);
    assert_eq!(db.pg_i64("SELECT count(*) FROM public.others"), 2);
}

/// A row the target refuses only as it is merged (a CHECK on the target table; the stage has
/// none): the halving under savepoints finds it among the merged rows and names its key, and
/// the batch writes nothing (`on_bad_row = "stop"`); once the check goes, the same batch
/// applies whole.
#[test]
fn a_row_the_merge_refuses_is_found_and_named() {
    let db = TestDb::new();
    let f = fixture(&db);
    db.pg("ALTER TABLE public.items ADD CONSTRAINT no_bad CHECK (v <> 'bad')");
    let mut s = sink(&f, None);
    // The delete sends the part through the merge rather than a direct COPY.
    let changes = || {
        let mut c: Vec<Change> = (1..=9)
            .map(|i| Change::insert(row(i, if i == 6 { "bad" } else { "ok" })))
            .collect();
        c.push(Change::delete(row(10, "gone")));
        c
    };
    let err = f.rt.block_on(s.apply(&batch(changes(), 1))).unwrap_err();
    match &err {
        Error::BadRow { key, reason, .. } => {
            assert_eq!(key, "id=6", "{err}");
            assert!(reason.contains("no_bad"), "{err}");
        }
        e => panic!("{e}"),
    }
    assert_eq!(rows(&db), expect(&[]));
    // The failed batch's transaction holds the table until its connection goes.
    drop(s);
    db.pg("ALTER TABLE public.items DROP CONSTRAINT no_bad");
    let mut s = sink(&f, None);
    f.rt.block_on(s.apply(&batch(changes(), 1))).unwrap();
    assert_eq!(db.pg_i64("SELECT count(*) FROM public.items"), 9);
}

#[test]
fn a_process_that_lost_the_table_writes_nothing() {
    let db = TestDb::new();
    let mut f = fixture(&db);
    let mut s = sink(&f, None);
    f.rt.block_on(s.apply(&batch(vec![Change::insert(row(1, "a"))], 1)))
        .unwrap();
    // Another process takes the table over: the epoch moves on.
    let newer =
        f.rt.block_on(state::claim(&mut f.conn, &f.key, "someone else"))
            .unwrap();
    assert_eq!(newer, f.epoch + 1);
    let err =
        f.rt.block_on(s.apply(&batch(
            vec![Change::insert(row(2, "b")), Change::delete(row(1, "a"))],
            2,
        )))
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(err.to_string().contains("taken this table over"), "{err}");
    // Nothing of the batch was applied, and the position did not move.
    assert_eq!(rows(&db), expect(&[(1, "a")]));
    assert_eq!(stored_position(&db), r#"{"test": 1}"#);
}

#[test]
fn deletes_while_the_key_is_deferred_remove_every_copy() {
    let db = TestDb::new();
    let mut f = fixture(&db);
    let model = model();
    let constraint =
        f.rt.block_on(initial_load::defer_key(
            &mut f.conn,
            &f.key,
            f.epoch,
            "public",
            &model,
            1,
            Default::default(),
        ))
        .unwrap();
    assert_eq!(constraint.as_deref(), Some("items_pkey"));
    let mut s = sink(&f, constraint);
    // Keyless: a batch delivered twice leaves two copies.
    let load = batch(
        vec![Change::insert(row(1, "a")), Change::insert(row(2, "b"))],
        1,
    );
    f.rt.block_on(s.apply(&load)).unwrap();
    f.rt.block_on(s.apply(&load)).unwrap();
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.items"), 4);
    f.rt.block_on(s.apply(&batch(
        vec![
            Change::delete(row(1, "")),
            Change::update(row(2, "b2"), None),
            Change::delete(row(7, "")),
        ],
        2,
    )))
    .unwrap();
    assert_eq!(rows(&db), expect(&[(2, "b2")]));
    f.rt.block_on(s.apply(&batch(vec![Change::insert(row(3, "c"))], 3)))
        .unwrap();
    f.rt.block_on(s.apply(&batch(vec![Change::insert(row(3, "c"))], 3)))
        .unwrap();
    // Caught up: the key is built, the duplicate copy of 3 removed.
    let done = f.rt.block_on(s.caught_up(0)).unwrap();
    assert_eq!(done.key_built, Some(1));
    assert_eq!(rows(&db), expect(&[(2, "b2"), (3, "c")]));
    assert_eq!(
        db.pg_i64(
            "SELECT COUNT(*) FROM pg_constraint WHERE conrelid = 'public.items'::regclass AND contype = 'p'"
        ),
        1
    );
    // Keyed from here on: an update through the merge.
    f.rt.block_on(s.apply(&batch(vec![Change::update(row(3, "c2"), None)], 4)))
        .unwrap();
    assert_eq!(rows(&db), expect(&[(2, "b2"), (3, "c2")]));
}
