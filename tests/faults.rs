//! Server faults under a continuous run: PostgreSQL and MariaDB restarted mid-stream. These
//! tests stop shared servers, so this binary runs its tests one at a time (cargo runs test
//! binaries one after another, so no other test binary runs meanwhile), and each leaves the
//! servers running.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{signal, wait_output, wait_until, TestDb};

static SERIAL: Mutex<()> = Mutex::new(());

fn sh(script: &str) {
    let status = Command::new("bash").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "`{script}` failed");
}

fn restart_postgres() {
    sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -1) main restart -m fast");
}

fn restart_mariadb() {
    // Shut down, and wait until the server process has gone (up to 60 s).
    sh("mariadb-admin -h127.0.0.1 -uroot shutdown; \
        for i in $(seq 600); do pgrep -x mariadbd >/dev/null || exit 0; sleep 0.1; done; exit 1");
    // The project's own start-up script brings it back (and waits until it answers).
    sh(concat!(
        "bash ",
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/services.sh >/dev/null"
    ));
}

fn survives(restart: fn(), what: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let cfg = db.config("[retry]\nbackoff_max_ms = 1000\n");
    let mut run = db.spawn(&["--config", cfg.to_str().unwrap(), "run"]);
    let gen = db.spawn(&["generate", "--rate", "400", "--total", "3000"]);
    wait_until("some rows to replicate", Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") >= 400
    });
    restart();
    let gen_out = wait_output(gen, Duration::from_secs(90));
    assert!(
        gen_out.status.success(),
        "generator: {}",
        String::from_utf8_lossy(&gen_out.stderr)
    );
    // An insert cut by the restart may have committed although the generator saw an error
    // (and inserted again), so the source can hold a few more than 3000 rows: wait for all
    // of them, whatever their number.
    let source_rows = db.mysql_i64("SELECT COUNT(*) FROM orders");
    assert!(source_rows >= 3000, "{source_rows}");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while db.pg_i64("SELECT COUNT(*) FROM public.orders") != source_rows {
        if std::time::Instant::now() > deadline {
            // Say what sluice was doing, not just that it timed out.
            let _ = run.kill();
            let out = run.wait_with_output().unwrap();
            panic!(
                "after {what} restarted, the target has {} of {source_rows} rows after 90 s; sluice's log:\n{}",
                db.pg_i64("SELECT COUNT(*) FROM public.orders"),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        run.try_wait().unwrap().is_none(),
        "sluice run must survive a {what} restart"
    );
    signal(&run, "TERM");
    let out = wait_output(run, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("retrying"),
        "each retry is logged: {stderr}"
    );
    assert_eq!(db.assert_orders_equal() as i64, source_rows);
}

#[test]
fn postgres_restart_mid_stream_loses_nothing() {
    survives(restart_postgres, "PostgreSQL");
}

#[test]
fn mariadb_restart_mid_stream_loses_nothing() {
    survives(restart_mariadb, "MariaDB");
}
