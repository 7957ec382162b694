//! Initial load with the primary key deferred (`[pipeline] defer_key`), against real
//! MariaDB and PostgreSQL: the key is dropped on an empty target, the backlog is copied
//! without it, and the key is built once caught up, crash-safely and without duplicates.

mod common;

use std::time::Duration;

use common::{signal, wait_output, wait_until, TestDb};

/// Loads with the key deferred whatever the backlog's size.
const DEFER: &str = "[pipeline]\nbatch_rows = 1000\ndefer_key_min_rows = 0\n";

/// The name of the target table's primary-key constraint, if it has one.
fn pk_constraint(db: &TestDb, table: &str) -> Option<String> {
    db.pg_rows(&format!(
        "SELECT conname::text FROM pg_constraint WHERE conrelid = 'public.{table}'::regclass AND contype = 'p'"
    ))
    .into_iter()
    .next()
    .and_then(|r| r[0].clone())
}

fn deferred_key(db: &TestDb, table: &str) -> Option<String> {
    db.pg_rows(&format!(
        "SELECT deferred_key FROM sluice.replication_state WHERE table_name = '{table}'"
    ))
    .into_iter()
    .next()
    .and_then(|r| r[0].clone())
}

/// The run succeeded, and its log shows the key dropped for the load and built after it.
fn assert_key_deferred_then_built(out: &std::process::Output) {
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("primary key dropped while the backlog loads"),
        "{log}"
    );
    assert!(log.contains("primary key built"), "{log}");
}

#[test]
fn an_initial_load_builds_the_users_key_again_under_its_own_name() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    // The user's own empty target table, with its own constraint name.
    db.pg("DROP TABLE public.orders; CREATE TABLE public.orders \
           (order_id text CONSTRAINT orders_by_id PRIMARY KEY, created timestamp(6) NOT NULL)");
    db.ok(&["generate", "--rate", "1000000", "--total", "20000"]);
    let cfg = db.config(DEFER);
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    assert_key_deferred_then_built(&out);
    assert_eq!(db.assert_orders_equal(), 20_000);
    assert_eq!(
        pk_constraint(&db, "orders").as_deref(),
        Some("orders_by_id")
    );
    assert_eq!(deferred_key(&db, "orders"), None);
    // From here on the table is live: more rows arrive through the normal path.
    db.ok(&["generate", "--rate", "1000000", "--total", "500"]);
    db.ok(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    assert_eq!(db.assert_orders_equal(), 20_500);
}

