//! End-to-end replication of the demo `orders` table against real MariaDB and PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{signal, wait_output, wait_until, TestDb};

#[test]
fn migrate_is_idempotent_and_creates_both_sides() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["migrate"]);
    assert_eq!(db.mysql_i64("SELECT COUNT(*) FROM orders"), 0);
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.orders"), 0);
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM sluice.replication_state"),
        0
    );
    // The target mirrors the source's columns, with nothing extra.
    let cols = db.pg_rows(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'orders' ORDER BY ordinal_position",
    );
    assert_eq!(
        cols,
        vec![
            vec![Some("order_id".into()), Some("text".into())],
            vec![
                Some("created".into()),
                Some("timestamp without time zone".into())
            ],
        ]
    );
}

#[test]
fn twenty_thousand_generated_rows_replicate_with_equal_values() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let out = db.ok(&["generate", "--rate", "1000000", "--total", "20000"]);
    assert!(out.contains("inserted 20000 orders"), "{out}");
    let out = db.ok(&["run", "--once"]);
    assert!(out.contains("replicated 20000 rows"), "{out}");
    assert_eq!(db.assert_orders_equal(), 20_000);
    assert_eq!(
        db.pg_i64(
            "SELECT rows_replicated FROM sluice.replication_state WHERE table_name = 'orders'"
        ),
        20_000
    );
}

#[test]
fn run_once_twice_is_idempotent() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "1500"]);
    db.ok(&["run", "--once"]);
    let out = db.ok(&["run", "--once"]);
    assert!(out.contains("replicated 0 rows"), "{out}");
    assert_eq!(db.assert_orders_equal(), 1500);
    // New rows after the first runs are picked up from the watermark, nothing else re-read.
    db.ok(&["generate", "--rate", "1000000", "--total", "700"]);
    let out = db.ok(&["run", "--once"]);
    assert!(out.contains("replicated 700 rows"), "{out}");
    assert_eq!(db.assert_orders_equal(), 2200);
}

#[test]
fn rows_sharing_one_timestamp_cross_page_and_batch_boundaries_exactly_once() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.insert_orders_at(150, "2026-01-01 00:00:00.000001");
    db.insert_orders_at(333, "2026-01-01 00:00:00.000002");
    db.insert_orders_at(40, "2026-01-01 00:00:00.000003");
    let cfg = db.config("[pipeline]\nbatch_rows = 7\nlinger_ms = 1\n");
    let cfg = cfg.to_str().unwrap();
    let out = db.ok(&["--config", cfg, "run", "--once"]);
    assert!(out.contains("replicated 523 rows"), "{out}");
    assert_eq!(db.assert_orders_equal(), 523);
    // Rows committed later (with a later cursor) arrive, once, and nothing is re-read.
    db.insert_orders_at(20, "2026-01-01 00:00:00.000004");
    let out = db.ok(&["--config", cfg, "run", "--once"]);
    assert!(out.contains("replicated 20 rows"), "{out}");
    assert_eq!(db.assert_orders_equal(), 543);
    assert_eq!(
        db.pg_i64("SELECT rows_replicated FROM sluice.replication_state"),
        543
    );
}

#[test]
fn generator_honours_total_and_rate() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let start = Instant::now();
    let out = db.ok(&["generate", "--rate", "400", "--total", "800"]);
    let took = start.elapsed();
    assert!(out.contains("inserted 800 orders"), "{out}");
    assert_eq!(db.mysql_i64("SELECT COUNT(*) FROM orders"), 800);
    // 800 rows at 400/s is 2 s; allow for process start and a busy machine.
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(8),
        "took {took:?}"
    );
}

#[test]
fn continuous_run_follows_the_generator_and_sigterm_commits_what_was_read() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let run = db.spawn(&["run"]);
    let gen = db.spawn(&["generate", "--rate", "500", "--total", "1500"]);
    let gen_out = wait_output(gen, Duration::from_secs(60));
    assert!(gen_out.status.success());
    wait_until(
        "the target to catch up with 1500 generated rows",
        Duration::from_secs(30),
        || db.pg_i64("SELECT COUNT(*) FROM public.orders") == 1500,
    );
    signal(&run, "TERM");
    let out = wait_output(run, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "run exited {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(db.assert_orders_equal(), 1500);
}

