//! The command-line contract: exit codes and error messages.

mod common;

use common::TestDb;

#[test]
fn unknown_config_key_exits_2_naming_it() {
    let db = TestDb::new();
    let cfg = db.config("[pipeline]\nbatch_size = 10\n");
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch_size"), "{err}");
}

#[test]
fn wrong_flag_exits_2() {
    let db = TestDb::new();
    let out = db.run(&["run", "--onse"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_table_exits_2_naming_it() {
    let db = TestDb::new();
    let cfg = db.config("[[tables]]\nname = \"no_such_table\"\ncursor = \"id\"\n");
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no_such_table") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn table_without_primary_key_exits_2_saying_how_to_fix_it() {
    let db = TestDb::new();
    db.mysql("CREATE TABLE events (id BIGINT NOT NULL, at DATETIME(6) NOT NULL)");
    let cfg = db.config("[[tables]]\nname = \"events\"\ncursor = \"at\"\n");
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no primary key") && err.contains("primary_key"),
        "{err}"
    );
}

#[test]
fn unreachable_source_is_retried_then_named_without_the_password() {
    let db = TestDb::new();
    let cfg = db.config("[retry]\nconnect_timeout_ms = 1500\n");
    let start = std::time::Instant::now();
    let out = db.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--source",
        "mysql://root:s3cr3t-pw@127.0.0.1:1/nope",
        "run",
        "--once",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("127.0.0.1:1") && all.contains("gave up after 1.5 s"),
        "{all}"
    );
    assert!(all.contains("retrying"), "each attempt is logged: {all}");
    assert!(!all.contains("s3cr3t-pw"), "password leaked: {all}");
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(1500),
        "retried for the configured time"
    );
}

#[test]
fn status_reports_each_table() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    // The source gets the demo table and nothing of sluice's own.
    assert_eq!(
        db.mysql_rows("SHOW TABLES"),
        vec![vec![Some("orders".to_string())]]
    );
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "10"]);
    db.ok(&["run", "--once"]);
    let out = db.ok(&["status"]);
    assert!(
        out.contains("orders: 10 rows replicated") && out.contains("created="),
        "{out}"
    );
}

#[test]
fn every_table_problem_is_reported_at_once_each_with_its_fix() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE good (id INT NOT NULL PRIMARY KEY, at DATETIME(6) NOT NULL); \
         CREATE TABLE nullable_cursor (id INT NOT NULL PRIMARY KEY, at DATETIME(6) NULL); \
         CREATE TABLE no_key (id INT NOT NULL, at DATETIME(6) NOT NULL); \
         CREATE TABLE bad_cursor (id INT NOT NULL PRIMARY KEY, at DATETIME(6) NOT NULL)",
    );
    let cfg = db.config(
        "[[tables]]\nname = \"good\"\ncursor = \"at\"\n\
         [[tables]]\nname = \"nullable_cursor\"\ncursor = \"at\"\n\
         [[tables]]\nname = \"missing_cursor\"\ncursor = \"at\"\n\
         [[tables]]\nname = \"no_key\"\ncursor = \"at\"\n\
         [[tables]]\nname = \"bad_cursor\"\ncursor = \"no_such_column\"\n",
    );
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("4 of the 5 tables cannot be replicated"),
        "{err}"
    );
    for needle in [
        "nullable_cursor",
        "missing_cursor",
        "no_key",
        "no_such_column",
    ] {
        assert!(err.contains(needle), "{needle} is reported: {err}");
    }
    // Nothing was written anywhere.
    assert_eq!(
        db.pg_rows("SELECT to_regclass('public.good')::text")[0][0],
        None
    );
}