/// A crash in the middle of the load leaves the key deferred and the rows a consistent
/// prefix; the next run goes on with the load and builds the key.
fn crash_during_load(point: &str) {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "20000"]);
    let cfg = db.config(DEFER);
    let cfg = cfg.to_str().unwrap();
    let out = db
        .sluice()
        .env("SLUICE_FAILPOINT", point)
        .args(["--config", cfg, "run", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint must kill the process");
    let written = db.pg_i64("SELECT COUNT(*) FROM public.orders");
    assert_eq!(
        written,
        db.pg_i64("SELECT rows_replicated FROM sluice.replication_state"),
        "rows present vs rows the watermark covers"
    );
    assert!(written < 20_000 || point.starts_with("before_key_commit"));
    assert_eq!(
        pk_constraint(&db, "orders"),
        None,
        "the key is still deferred"
    );
    assert_eq!(deferred_key(&db, "orders").as_deref(), Some("orders_pkey"));
    let status = db.ok(&["--config", cfg, "status"]);
    assert!(
        status.contains("initial load: primary key deferred"),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&db.ok(&["--config", cfg, "status", "--json"])).unwrap();
    assert_eq!(
        json["tables"][0]["initial_load"],
        serde_json::Value::Bool(true)
    );
    // A repair needs the key: refused with the reason while the load runs.
    let out = db.run(&["--config", cfg, "verify", "--repair"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is in its initial load"));

    let out = db.run(&["--config", cfg, "run", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        !log.contains("primary key dropped"),
        "a resumed load drops nothing: {log}"
    );
    assert_eq!(db.assert_orders_equal(), 20_000);
    assert_eq!(pk_constraint(&db, "orders").as_deref(), Some("orders_pkey"));
    assert_eq!(deferred_key(&db, "orders"), None);
    let status = db.ok(&["--config", cfg, "status"]);
    assert!(!status.contains("initial load"), "{status}");
}

#[test]
fn a_crash_mid_load_resumes_the_load_and_builds_the_key() {
    crash_during_load("after_commit:3");
}

#[test]
fn a_crash_while_the_key_is_built_leaves_the_load_to_finish() {
    crash_during_load("before_key_commit");
}

#[test]
fn rows_updated_during_the_load_end_up_once_in_their_newest_version() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL, \
           updated DATETIME(6) NOT NULL DEFAULT NOW(6) ON UPDATE NOW(6), KEY (updated))",
    );
    db.mysql(
        "INSERT INTO items (id, v, updated) \
         SELECT seq, 'old', TIMESTAMP('2026-01-01') + INTERVAL seq SECOND FROM seq_1_to_3000",
    );
    let cfg = db.config(&format!(
        "{DEFER}\n[[tables]]\nname = \"items\"\ncursor = \"updated\"\n"
    ));
    let cfg = cfg.to_str().unwrap();
    let out = db
        .sluice()
        .env("SLUICE_FAILPOINT", "after_commit:2")
        .args(["--config", cfg, "run", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.items"), 2000);
    // Rows already copied change: their cursor moves past the watermark, so they are read
    // again and the keyless table holds them twice until the key is built.
    db.mysql("UPDATE items SET v = 'new' WHERE id <= 100");
    let out = db.run(&["--config", cfg, "run", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("older_copies_removed=100"), "{log}");
    assert_eq!(pk_constraint(&db, "items").as_deref(), Some("items_pkey"));
    let src = db.mysql_rows(
        "SELECT CAST(id AS CHAR), v, DATE_FORMAT(updated, '%Y-%m-%d %H:%i:%s.%f') FROM items ORDER BY id",
    );
    let tgt = db.pg_rows(
        "SELECT id::text, v, to_char(updated, 'YYYY-MM-DD HH24:MI:SS.US') FROM public.items ORDER BY items.id",
    );
    assert_eq!(src.len(), 3000);
    assert_eq!(src, tgt);
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM public.items WHERE v = 'new'"),
        100
    );
}

#[test]
fn a_key_that_a_foreign_key_references_stays_in_place() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.pg("CREATE TABLE public.notes (order_id varchar(36) REFERENCES public.orders)");
    db.ok(&["generate", "--rate", "1000000", "--total", "3000"]);
    let cfg = db.config(DEFER);
    let out = db
        .sluice()
        .env("SLUICE_FAILPOINT", "after_commit:2")
        .args(["--config", cfg.to_str().unwrap(), "run", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("a foreign key references the target's primary key"),
        "{log}"
    );
    assert_eq!(pk_constraint(&db, "orders").as_deref(), Some("orders_pkey"));
    assert_eq!(deferred_key(&db, "orders"), None);
    db.ok(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    assert_eq!(db.assert_orders_equal(), 3000);
}

#[test]
fn a_target_that_already_holds_rows_keeps_its_key() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "3000"]);
    db.pg("INSERT INTO public.orders VALUES ('not-from-the-source', '2020-01-01')");
    let cfg = db.config(DEFER);
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("primary key dropped"), "{log}");
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.orders"), 3001);
    assert_eq!(pk_constraint(&db, "orders").as_deref(), Some("orders_pkey"));
}

#[test]
fn a_continuous_run_builds_the_key_when_caught_up_and_then_keeps_up() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "20000"]);
    let cfg = db.config(DEFER);
    let cfg = cfg.to_str().unwrap();
    let run = db.spawn(&["--config", cfg, "run"]);
    wait_until("the load to end", Duration::from_secs(60), || {
        db.pg_i64(
            "SELECT COUNT(*) FROM sluice.replication_state \
             WHERE rows_replicated = 20000 AND deferred_key IS NULL",
        ) == 1
    });
    assert_eq!(pk_constraint(&db, "orders").as_deref(), Some("orders_pkey"));
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.orders"), 20_000);
    db.ok(&["generate", "--rate", "2000", "--total", "1000"]);
    wait_until("new rows to arrive", Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") == 21_000
    });
    signal(&run, "TERM");
    let out = wait_output(run, Duration::from_secs(30));
    assert_key_deferred_then_built(&out);
    assert_eq!(db.assert_orders_equal(), 21_000);
}
