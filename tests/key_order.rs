//! An initial load read in primary-key order (`[pipeline] key_order_load`), then handed over
//! to the cursor at the horizon measured when the load started: under writes, across a
//! crash, with a transaction committing late, every row ends on the target once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{signal, wait_output, wait_until, Rows, TestDb};
use sea_orm::sqlx::{self, Connection, MySqlConnection};

/// Key-order load whatever the table's size; small pages, so the load takes a while.
const KEY_ORDER: &str = "[pipeline]\nbatch_rows = 500\nkey_order_load_min_rows = 0\n";
const ITEMS: &str = "[[tables]]\nname = \"items\"\ncursor = \"updated\"\n";

fn seed(db: &TestDb, rows: i64) {
    db.mysql(&format!(
        "CREATE TABLE items (id INT NOT NULL PRIMARY KEY, v INT NOT NULL, \
           updated DATETIME(6) NOT NULL DEFAULT NOW(6) ON UPDATE NOW(6), KEY (updated)); \
         INSERT INTO items SELECT seq, 0, TIMESTAMP('2026-01-01') + INTERVAL (seq * 7919) % {rows} SECOND \
         FROM seq_1_to_{rows}"
    ));
}

fn both(db: &TestDb) -> (Rows, Rows) {
    (
        db.mysql_rows("SELECT CAST(id AS CHAR), CAST(v AS CHAR), DATE_FORMAT(updated, '%Y-%m-%d %H:%i:%s.%f') FROM items ORDER BY items.id"),
        db.pg_rows("SELECT id::text, v::text, to_char(updated, 'YYYY-MM-DD HH24:MI:SS.US') FROM public.items ORDER BY items.id"),
    )
}

/// Updates and inserts on the source until stopped, a few milliseconds apart; returns how
/// many statements ran.
fn writer(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    common::mysql_worker(url, stop, |n| {
        std::thread::sleep(Duration::from_millis(5));
        let k = n % 97;
        // The application's own sessions write local time in the server's zone.
        let zone = if n == 0 {
            "SET time_zone = @@global.time_zone; "
        } else {
            ""
        };
        Some(format!(
            "{zone}UPDATE items SET v = v + 1 WHERE id % 97 = {k} AND id % 5 = 0; \
             INSERT INTO items (id, v) VALUES ({}, 1)",
            1_000_000 + n
        ))
    })
}

#[test]
fn a_load_in_key_order_under_updates_and_inserts_ends_equal() {
    let db = TestDb::new();
    seed(&db, 50_000);
    let cfg = db.config(&format!("{KEY_ORDER}{ITEMS}"));
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(db.source_url.clone(), stop.clone());
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    run.wait_for("reading in primary-key order", Duration::from_secs(60));
    run.wait_for(
        "initial load in primary-key order done",
        Duration::from_secs(120),
    );
    // Writes went on through the load, and go on a little after it.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let statements = w.join().unwrap();
    assert!(
        statements > 20,
        "the source was written during the load ({statements})"
    );
    wait_until(
        "the target equal to the source",
        Duration::from_secs(60),
        || {
            let (s, t) = both(&db);
            s == t
        },
    );
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
    assert_eq!(
        db.pg_i64("SELECT count(*) - count(DISTINCT id) FROM public.items"),
        0,
        "each row once"
    );
}

fn crash_during_key_order_load(extra: &str) {
    let db = TestDb::new();
    seed(&db, 20_000);
    let cfg = db.config(&format!("{KEY_ORDER}{extra}{ITEMS}"));
    let cfg = cfg.to_str().unwrap();
    let out = db
        .sluice()
        .env("SLUICE_FAILPOINT", "after_commit:3")
        .args(["--config", cfg, "run", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint killed the run");
    // The stored position is the load's: the key it reached and its horizon.
    assert_eq!(
        db.pg_i64("SELECT count(*) FROM sluice.replication_state WHERE position ? 'load'"),
        1
    );
    // Rows change while it is down.
    db.mysql("SET time_zone = @@global.time_zone; UPDATE items SET v = 7 WHERE id % 10 = 0; INSERT INTO items (id, v) VALUES (900001, 1)");
    let out = db.ok(&["--config", cfg, "run", "--once"]);
    assert!(out.contains("items:"), "{out}");
    let (s, t) = both(&db);
    assert_eq!(s.len(), 20_001);
    assert_eq!(s, t);
}

#[test]
fn a_crash_during_a_load_in_key_order_resumes_and_ends_equal() {
    crash_during_key_order_load("");
}

#[test]
fn a_crash_during_a_key_deferred_load_in_key_order_resumes_and_ends_equal() {
    crash_during_key_order_load("defer_key_min_rows = 0\n");
}

#[test]
fn a_transaction_open_across_the_load_still_arrives_once_it_commits() {
    let db = TestDb::new();
    seed(&db, 20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut late = rt
        .block_on(MySqlConnection::connect(&db.source_url))
        .unwrap();
    rt.block_on(async {
        sqlx::raw_sql("SET time_zone = @@global.time_zone; BEGIN; INSERT INTO items (id, v) VALUES (800000, 42)")
            .execute(&mut late)
            .await
            .unwrap();
    });
    let cfg = db.config(&format!("{KEY_ORDER}{ITEMS}"));
    let run = db.spawn(&["--config", cfg.to_str().unwrap(), "run"]);
    wait_until("the load", Duration::from_secs(60), || {
        db.pg_rows("SELECT to_regclass('public.items')::text")[0][0].is_some()
            && db.pg_i64("SELECT count(*) FROM public.items") == 20_000
    });
    rt.block_on(async { sqlx::raw_sql("COMMIT").execute(&mut late).await.unwrap() });
    wait_until("the late row", Duration::from_secs(30), || {
        db.pg_i64("SELECT count(*) FROM public.items WHERE id = 800000 AND v = 42") == 1
    });
    signal(&run, "TERM");
    let out = wait_output(run, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, t) = both(&db);
    assert_eq!(s, t);
}
