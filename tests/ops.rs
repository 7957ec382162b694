//! Operations: `verify` (and `--repair`), `status`, the HTTP surface, progress output.

mod common;

use common::{free_port, get, pg_admin, TestDb};

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

fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).map(|v| v.trim().parse().unwrap()))
}

#[test]
fn http_metrics_health_readiness_and_status_during_a_run() {
    use std::time::Duration;
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "500"]);
    let port = free_port();
    let log = std::env::temp_dir().join(format!("{}-run.log", db.name));
    let child = db
        .sluice()
        .args(["run"])
        .env("SLUICE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait = |what: &str, mut f: Box<dyn FnMut() -> bool + '_>| {
        common::wait_until(
            &format!("{what}\nlog:\n{}", logs()),
            Duration::from_secs(60),
            &mut *f,
        )
    };
    wait(
        "healthz",
        Box::new(|| get(port, "/healthz").map(|r| r.0) == Some(200)),
    );
    wait(
        "readyz 200",
        Box::new(|| get(port, "/readyz").map(|r| r.0) == Some(200)),
    );
    let written = "sluice_rows_written_total{table=\"orders\"}";
    wait(
        "500 rows in /metrics",
        Box::new(|| get(port, "/metrics").and_then(|(_, m)| metric(&m, written)) == Some(500.0)),
    );
    let (code, m) = get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    // Read by a real exposition-format parser and linter (promtool, from scripts/tools.sh).
    let mut lint = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is not installed: run `. scripts/tools.sh` (scripts/test.sh does)");
    use std::io::Write as _;
    lint.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
    let linted = lint.wait_with_output().unwrap();
    assert!(
        linted.status.success(),
        "promtool check metrics: {linted:?}\n{m}"
    );
    for needle in [
        "# TYPE sluice_rows_read_total counter",
        "sluice_rows_read_total{table=\"orders\"} 500",
        "# TYPE sluice_write_duration_seconds histogram",
        "sluice_batch_rows_count{table=\"orders\"}",
        "sluice_retries_total{table=\"orders\",stage=\"writer\"} 0",
        "sluice_channel_rows{table=\"orders\"}",
        "sluice_watermark_age_seconds{table=\"orders\"}",
        "sluice_bad_rows_total{table=\"orders\"} 0",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
    wait(
        "lag 0 when caught up",
        Box::new(|| {
            get(port, "/metrics")
                .and_then(|(_, m)| metric(&m, "sluice_replication_lag_seconds{table=\"orders\"}"))
                == Some(0.0)
        }),
    );

    // status works while run goes on, as text and JSON, and /status says the same.
    let out = db.ok(&["status"]);
    assert!(
        out.contains("orders: 500 rows replicated, watermark (created=")
            && out.contains("lag 0.000 s"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&db.ok(&["status", "--json"])).unwrap();
    assert_eq!(v["tables"][0]["table"], "orders");
    assert_eq!(v["tables"][0]["rows_replicated"], 500);
    assert_eq!(v["tables"][0]["lag_seconds"], 0.0);
    assert!(v["tables"][0]["watermark"]["order_id"].is_string(), "{v}");
    let (code, body) = get(port, "/status").unwrap();
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["tables"][0]["rows_replicated"], 500);

    // Probes and scrapers reuse the process's helper connections, and repeated requests
    // within a second are answered from the last answer: no new connections to either side.
    let sources = || {
        let mut ids: Vec<String> = db
            .mysql_rows(&format!(
                "SELECT CAST(ID AS CHAR) FROM information_schema.PROCESSLIST WHERE DB = '{}' AND ID <> CONNECTION_ID()",
                db.name
            ))
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect();
        ids.sort();
        ids
    };
    let helpers = || {
        db.pg_rows(&format!(
            "SELECT pid::text FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'sluice status'",
            db.name
        ))
    };
    let (before_source, before_helper) = (sources(), helpers());
    assert_eq!(
        before_helper.len(),
        1,
        "one helper connection: {before_helper:?}"
    );
    let start = std::time::Instant::now();
    let mut requests = 0;
    while requests < 60 || start.elapsed() < Duration::from_millis(2500) {
        assert_eq!(get(port, "/readyz").map(|r| r.0), Some(200));
        assert_eq!(get(port, "/status").map(|r| r.0), Some(200));
        requests += 2;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(helpers(), before_helper, "the helper connection was reused");
    let after_source = sources();
    assert!(
        after_source.iter().all(|id| before_source.contains(id)),
        "no new source connection for {requests} requests: {before_source:?} -> {after_source:?}"
    );

    // The target database goes away (only this test's database): not ready, then back.
    pg_admin(&format!(
        "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false",
        db.name
    ));
    pg_admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
        db.name
    ));
    wait(
        "readyz 503",
        Box::new(
            || matches!(get(port, "/readyz"), Some((503, b)) if b.contains("\"target\"") && b.contains("\"ready\":false")),
        ),
    );
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    pg_admin(&format!(
        "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
        db.name
    ));
    wait(
        "readyz 200 again",
        Box::new(|| get(port, "/readyz").map(|r| r.0) == Some(200)),
    );
    // And replication goes on.
    db.ok(&["generate", "--rate", "1000000", "--total", "300"]);
    wait(
        "800 rows in /metrics",
        Box::new(|| get(port, "/metrics").and_then(|(_, m)| metric(&m, written)) == Some(800.0)),
    );
    common::signal(&child, "TERM");
    let out = common::wait_output(child, Duration::from_secs(60));
    assert!(out.status.success(), "{}", logs());
    assert_eq!(db.assert_orders_equal(), 800);
}

#[test]
fn progress_is_logged_in_plain_lines_when_not_a_terminal() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "20000"]);
    let cfg = db.config("[pipeline]\nbatch_rows = 50\nlinger_ms = 1\n");
    let out = db
        .sluice()
        .args(["--config", cfg.to_str().unwrap(), "run", "--once"])
        .env("SLUICE_PROGRESS_MS", "20")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // No terminal: no bar drawing, only log lines, with rate and ETA from the estimated total.
    assert!(!err.contains('\r') && !err.contains("\x1b[?25l"), "{err}");
    assert!(err.contains("progress: 20000 rows in"), "{err}");
    // The total is InnoDB's row estimate, not an exact count: match the shape "n/total rows (".
    assert!(
        err.lines()
            .any(|l| l.contains("progress: ") && l.contains(" rows (") && l.contains("ETA")),
        "{err}"
    );
}
