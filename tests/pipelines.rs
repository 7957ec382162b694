//! Pipelines and tables apart: two pipelines into one target keep their own positions,
//! state stored before pipelines had names is adopted in place, and one table's failure
//! stops that table only (or every table, with `on_table_error = "stop_all"`).

mod common;

use std::time::Duration;

use common::{get, signal, TestDb};

/// A second source database beside the test's own, dropped at the end.
struct SecondSource<'a> {
    db: &'a TestDb,
    name: String,
}

impl<'a> SecondSource<'a> {
    fn new(db: &'a TestDb) -> Self {
        let name = format!("{}_b", db.name);
        db.mysql(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"));
        SecondSource { db, name }
    }

    fn url(&self) -> String {
        format!("{}/{}", common::mysql_server(), self.name)
    }
}

impl Drop for SecondSource<'_> {
    fn drop(&mut self) {
        self.db
            .mysql(&format!("DROP DATABASE IF EXISTS `{}`", self.name));
    }
}

#[test]
fn two_pipelines_with_a_same_named_table_keep_separate_positions() {
    let db = TestDb::new();
    let b = SecondSource::new(&db);
    let cfg_a = db.config("[target]\nschema = \"a\"\n");
    let cfg_b = db.config("[target]\nschema = \"b\"\n");
    let (a, bb) = (cfg_a.to_str().unwrap(), cfg_b.to_str().unwrap());
    let src_b = b.url();
    let with_b = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["--source".to_string(), src_b.clone()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let run_b = |args: &[&str]| {
        let v = with_b(args);
        db.ok(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    db.ok(&["--config", a, "migrate"]);
    run_b(&["--config", bb, "migrate"]);
    db.ok(&[
        "--config", a, "generate", "--rate", "1000000", "--total", "300",
    ]);
    run_b(&[
        "--config", bb, "generate", "--rate", "1000000", "--total", "500",
    ]);
    // Both at once: each pipeline owns its own `orders`.
    let args_b = with_b(&["--config", bb, "run", "--once"]);
    let pa = db.spawn(&["--config", a, "run", "--once"]);
    let pb = db.spawn(&args_b.iter().map(String::as_str).collect::<Vec<_>>());
    for p in [pa, pb] {
        let out = common::wait_output(p, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM a.orders"), 300);
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM b.orders"), 500);
    let state = || {
        db.pg_rows(
            "SELECT pipeline, rows_replicated::text, position::text FROM sluice.replication_state \
             WHERE table_name = 'orders' ORDER BY pipeline",
        )
    };
    let first = state();
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(
        first[0][0].as_deref(),
        Some(format!("{}/a", db.name).as_str())
    );
    assert_eq!(
        first[1][0].as_deref(),
        Some(format!("{}/b", b.name).as_str())
    );
    assert_eq!(first[0][1].as_deref(), Some("300"));
    assert_eq!(first[1][1].as_deref(), Some("500"));
    assert_ne!(first[0][2], first[1][2]);
    // More rows in A move A's position only.
    db.ok(&[
        "--config", a, "generate", "--rate", "1000000", "--total", "40",
    ]);
    let out = db.ok(&["--config", a, "run", "--once"]);
    assert!(out.contains("replicated 40 rows"), "{out}");
    let second = state();
    assert_eq!(second[0][1].as_deref(), Some("340"));
    assert_ne!(second[0][2], first[0][2]);
    assert_eq!(second[1], first[1], "pipeline b's state is untouched");
    let status = db.ok(&["--config", a, "status"]);
    assert!(
        status.contains(&format!("pipeline {}/a", db.name))
            && status.contains("orders: 340 rows replicated"),
        "{status}"
    );
}

#[test]
fn state_stored_before_pipelines_had_names_is_adopted_in_place() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "200"]);
    db.ok(&["run", "--once"]);
    // Turn the state back into what sluice stored before pipelines had names: one row per
    // table, the keyset in `key_columns`, the values alone in `position`.
    db.pg(
        "ALTER TABLE sluice.replication_state ADD COLUMN key_columns jsonb;
         UPDATE sluice.replication_state
           SET key_columns = position->'keyset'->'columns', position = position->'keyset'->'values';
         ALTER TABLE sluice.replication_state DROP CONSTRAINT replication_state_pkey;
         ALTER TABLE sluice.replication_state DROP COLUMN pipeline, DROP COLUMN owner_epoch,
           DROP COLUMN owner, ALTER COLUMN key_columns SET NOT NULL, ADD PRIMARY KEY (table_name);
         ALTER TABLE sluice.dead_letters DROP COLUMN pipeline;
         DELETE FROM sluice.state_migrations WHERE version = 'm20261126_000005_pipelines_and_owners';",
    );
    let old = db
        .pg_rows("SELECT key_columns::text, jsonb_typeof(position) FROM sluice.replication_state");
    assert_eq!(
        old,
        vec![vec![
            Some("[\"created\", \"order_id\"]".into()),
            Some("array".into())
        ]]
    );
    db.ok(&["generate", "--rate", "1000000", "--total", "100"]);
    let out = db.run(&["run", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replicated 100 rows"),
        "only the new rows are read: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(log.contains("adopted the table's state"), "{log}");
    assert_eq!(db.assert_orders_equal(), 300);
    let new = db.pg_rows(
        "SELECT pipeline, (position->'keyset'->'columns')::text, rows_replicated::text FROM sluice.replication_state",
    );
    assert_eq!(
        new,
        vec![vec![
            Some(format!("{}/public", db.name)),
            Some("[\"created\", \"order_id\"]".into()),
            Some("300".into())
        ]]
    );
}

/// Two tables; `bad` gets a TINYINT(1) value of 2, which cannot be carried as a boolean.
fn two_tables(db: &TestDb, extra: &str) -> std::path::PathBuf {
    db.mysql(
        "CREATE TABLE good (id INT NOT NULL PRIMARY KEY, at DATETIME(6) NOT NULL DEFAULT NOW(6)); \
         CREATE TABLE bad (id INT NOT NULL PRIMARY KEY, flag TINYINT(1) NOT NULL, \
           at DATETIME(6) NOT NULL DEFAULT NOW(6)); \
         INSERT INTO good (id) VALUES (1), (2); INSERT INTO bad (id, flag) VALUES (1, 1)",
    );
    db.config(&format!(
        "{extra}[[tables]]\nname = \"good\"\ncursor = \"at\"\n[[tables]]\nname = \"bad\"\ncursor = \"at\"\n"
    ))
}

#[test]
fn one_tables_failure_leaves_the_others_replicating() {
    let db = TestDb::new();
    let cfg = two_tables(&db, "");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut run = db.spawn_logged(
        &["--config", cfg.to_str().unwrap(), "run"],
        &[("SLUICE_HTTP_ADDR", &addr)],
    );
    common::wait_until("both tables to start", Duration::from_secs(60), || {
        db.pg_rows("SELECT (to_regclass('public.bad') IS NOT NULL AND to_regclass('public.good') IS NOT NULL)::text")[0][0].as_deref() == Some("true")
            && db.pg_i64("SELECT COUNT(*) FROM public.good") == 2
            && db.pg_i64("SELECT COUNT(*) FROM public.bad") == 1
    });
    db.mysql("INSERT INTO bad (id, flag) VALUES (2, 2)");
    run.wait_for("table stopped", Duration::from_secs(30));
    assert!(run.log().contains("TINYINT(1) holds 2"), "{}", run.log());
    // The other table goes on.
    db.mysql("INSERT INTO good (id) VALUES (3), (4), (5)");
    common::wait_until("good's new rows", Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM public.good") == 5
    });
    // status, /readyz and the metrics say which table stopped and why.
    common::wait_until(
        "the error in the state table",
        Duration::from_secs(30),
        || {
            db.ok(&["--config", cfg.to_str().unwrap(), "status"])
                .contains("TINYINT(1) holds 2")
        },
    );
    let status = db.ok(&["--config", cfg.to_str().unwrap(), "status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("bad:") && l.contains("TINYINT(1) holds 2")),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("good:") && l.contains("last error none")),
        "{status}"
    );
    let (code, body) = get(port, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tables"]["good"], "running", "{body}");
    assert!(
        v["tables"]["bad"].as_str().unwrap().starts_with("failed:"),
        "{body}"
    );
    let (_, metrics) = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("sluice_table_failures_total{table=\"bad\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_table_running{table=\"bad\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_table_running{table=\"good\"} 1"),
        "{metrics}"
    );
    // The run ends with exit 1, naming the table that stopped.
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", run.log());
    assert!(run.log().contains("table \"bad\" stopped"), "{}", run.log());
}

#[test]
fn stop_all_stops_every_table_at_the_first_failure() {
    let db = TestDb::new();
    let cfg = two_tables(&db, "[pipeline]\non_table_error = \"stop_all\"\n");
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    common::wait_until("both tables to start", Duration::from_secs(60), || {
        db.pg_rows("SELECT (to_regclass('public.bad') IS NOT NULL)::text")[0][0].as_deref()
            == Some("true")
            && db.pg_i64("SELECT COUNT(*) FROM public.bad") == 1
    });
    db.mysql("INSERT INTO bad (id, flag) VALUES (2, 2)");
    // It stops on its own.
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", run.log());
    assert!(
        run.log().contains("on_table_error = \"stop_all\""),
        "{}",
        run.log()
    );
}