#[test]
fn sigterm_mid_catch_up_commits_a_consistent_prefix_and_restart_resumes() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "60000"]);
    // Small batches so the catch-up takes long enough to be interrupted.
    let cfg = db.config("[pipeline]\nbatch_rows = 200\n");
    let cfg = cfg.to_str().unwrap();
    let run = db.spawn(&["--config", cfg, "run"]);
    wait_until(
        "the first batches to commit",
        Duration::from_secs(30),
        || db.pg_i64("SELECT COUNT(*) FROM public.orders") > 0,
    );
    signal(&run, "TERM");
    let out = wait_output(run, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "run exited {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let written = db.pg_i64("SELECT COUNT(*) FROM public.orders");
    let recorded = db.pg_i64("SELECT rows_replicated FROM sluice.replication_state");
    assert_eq!(
        written, recorded,
        "the watermark's row count matches the rows written"
    );
    // The target holds exactly the source rows at or below the stored watermark.
    let wm = db.pg_rows(
        "SELECT to_char(max(created), 'YYYY-MM-DD HH24:MI:SS.US'), NULL FROM public.orders",
    );
    let last = wm[0][0].clone().unwrap();
    let at_or_below = db.mysql_i64(&format!(
        "SELECT COUNT(*) FROM orders WHERE created < '{last}'"
    ));
    let tgt_below = db.pg_i64(&format!(
        "SELECT COUNT(*) FROM public.orders WHERE created < '{last}'"
    ));
    assert_eq!(at_or_below, tgt_below, "no gap below the watermark");
    let out = db.ok(&["--config", cfg, "run", "--once"]);
    assert!(
        out.contains(&format!("replicated {} rows", 60000 - written)),
        "{out}"
    );
    assert_eq!(db.assert_orders_equal(), 60_000);
}

#[test]
fn demo_prints_progress_and_stops_cleanly_on_ctrl_c() {
    let db = TestDb::new();
    let demo = db.spawn(&["demo", "--rate", "200"]);
    wait_until(
        "the demo to replicate some rows",
        Duration::from_secs(30),
        || {
            db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'orders'") == 1
                && db.pg_i64("SELECT COUNT(*) FROM public.orders") >= 200
        },
    );
    signal(&demo, "INT");
    let out = wait_output(demo, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo exited {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("source rows") && stdout.contains("target rows"),
        "{stdout}"
    );
    // Ctrl-C stops the generator first, lets the pipeline copy the last orders, then stops
    // it: both sides end equal, with no further run needed.
    db.assert_orders_equal();
}

#[test]
fn a_second_process_on_the_same_table_is_refused() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let first = db.spawn(&["run"]);
    wait_for_owner(&db, "the first process");
    let out = db.run(&["run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("already being replicated") && err.contains("orders"),
        "{err}"
    );
    signal(&first, "TERM");
    assert!(wait_output(first, Duration::from_secs(30)).status.success());
    // Once the owner is gone, the table can be taken.
    db.ok(&["run", "--once"]);
}

#[test]
fn a_standby_run_takes_over_when_the_owner_dies() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let mut owner = db.spawn(&["run"]);
    wait_for_owner(&db, "the owner");
    let standby = db.spawn(&["run"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "500"]);
    wait_until("the owner to replicate", Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") == 500
    });
    // The standby is up (a member with no table) before the owner dies: on a loaded
    // machine it may take a while to start.
    wait_until("the standby to join", Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM sluice.members WHERE cardinality(tables) = 0") == 1
    });
    owner.kill().unwrap(); // SIGKILL: its session, and so its lock, ends with it
    owner.wait().unwrap();
    db.ok(&["generate", "--rate", "1000000", "--total", "700"]);
    wait_until(
        "the standby to take over and replicate",
        Duration::from_secs(30),
        || db.pg_i64("SELECT COUNT(*) FROM public.orders") == 1200,
    );
    signal(&standby, "TERM");
    let out = wait_output(standby, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("standing by") && err.contains("taking over"),
        "{err}"
    );
    assert_eq!(db.assert_orders_equal(), 1200);
}

/// Waits until some sluice process holds a table's advisory lock in this test's database.
fn wait_for_owner(db: &TestDb, who: &str) {
    wait_until(
        &format!("{who} to claim the table"),
        Duration::from_secs(30),
        || {
            db.pg_i64(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            ) >= 1
        },
    );
}

/// `sluice snapshot --table orders` in polling: the run takes the request, empties the
/// target table and loads it again from the source; rows edited on the target by hand are
/// as on the source after it, and the rows generated meanwhile all arrive.
#[test]
fn a_polled_table_asked_for_is_loaded_again() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "5000"]);
    let mut run = db.spawn_logged(&["run"], &[]);
    wait_until("the first load", Duration::from_secs(60), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") == 5000
    });
    db.pg("DELETE FROM public.orders WHERE order_id IN (SELECT order_id FROM public.orders LIMIT 10); \
           INSERT INTO public.orders (order_id, created) VALUES ('not-on-the-source', now())");
    let gen = db.spawn(&["generate", "--rate", "300", "--total", "600"]);
    db.ok(&["snapshot", "--table", "orders"]);
    run.wait_for("copying the table again", Duration::from_secs(30));
    assert!(wait_output(gen, Duration::from_secs(60)).status.success());
    wait_until("every row, once", Duration::from_secs(60), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") == 5600
            && db.pg_i64("SELECT COUNT(*) FROM public.orders WHERE order_id = 'not-on-the-source'")
                == 0
    });
    signal(&run.child, "TERM");
    assert!(run.wait_exit(Duration::from_secs(30)).0.success());
    assert_eq!(db.assert_orders_equal(), 5600);
}
