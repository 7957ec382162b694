//! The status page (`GET /`) in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/browser/page.mjs`; `scripts/tools.sh` installs both), against a running `demo`
//! in binlog capture. The page loads with no console error and shows the tables and a lag
//! that moves, and a table's last background verify; it shows a big table's snapshot
//! progress (the pipeline's first copy), and a
//! stopped table's error with
//! its fix; it fits a phone's width; axe-core finds no serious accessibility violation in
//! any of these states; no password reaches it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{free_port, get, signal, wait_output, TestDb};

const SECRET: &str = "Page-secret-4471";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// `node page.mjs <base> <check> <args…>`, started (it waits for its condition itself).
fn check(base: &str, args: &[&str]) -> Child {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "the page test needs Chromium and tests/browser's npm packages: run `. scripts/tools.sh` \
         (scripts/test.sh does)"
    );
    Command::new("node")
        .current_dir(&dir)
        .arg("page.mjs")
        .arg(base)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/tools.sh installs it)")
}

fn passed(what: &str, out: Output, log: &dyn Fn() -> String) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "page check {what} failed:\n{}{stdout}\nsluice's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    eprintln!("page check {what}: {stdout}");
    stdout
}

#[test]
fn the_status_page_shows_tables_lag_snapshots_and_errors_in_a_browser() {
    let db = TestDb::new();
    db.assert_binlog_on();
    db.mysql(
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n BIGINT NOT NULL); \
         INSERT INTO items SELECT seq, seq FROM seq_1_to_50; \
         CREATE TABLE big (id BIGINT NOT NULL PRIMARY KEY, v VARCHAR(64) NOT NULL); \
         INSERT INTO big SELECT seq, REPEAT('x', 60) FROM seq_1_to_600000",
    );
    // Small pages: the big table's copy takes many pages, long enough to be watched.
    let cfg = db.config(
        "[source]\ncapture = \"binlog\"\n[pipeline]\nbatch_rows = 1000\n[verify]\ninterval_s = 2\n\
         [[tables]]\nname = \"orders\"\n[[tables]]\nname = \"items\"\n[[tables]]\nname = \"big\"\n",
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let target = format!("{}?password={SECRET}", db.target_url);
    let base = format!("http://{addr}");
    let watch = check(&base, &["snapshot", "big"]);
    let mut demo = db.spawn_logged(
        &["--config", cfg.to_str().unwrap(), "demo", "--rate", "100"],
        &[("SLUICE_HTTP_ADDR", &addr), ("SLUICE_TARGET_URL", &target)],
    );
    let log = || demo.log();
    // The big table's first copy: its card shows the progress while it runs. The browser
    // starts with sluice, and waits for it to serve.
    let said = passed(
        "snapshot",
        wait_output(watch, Duration::from_secs(120)),
        &log,
    );
    assert!(said.contains("rows") && said.contains("chunks"), "{said}");

    demo.wait_until("the status page and some orders", || {
        get(port, "/status").is_some_and(|(code, body)| {
            code == 200 && body.contains("\"orders\"") && body.contains("\"items\"")
        }) && db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'orders'") == 1
    });

    // The page, its script and style: served from the binary, under a strict policy.
    let (code, html) = get(port, "/").unwrap();
    assert_eq!(code, 200);
    assert!(
        html.contains("<html lang=\"en\">") && html.contains("/page.js"),
        "{html}"
    );
    for path in ["/page.js", "/page.css", "/favicon.svg"] {
        assert_eq!(get(port, path).unwrap().0, 200, "{path}");
    }

    let out = wait_output(
        check(&base, &["loads", "orders", "items"]),
        Duration::from_secs(120),
    );
    let said = passed("loads", out, &log);
    assert!(said.contains("lag moved"), "{said}");
    assert!(
        said.contains("Capturebinlog") && said.contains("password=***") && !said.contains(SECRET),
        "the header shows the process, its target's password masked: {said}"
    );
    let said = passed(
        "verify",
        wait_output(
            check(&base, &["verify", "orders"]),
            Duration::from_secs(120),
        ),
        &log,
    );
    assert!(said.contains("rows compared"), "{said}");
    passed(
        "phone",
        wait_output(check(&base, &["phone"]), Duration::from_secs(120)),
        &log,
    );

    // A narrowing change stops `items`: the card says so, with the error and its fix.
    db.mysql("ALTER TABLE items MODIFY n INT NOT NULL");
    db.mysql("UPDATE items SET n = 7 WHERE id = 2");
    let shot = std::env::temp_dir().join(format!("{}-page.png", db.name));
    let out = wait_output(
        check(
            &base,
            &[
                "stopped",
                "items",
                "ALTER COLUMN",
                "--screenshot",
                shot.to_str().unwrap(),
            ],
        ),
        Duration::from_secs(120),
    );
    let said = passed("stopped", out, &log);
    assert!(said.contains("int(11)"), "{said}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // Nothing the page reads carries the password. Only `items` stopped: the orders the
    // demo writes meanwhile (in the same batches as items' change) go on.
    let (_, status) = get(port, "/status").unwrap();
    assert!(!status.contains(SECRET), "{status}");
    let orders = |status: &str| -> (String, i64) {
        let v: serde_json::Value = serde_json::from_str(status).unwrap();
        let t = v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == "orders")
            .unwrap()
            .clone();
        (
            t["live"]["state"].as_str().unwrap_or_default().to_string(),
            t["rows_replicated"].as_i64().unwrap(),
        )
    };
    let (state, rows) = orders(&status);
    assert!(state == "streaming" || state == "caught up", "{status}");
    demo.wait_until("orders to go on", || {
        get(port, "/status").is_some_and(|(_, s)| orders(&s).1 > rows + 100)
    });

    // The target's state cannot be read (a session holds a lock on it, as a migration
    // would): the page says why, and still shows the tables as the process knows them.
    // Replication waits behind the lock meanwhile, and goes on once it is let go.
    let holder = Command::new("psql")
        .args([
            db.target_url.as_str(),
            "-q",
            "-c",
            "BEGIN; LOCK TABLE sluice.replication_state IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)",
        ])
        .env("PGAPPNAME", "lock holder")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    demo.wait_until("the lock to be held", || {
        db.pg_i64(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = 'replication_state' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        ) == 1
    });
    let said = passed(
        "unreadable",
        wait_output(
            check(&base, &["unreadable", "orders"]),
            Duration::from_secs(120),
        ),
        &log,
    );
    assert!(
        said.contains("replication_state") && said.contains("lock"),
        "{said}"
    );
    // Its session ends with it (a session asleep does not notice its client is gone).
    db.pg(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'lock holder' AND datname = '{}'",
        db.name
    ));
    let mut holder = holder;
    let _ = holder.kill();
    let _ = holder.wait();
    let mut rows = 0;
    demo.wait_until("the status to be read again", || {
        get(port, "/status").is_some_and(|(code, s)| {
            code == 200 && {
                rows = orders(&s).1;
                true
            }
        })
    });
    demo.wait_until("orders to go on after the lock", || {
        get(port, "/status").is_some_and(|(code, s)| code == 200 && orders(&s).1 > rows + 100)
    });

    signal(&demo.child, "INT");
    demo.wait_exit(Duration::from_secs(60));
}
