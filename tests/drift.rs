//! The background verify (`[verify] interval_s`): drift found and repaired while `run`
//! replicates under load, nothing in flight reported, the read budget kept, and the results
//! in status, metrics and /readyz.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, get, mysql_worker, Logged, TestDb};

/// The value of one metric sample (`name{labels}`) on `/metrics`.
fn metric(port: u16, sample: &str) -> Option<f64> {
    let (_, body) = get(port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
}

/// Rows replicated into `t` so far (0 before the state table exists).
fn replicated(db: &TestDb) -> i64 {
    if db.pg_rows("SELECT (to_regclass('sluice.replication_state') IS NULL)::text")[0][0].as_deref()
        == Some("true")
    {
        return 0;
    }
    db.pg_i64("SELECT COALESCE(max(rows_replicated), 0) FROM sluice.replication_state WHERE table_name = 't'")
}

/// The `id` keys the background verify's warnings name.
fn reported_keys(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in log.lines().filter(|l| l.contains("DIFFERENT")) {
        for part in line
            .split("id=\\\"")
            .skip(1)
            .chain(line.split("id=\"").skip(1))
        {
            let key: String = part.chars().take_while(char::is_ascii_digit).collect();
            if !key.is_empty() && !out.contains(&key) {
                out.push(key);
            }
        }
    }
    out
}

/// Waits until `cond` holds; on a timeout, fails with `run`'s log.
fn wait_logged(run: &Logged, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; log:\n{}",
            run.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The background verify reported rows, and only rows among `drift` (by `id`).
fn only_drift_reported(log: &str, drift: &[&str]) {
    let reported = reported_keys(log);
    assert!(!reported.is_empty(), "{log}");
    for key in &reported {
        assert!(
            drift.contains(&key.as_str()),
            "row id={key} reported, and it was not drift:\n{log}"
        );
    }
}

/// Waits for every source row of `table` on the target, stops `run`, and checks with the
/// on-demand verify (config `config`) that both sides are equal.
fn drain_stop_and_verify(db: &TestDb, run: Logged, table: &str, config: &str) {
    let total = db.mysql_i64(&format!("SELECT COUNT(*) FROM {table}"));
    wait_logged(
        &run,
        "the load on the target",
        Duration::from_secs(30),
        || db.pg_i64(&format!("SELECT count(*) FROM public.{table}")) == total,
    );
    stop(run);
    let cfg = db.config(config);
    let out = db.ok(&["--config", cfg.to_str().unwrap(), "verify"]);
    assert!(out.contains(&format!("{table}: equal")), "{out}");
}

/// `run` with this config, serving HTTP on a port of its own.
fn start(db: &TestDb, config: &str) -> (Logged, u16) {
    let cfg = db.config(config);
    let port = free_port();
    let run = db.spawn_logged(
        &["--config", cfg.to_str().unwrap(), "run"],
        &[("SLUICE_HTTP_ADDR", &format!("127.0.0.1:{port}"))],
    );
    (run, port)
}

fn stop(mut run: Logged) -> String {
    common::signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "run failed:\n{}", run.log());
    run.log()
}

/// A polled table `t` with 2,000 rows, cursor `at`.
fn polled_table(db: &TestDb) {
    db.mysql(
        "CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL, \
         v VARCHAR(40) NOT NULL, KEY (at))",
    );
    db.mysql(
        "INSERT INTO t (at, v) SELECT NOW(6) - INTERVAL 1 HOUR, CONCAT('row ', seq) FROM seq_1_to_2000",
    );
}

/// 1,000 rows per second into `t` (10 every 10 ms) until `stop` is set.
fn load(db: &TestDb, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let start = Instant::now();
    mysql_worker(db.source_url.clone(), stop, move |n| {
        let due = start + Duration::from_millis(10 * n as u64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        Some(
            "INSERT INTO t (at, v) SELECT NOW(6), CONCAT('load ', seq) FROM seq_1_to_10"
                .to_string(),
        )
    })
}

#[test]
fn polling_background_verify_repairs_deletes_backdated_rows_and_hand_edits_under_load_without_false_reports(
) {
    let db = TestDb::new();
    polled_table(&db);
    let (run, port) = start(
        &db,
        "[verify]\ninterval_s = 2\nrepair = true\n\n[[tables]]\nname = \"t\"\ncursor = \"at\"\n",
    );
    wait_logged(
        &run,
        "the first rows on the target",
        Duration::from_secs(60),
        || replicated(&db) >= 2000,
    );
    let stop_load = Arc::new(AtomicBool::new(false));
    let loader = load(&db, stop_load.clone());
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(5).saturating_sub(began.elapsed()));

    // Drift that polling cannot see: deletes, a row behind the watermark, an update that
    // leaves the cursor alone; and a target row changed by hand.
    db.mysql("DELETE FROM t WHERE id IN (10, 11, 12)");
    db.mysql("INSERT INTO t (id, at, v) VALUES (900000000, '2001-01-01', 'backdated')");
    db.mysql("UPDATE t SET v = 'changed quietly' WHERE id = 20");
    db.pg("UPDATE public.t SET v = 'by hand' WHERE id = 30");
    let injected = Instant::now();
    wait_logged(
        &run,
        "the drift repaired on the target",
        Duration::from_secs(30),
        || {
            db.pg_rows(
                "SELECT ((SELECT count(*) FROM public.t WHERE id IN (10, 11, 12)) = 0 \
                   AND (SELECT v FROM public.t WHERE id = 900000000) = 'backdated' \
                   AND (SELECT v FROM public.t WHERE id = 20) = 'changed quietly' \
                   AND (SELECT v FROM public.t WHERE id = 30) = 'row 30')::text",
            )[0][0]
                .as_deref()
                == Some("true")
        },
    );
    let converged = injected.elapsed();
    // Two intervals, and the time one comparison of the table takes.
    assert!(converged < Duration::from_secs(12), "took {converged:?}");

    // Load for 30 s in all: every check meanwhile sees rows in flight, and reports none.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(began.elapsed()));
    stop_load.store(true, Ordering::Relaxed);
    let inserted = loader.join().unwrap();
    assert!(inserted >= 2_500, "the load ran {inserted} statements");
    let checks = metric(port, "sluice_verify_checks_total{table=\"t\"}").unwrap();
    assert!(checks >= 8.0, "{checks} checks in 30 s");
    // Each row found is repaired, so the repaired count is every row ever reported: the
    // six rows of drift, and not one row in flight.
    let repaired = metric(port, "sluice_verify_rows_repaired_total{table=\"t\"}").unwrap();
    assert_eq!(repaired, 6.0, "log:\n{}", run.log());
    only_drift_reported(&run.log(), &["10", "11", "12", "900000000", "20", "30"]);
    drain_stop_and_verify(&db, run, "t", "[[tables]]\nname = \"t\"\ncursor = \"at\"\n");
}

#[test]
fn binlog_background_verify_repairs_hand_edits_under_a_load_of_updates_and_deletes_without_false_reports(
) {
    let db = TestDb::new();
    db.assert_binlog_on();
    db.mysql("CREATE TABLE b (id INT PRIMARY KEY, n INT NOT NULL, s VARCHAR(20) NOT NULL)");
    db.mysql("INSERT INTO b SELECT seq, 0, 'start' FROM seq_1_to_3000");
    let (run, port) = start(
        &db,
        "[source]\ncapture = \"binlog\"\n\n[verify]\ninterval_s = 2\nrepair = true\n\n[[tables]]\nname = \"b\"\n",
    );
    wait_logged(
        &run,
        "the snapshot on the target",
        Duration::from_secs(60),
        || {
            metric(port, "sluice_table_running{table=\"b\"}") == Some(1.0)
                && db.pg_rows("SELECT (to_regclass('public.b') IS NOT NULL)::text")[0][0].as_deref()
                    == Some("true")
                && db.pg_i64("SELECT count(*) FROM public.b") == 3000
        },
    );
    // Updates, deletes and inserts over the table's rows, a few hundred per second, for
    // 20 s: every check finds rows whose changes are on their way.
    let stop_load = Arc::new(AtomicBool::new(false));
    let loader = mysql_worker(db.source_url.clone(), stop_load.clone(), |n| {
        std::thread::sleep(Duration::from_millis(2));
        let id = 100 + (n * 7919) % 2900;
        Some(match n % 3 {
            0 => format!("UPDATE b SET n = n + 1 WHERE id = {id}"),
            1 => format!("DELETE FROM b WHERE id = {id}"),
            _ => format!(
                "INSERT INTO b VALUES ({id}, {n}, 'again') ON DUPLICATE KEY UPDATE s = 'again'"
            ),
        })
    });
    std::thread::sleep(Duration::from_secs(5));
    // Rows 1..99 are left alone by the load: two are changed on the target by hand.
    db.pg("UPDATE public.b SET s = 'by hand' WHERE id = 5");
    db.pg("DELETE FROM public.b WHERE id = 6");
    wait_logged(
        &run,
        "the hand edits repaired",
        Duration::from_secs(30),
        || {
            db.pg_rows(
                "SELECT ((SELECT s FROM public.b WHERE id = 5) = 'start' \
               AND (SELECT count(*) FROM public.b WHERE id = 6) = 1)::text",
            )[0][0]
                .as_deref()
                == Some("true")
        },
    );
    // Several comparisons run under the load (each waits while the stream has a backlog,
    // so on a busy machine they come further apart: waited for, not slept).
    wait_logged(
        &run,
        "three comparisons under the load",
        Duration::from_secs(120),
        || metric(port, "sluice_verify_checks_total{table=\"b\"}").unwrap_or(0.0) >= 3.0,
    );
    stop_load.store(true, Ordering::Relaxed);
    let ran = loader.join().unwrap();
    assert!(ran > 1000, "the load ran {ran} statements");
    let repaired = metric(port, "sluice_verify_rows_repaired_total{table=\"b\"}").unwrap();
    assert_eq!(repaired, 2.0, "log:\n{}", run.log());
    only_drift_reported(&run.log(), &["5", "6"]);
    drain_stop_and_verify(
        &db,
        run,
        "b",
        "[source]\ncapture = \"binlog\"\n\n[[tables]]\nname = \"b\"\n",
    );
}

#[test]
fn drift_not_repaired_shows_in_readyz_status_and_metrics_and_the_read_budget_holds() {
    let db = TestDb::new();
    polled_table(&db);
    db.mysql("INSERT INTO t (at, v) SELECT NOW(6) - INTERVAL 1 HOUR, 'more' FROM seq_1_to_1000");
    // 3,000 rows, 1,000 rows per second: a check reads each side for about 6 s.
    let (run, port) = start(
        &db,
        "[verify]\ninterval_s = 1\nmax_rows_per_s = 1000\n\n[[tables]]\nname = \"t\"\ncursor = \"at\"\n",
    );
    wait_logged(
        &run,
        "the rows on the target",
        Duration::from_secs(60),
        || replicated(&db) >= 3000,
    );
    db.pg("UPDATE public.t SET v = 'by hand' WHERE id = 7");
    wait_logged(
        &run,
        "the drift on /readyz",
        Duration::from_secs(60),
        || {
            get(port, "/readyz").is_some_and(|(code, body)| {
                code == 200 && body.contains("\"drift\":{\"t\":") && body.contains("NOT repaired")
            })
        },
    );
    let (code, body) = get(port, "/readyz").unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true, "{body}");
    assert!(
        v["drift"]["t"]
            .as_str()
            .unwrap()
            .contains("1 different (id=\"7\")"),
        "{body}"
    );
    assert_eq!(
        metric(
            port,
            "sluice_verify_rows_differing{table=\"t\",kind=\"different\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(port, "sluice_verify_rows_repaired_total{table=\"t\"}"),
        Some(0.0)
    );
    // Not repaired: the target row is as it was edited.
    assert_eq!(
        db.pg_rows("SELECT v FROM public.t WHERE id = 7")[0][0].as_deref(),
        Some("by hand")
    );
    let cfg = db.config("[[tables]]\nname = \"t\"\ncursor = \"at\"\n");
    let cfg = cfg.to_str().unwrap();
    let out = db.ok(&["--config", cfg, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let report = &v["tables"][0]["verify"];
    assert_eq!(report["different"], 1, "{out}");
    assert_eq!(report["source_rows"], 3000, "{out}");
    // The budget: rows read per second on each side, lookups included.
    let secs = report["seconds"].as_f64().unwrap();
    for side in ["read_source", "read_target"] {
        let rate = report[side].as_f64().unwrap() / secs;
        eprintln!("{side}: {rate:.0} rows/s against a budget of 1000");
        assert!(
            (500.0..=1050.0).contains(&rate),
            "{side}: {rate:.0} rows/s against a budget of 1000: {out}"
        );
    }
    let text = db.ok(&["--config", cfg, "status"]);
    assert!(
        text.contains("last verify: ") && text.contains("DIFFERENT: 1 different"),
        "{text}"
    );
    stop(run);
}

#[test]
fn background_verify_walks_and_repairs_a_composite_key_of_text_binary_time_and_decimal() {
    let db = TestDb::new();
    // A case-insensitive text column orders differently on the two sides; keys cross as
    // canonical text, so neither side's order matters.
    db.mysql(
        "CREATE TABLE k (s VARCHAR(20) NOT NULL, b VARBINARY(8) NOT NULL, ts TIMESTAMP(6) NOT NULL, \
         x DECIMAL(10,2) NOT NULL, at DATETIME(6) NOT NULL, v INT NOT NULL, \
         PRIMARY KEY (s, b, ts, x), KEY (at)) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    );
    db.mysql(
        "INSERT INTO k SELECT ELT(1 + seq % 5, 'a', 'B', 'é', 'Zz', '_'), UNHEX(LPAD(HEX(seq % 7), 4, '0')), \
         TIMESTAMP('2024-03-01 00:00:00.000001') + INTERVAL seq SECOND, seq / 4, \
         NOW(6) - INTERVAL 1 HOUR, seq FROM seq_1_to_700",
    );
    let (run, port) = start(
        &db,
        "[verify]\ninterval_s = 1\nrepair = true\nmax_rows_per_s = 2000\n\n[[tables]]\nname = \"k\"\ncursor = \"at\"\n",
    );
    wait_logged(&run, "a first check", Duration::from_secs(60), || {
        metric(port, "sluice_verify_checks_total{table=\"k\"}").is_some_and(|n| n >= 1.0)
    });
    assert_eq!(
        metric(port, "sluice_verify_rows_repaired_total{table=\"k\"}"),
        Some(0.0),
        "{}",
        run.log()
    );
    db.pg("DELETE FROM public.k WHERE v = 10");
    db.pg("UPDATE public.k SET v = -1 WHERE v = 11");
    db.pg("INSERT INTO public.k SELECT 'new', b, ts, x, at, 0 FROM public.k WHERE v = 12");
    wait_logged(&run, "three rows repaired", Duration::from_secs(30), || {
        metric(port, "sluice_verify_rows_repaired_total{table=\"k\"}") == Some(3.0)
    });
    stop(run);
    assert_eq!(
        db.pg_i64("SELECT count(*) FROM public.k WHERE v IN (10, 11)"),
        2
    );
    assert_eq!(
        db.pg_i64("SELECT count(*) FROM public.k WHERE s = 'new'"),
        0
    );
    let cfg = db.config("[[tables]]\nname = \"k\"\ncursor = \"at\"\n");
    let out = db.ok(&["--config", cfg.to_str().unwrap(), "verify"]);
    assert!(out.contains("k: equal: 700 rows"), "{out}");
}
