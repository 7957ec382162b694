//! Operations: `verify` (and `--repair`), `status`, the HTTP surface, progress output.

mod common;

use common::TestDb;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn verify_reports_missing_extra_and_different_rows_then_repairs_them() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "3000"]);
    db.ok(&["run", "--once"]);
    let out = db.ok(&["verify"]);
    assert!(
        out.contains("orders: equal: 3000 rows on the source, 3000 on the target"),
        "{out}"
    );

    // One row deleted, one changed, one added on the target.
    let ids = db.pg_rows("SELECT order_id FROM public.orders ORDER BY order_id LIMIT 2");
    let (gone, changed) = (ids[0][0].clone().unwrap(), ids[1][0].clone().unwrap());
    db.pg(&format!(
        "DELETE FROM public.orders WHERE order_id = '{gone}'"
    ));
    db.pg(&format!(
        "UPDATE public.orders SET created = created + interval '1 microsecond' WHERE order_id = '{changed}'"
    ));
    db.pg("INSERT INTO public.orders VALUES ('not-on-the-source', now())");
    let out = db.run(&["verify"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("missing on the target: 1 (order_id=\"{gone}\")")),
        "{text}"
    );
    assert!(
        text.contains(&format!("different: 1 (order_id=\"{changed}\")")),
        "{text}"
    );
    assert!(
        text.contains("extra on the target: 1 (order_id=\"not-on-the-source\")"),
        "{text}"
    );

    // JSON for scripts.
    let out = db.run(&["verify", "--json", "--table", "orders"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["missing"], 1);
    assert_eq!(v[0]["extra"], 1);
    assert_eq!(v[0]["different"], 1);

    let watermark = db.pg_rows("SELECT position::text FROM sluice.replication_state");
    let out = db.ok(&["verify", "--repair"]);
    assert!(
        out.contains("repaired: 2 rows upserted, 1 deleted; now equal"),
        "{out}"
    );
    // The watermark did not move; the tables are equal again.
    assert_eq!(
        db.pg_rows("SELECT position::text FROM sluice.replication_state"),
        watermark
    );
    assert_eq!(db.assert_orders_equal(), 3000);
    let out = db.ok(&["verify"]);
    assert!(out.contains("orders: equal"), "{out}");
}

#[test]
fn verify_compares_every_common_type_and_repairs_them() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, u BIGINT UNSIGNED, d DECIMAL(12,3), s VARCHAR(50), \
         b VARBINARY(20), dt DATE, ts DATETIME(6), tz TIMESTAMP(6) NULL, f TINYINT(1), \
         db DOUBLE, y YEAR, bits BIT(5), e ENUM('a','b'), n INT NULL) CHARACTER SET latin1",
    );
    db.mysql(
        "INSERT INTO t VALUES \
         (1, 18446744073709551615, -1.500, 'héllo\\ttab', 0x00ff10, '2024-02-29', '2024-01-02 03:04:05.000006', '2024-01-02 03:04:05.5', 1, 0.1, 2024, b'10101', 'b', NULL), \
         (2, 0, 0.000, '', '', '1000-01-01', '9999-12-31 23:59:59.999999', NULL, 0, -2.5e-7, 1999, b'0', 'a', 7), \
         (3, NULL, NULL, NULL, NULL, NULL, '2000-01-01', NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    );
    let cfg = db.config("[[tables]]\nname = \"t\"\ncursor = \"id\"\n");
    let cfg = cfg.to_str().unwrap();
    db.ok(&["--config", cfg, "run", "--once"]);
    let out = db.ok(&["--config", cfg, "verify"]);
    assert!(
        out.contains("t: equal: 3 rows on the source, 3 on the target"),
        "{out}"
    );
    assert!(
        out.contains("not compared (no common text form): db"),
        "{out}"
    );
    db.pg("UPDATE public.t SET d = -1.501 WHERE id = 1");
    db.pg("UPDATE public.t SET n = 8 WHERE id = 2");
    db.pg("UPDATE public.t SET s = 'x' WHERE id = 3");
    let out = db.run(&["--config", cfg, "verify", "--table", "t"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("different: 3"), "{}", stdout(&out));
    db.ok(&["--config", cfg, "verify", "--repair"]);
    let out = db.ok(&["--config", cfg, "verify"]);
    assert!(out.contains("t: equal"), "{out}");
    assert_eq!(db.pg_i64("SELECT n::bigint FROM public.t WHERE id = 2"), 7);
}

#[test]
fn verify_names_an_unknown_table() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let out = db.run(&["verify", "--table", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\" is not configured"));
}
