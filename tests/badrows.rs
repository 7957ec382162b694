//! A value PostgreSQL refuses never wedges or silently skips: it stops the table with the
//! row's key and reason, or (dead_letter mode) is kept in sluice.dead_letters.

mod common;

use common::TestDb;

/// 300 good orders and one whose key holds a NUL character: MariaDB stores it, PostgreSQL
/// text cannot.
fn seed(db: &TestDb) {
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "300"]);
    db.mysql(
        "INSERT INTO orders (order_id, created) VALUES (CONCAT('bad', CHAR(0), 'row'), NOW(6))",
    );
    db.mysql("INSERT INTO orders (order_id, created) VALUES ('after-the-bad-row', NOW(6))");
}

#[test]
fn a_refused_row_stops_the_table_naming_key_and_reason() {
    let db = TestDb::new();
    seed(&db);
    let out = db.run(&["run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("orders") && err.contains("order_id=\"bad\\0row\"") && err.contains("0x00"),
        "{err}"
    );
    // Nothing after the bad row was written or skipped over.
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM public.orders WHERE order_id = 'after-the-bad-row'"),
        0
    );
    let status = db.ok(&["status"]);
    assert!(
        status.contains("0x00"),
        "status shows the last error: {status}"
    );
}

#[test]
fn dead_letter_mode_keeps_the_row_and_goes_on() {
    let db = TestDb::new();
    seed(&db);
    let cfg = db.config("[pipeline]\non_bad_row = \"dead_letter\"\nbatch_rows = 64\n");
    let out = db.ok(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    assert!(out.contains("1 rows refused by PostgreSQL"), "{out}");
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.orders"), 301);
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM public.orders WHERE order_id = 'after-the-bad-row'"),
        1
    );
    let dead = db.pg_rows("SELECT table_name, key::text, error FROM sluice.dead_letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0][0].as_deref(), Some("orders"));
    let key = dead[0][1].as_deref().unwrap();
    assert!(
        key.contains("order_id") && key.contains("bad\\u0000row"),
        "{key}"
    );
    assert!(dead[0][2].as_deref().unwrap().contains("0x00"), "{dead:?}");
    assert_eq!(
        db.pg_i64("SELECT rows_replicated FROM sluice.replication_state"),
        301
    );
}
