//! Server faults under a continuous run: PostgreSQL and MariaDB restarted mid-stream. These
//! tests stop shared servers, so this binary runs its tests one at a time (cargo runs test
//! binaries one after another, so no other test binary runs meanwhile), and each leaves the
//! servers running.

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{balanced, mysql_worker, signal, wait_equal, wait_output, wait_until, TestDb};

static SERIAL: Mutex<()> = Mutex::new(());

fn sh(script: &str) {
    let status = Command::new("bash").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "`{script}` failed");
}

fn restart_postgres() {
    sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -1) main restart -m fast");
}

fn restart_mariadb() {
    // Shut down, and wait until the server process has gone (up to 60 s): the one its
    // pidfile names, since another mariadbd may run on the machine (a test's second server).
    sh(
        "pid=$(cat /run/mysqld/mysqld.pid); mariadb-admin -h127.0.0.1 -uroot shutdown; \
        for i in $(seq 600); do kill -0 \"$pid\" 2>/dev/null || exit 0; sleep 0.1; done; exit 1",
    );
    // The project's own start-up script brings it back (and waits until it answers).
    sh(concat!(
        "bash ",
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/services.sh >/dev/null"
    ));
}

fn survives(restart: fn(), what: &str, extra: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let cfg = db.config(&format!("[retry]\nbackoff_max_ms = 1000\n{extra}"));
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
            // Which rows are missing, and how their stamps stand to the newest copied one.
            let (src, tgt) = db.orders_both_sides();
            let missing: Vec<_> = src
                .iter()
                .filter(|r| tgt.binary_search(r).is_err())
                .collect();
            let newest = tgt.iter().filter_map(|r| r[1].clone()).max();
            panic!(
                "after {what} restarted, the target has {} of {source_rows} rows after 90 s; \
                 missing {missing:?}, the target's newest stamp {newest:?}; sluice's log:\n{}",
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
    survives(restart_postgres, "PostgreSQL", "");
}

#[test]
fn mariadb_restart_mid_stream_loses_nothing() {
    survives(restart_mariadb, "MariaDB", "");
}

const BINLOG: &str = "[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"orders\"\n";

#[test]
fn postgres_restart_under_binlog_capture_loses_nothing() {
    survives(restart_postgres, "PostgreSQL", BINLOG);
}

#[test]
fn mariadb_restart_under_binlog_capture_loses_nothing() {
    survives(restart_mariadb, "MariaDB", BINLOG);
}

fn stop_postgres() {
    sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -1) main stop -m fast");
}

/// Starts PostgreSQL again when dropped, whatever the test did: later tests need it.
struct PostgresBack;

impl Drop for PostgresBack {
    fn drop(&mut self) {
        sh(concat!(
            "bash ",
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/services.sh >/dev/null"
        ));
    }
}

#[test]
fn sigterm_while_postgres_is_down_ends_the_process_within_seconds() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let mut run = db.spawn_logged(&["run"], &[]);
    let gen = db.spawn(&["generate", "--rate", "300", "--total", "1500"]);
    wait_until("some rows to replicate", Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") >= 200
    });
    let back = PostgresBack;
    stop_postgres();
    run.wait_for("target write failed; retrying", Duration::from_secs(30));
    signal(&run.child, "TERM");
    let (status, took) = run.wait_exit(Duration::from_secs(30));
    assert!(
        took < Duration::from_secs(8),
        "took {took:?} to stop; log:\n{}",
        run.log()
    );
    assert!(status.success(), "{}", run.log());
    // Started while PostgreSQL is down, it is still connecting: SIGTERM ends that too.
    let mut starting = db.spawn_logged(&["run"], &[]);
    starting.wait_for("cannot connect yet; retrying", Duration::from_secs(30));
    signal(&starting.child, "TERM");
    let (_, took) = starting.wait_exit(Duration::from_secs(30));
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop; log:\n{}",
        starting.log()
    );
    drop(back);
    assert!(wait_output(gen, Duration::from_secs(60)).status.success());
    // Nothing was lost: what was not committed is read again.
    db.ok(&["run", "--once"]);
    assert_eq!(db.assert_orders_equal(), 1500);
}

/// Records every change of `sluice.replication_state` (epoch, owner, position) in commit
/// order of the table's row, so a test can check ownership and positions afterwards.
fn audit_state(db: &TestDb) {
    db.pg(
        "CREATE TABLE public.state_audit (id bigserial PRIMARY KEY, epoch bigint, owner text, position jsonb);
         CREATE FUNCTION public.audit_state() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN INSERT INTO public.state_audit (epoch, owner, position)
              VALUES (NEW.owner_epoch, NEW.owner, NEW.position); RETURN NEW; END $$;
         CREATE TRIGGER audit_state AFTER INSERT OR UPDATE ON sluice.replication_state
           FOR EACH ROW EXECUTE FUNCTION public.audit_state();",
    );
}

#[test]
fn a_stale_owner_never_writes_after_postgres_restarts_and_a_standby_takes_over() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.ok(&["migrate"]);
    audit_state(&db);
    let cfg = db.config("[pipeline]\nbatch_rows = 100\n[retry]\nbackoff_max_ms = 500\n");
    let cfg = cfg.to_str().unwrap();
    let gen = db.spawn(&["generate", "--rate", "400", "--total", "5000"]);
    let mut owner = db.spawn_logged(&["--config", cfg, "run"], &[]);
    wait_until("the owner to replicate", Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") >= 400
    });
    let mut standby = db.spawn_logged(&["--config", cfg, "run"], &[]);
    standby.wait_for("standing by", Duration::from_secs(30));
    // The owner pauses (a long GC pause, a frozen VM) while PostgreSQL restarts under it:
    // its session and lock are gone, and the standby takes the table.
    signal(&owner.child, "STOP");
    restart_postgres();
    standby.wait_for("taking over", Duration::from_secs(60));
    signal(&owner.child, "CONT");
    // The stale owner finds the table taken over and writes nothing more for it; as a member
    // of the pipeline's group it stays, standing by.
    owner.wait_for("standing by", Duration::from_secs(60));
    let log = owner.log();
    assert!(
        log.contains("taken this table over") || log.contains("lost ownership"),
        "{log}"
    );
    assert!(wait_output(gen, Duration::from_secs(60)).status.success());
    wait_until("the standby to catch up", Duration::from_secs(60), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") == 5000
    });
    for p in [&mut standby, &mut owner] {
        signal(&p.child, "TERM");
        let (status, _) = p.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "{}", p.log());
    }
    assert_eq!(db.assert_orders_equal(), 5000);
    // Every state write, in order: epochs never go back, the position never goes back, and
    // once the standby's epoch appears, the old owner's never does again.
    let audit = db.pg_rows(
        "SELECT epoch::text, owner, position->'keyset'->'values'->0->>'v', \
                position->'keyset'->'values'->1->>'v' FROM public.state_audit ORDER BY id",
    );
    assert!(audit.len() > 10, "{audit:?}");
    let mut epoch = 0i64;
    let mut pos: Option<(String, String)> = None;
    let mut owners: Vec<String> = Vec::new();
    for r in &audit {
        let e: i64 = r[0].as_deref().unwrap().parse().unwrap();
        assert!(e >= epoch, "epoch went back from {epoch} to {e}: {audit:?}");
        epoch = e;
        let who = r[1].clone().unwrap();
        if owners.last() != Some(&who) {
            assert!(
                !owners.contains(&who),
                "{who} wrote again after losing the table: {audit:?}"
            );
            owners.push(who);
        }
        if let (Some(c), Some(k)) = (r[2].clone(), r[3].clone()) {
            let p = (c, k);
            if let Some(prev) = &pos {
                assert!(&p >= prev, "position went back from {prev:?} to {p:?}");
            }
            pos = Some(p);
        }
    }
    assert_eq!(owners.len(), 2, "the owner, then the standby: {audit:?}");
}

#[test]
fn postgres_restart_inside_a_large_transaction_starts_the_lane_again() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE big (id INT NOT NULL PRIMARY KEY, v INT NOT NULL); \
         INSERT INTO big SELECT seq, 0 FROM seq_1_to_400000",
    );
    let cfg = db.config(
        "[retry]\nbackoff_max_ms = 1000\n[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"big\"\n",
    );
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    wait_until("the snapshot", Duration::from_secs(120), || {
        db.pg_rows("SELECT to_regclass('public.big')::text")[0][0].is_some()
            && db.pg_i64("SELECT COUNT(*) FROM public.big") == 400_000
    });
    run.wait_for("reading the binlog", Duration::from_secs(60));
    db.mysql("UPDATE big SET v = 1");
    // The writer holds a transaction open across chunks of the update: restart under it.
    wait_until(
        "a target transaction open across chunks",
        Duration::from_secs(60),
        || {
            db.pg_i64(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'sluice writer%' AND state LIKE 'idle in transaction%'",
            ) > 0
        },
    );
    restart_postgres();
    run.wait_for(
        "starts again from the stored positions",
        Duration::from_secs(60),
    );
    wait_until("the whole update", Duration::from_secs(180), || {
        db.pg_i64("SELECT COUNT(*) FROM public.big WHERE v = 1") == 400_000
    });
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.big"), 400_000);
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
}

/// Runs `writes` (which end with `FLUSH BINARY LOGS`) and purges the binlog up to the current
/// file, until the file the pipeline's stored position is in is gone. Returns that file and
/// the server's oldest file now.
fn purge_after(db: &TestDb, writes: &str) -> (String, String) {
    let stored = db.pg_rows("SELECT position->'binlog'->>'file' FROM sluice.replication_state")[0]
        [0]
    .clone()
    .unwrap();
    db.mysql(writes);
    let current = db.mysql_text("SHOW MASTER STATUS");
    // The server keeps a file a dump thread (the last run's, until it notices the closed
    // connection) still reads: purge until the stored file is gone.
    let mut oldest = String::new();
    wait_until(
        "the stored binlog file purged",
        Duration::from_secs(30),
        || {
            db.mysql(&format!("PURGE BINARY LOGS TO '{current}'"));
            oldest = db.mysql_text("SHOW BINARY LOGS");
            oldest != stored
        },
    );
    (stored, oldest)
}

#[test]
fn a_purged_binlog_stops_the_run_naming_the_file() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.mysql("CREATE TABLE t (id INT NOT NULL PRIMARY KEY)");
    let cfg = db.config("[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"t\"\n");
    let cfg = cfg.to_str().unwrap();
    db.ok(&["--config", cfg, "run", "--once"]);
    let (stored, oldest) = purge_after(
        &db,
        "INSERT INTO t VALUES (1); FLUSH BINARY LOGS; INSERT INTO t VALUES (2); FLUSH BINARY LOGS",
    );
    let out = db.run(&["--config", cfg, "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("no longer has binlog file {stored}"))
            && err.contains(&format!("its oldest is {oldest}"))
            && err.contains("snapshotted again"),
        "{err}"
    );
}

#[test]
fn server_settings_binlog_capture_cannot_use_are_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.mysql("CREATE TABLE t (id INT NOT NULL PRIMARY KEY)");
    let cfg = db.config("[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"t\"\n");
    /// Puts the server's setting back even when the test fails half-way.
    struct Restore<'a>(&'a TestDb);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            self.0.mysql("SET GLOBAL binlog_row_metadata = 'FULL'");
        }
    }
    db.mysql("SET GLOBAL binlog_row_metadata = 'MINIMAL'");
    let restore = Restore(&db);
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    drop(restore);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("binlog_row_metadata is \"MINIMAL\"")
            && err.contains("SET GLOBAL binlog_row_metadata = 'FULL'"),
        "{err}"
    );
}

#[test]
fn a_postgres_restart_under_a_group_of_members_ends_with_every_table_owned_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    let mut text = String::from("[retry]\nbackoff_max_ms = 1000\n");
    for i in 1..=6 {
        db.mysql(&format!(
            "CREATE TABLE g{i} (id BIGINT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL, KEY (at))"
        ));
        db.mysql(&format!(
            "INSERT INTO g{i} (at) SELECT NOW(6) - INTERVAL 1 HOUR FROM seq_1_to_100"
        ));
        text.push_str(&format!("[[tables]]\nname = \"g{i}\"\ncursor = \"at\"\n"));
    }
    let cfg = db.config(&text);
    let cfg = cfg.to_str().unwrap();
    let mut members: Vec<_> = (0..3)
        .map(|_| db.spawn_logged(&["--config", cfg, "run"], &[]))
        .collect();
    let pids: Vec<u32> = members.iter().map(|m| m.child.id()).collect();
    wait_until("two tables each", Duration::from_secs(60), || {
        db.pg_rows("SELECT (to_regclass('sluice.replication_state') IS NOT NULL)::text")[0][0]
            .as_deref()
            == Some("true")
            && balanced(&db, &pids, 2)
    });
    restart_postgres();
    // Rows written after the restart arrive, every table is held by exactly one live member
    // (by its heartbeat and by the table's state row), and the share is even again.
    for i in 1..=6 {
        db.mysql(&format!(
            "INSERT INTO g{i} (at) SELECT NOW(6) FROM seq_1_to_50"
        ));
    }
    wait_until(
        "every table owned once, two each",
        Duration::from_secs(90),
        || {
            let held: Vec<String> = db
                .pg_rows(
                    "SELECT unnest(tables) FROM sluice.members m \
                 WHERE EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = m.session_pid)",
                )
                .into_iter()
                .filter_map(|r| r[0].clone())
                .collect();
            let mut sorted = held.clone();
            sorted.sort();
            sorted.dedup();
            held.len() == 6
                && sorted.len() == 6
                && balanced(&db, &pids, 2)
                && (1..=6).all(|i| db.pg_i64(&format!("SELECT count(*) FROM public.g{i}")) == 150)
        },
    );
    for m in &members {
        signal(&m.child, "TERM");
    }
    for m in &mut members {
        let (status, _) = m.wait_exit(Duration::from_secs(60));
        assert!(status.success(), "{}", m.log());
    }
    let out = db.ok(&["--config", cfg, "verify"]);
    assert_eq!(out.matches(": equal").count(), 6, "{out}");
}

/// Global settings of the source, set for a test and put back when dropped (even when the
/// test fails half-way).
struct Globals<'a> {
    db: &'a TestDb,
    was: Vec<(String, String)>,
}

impl<'a> Globals<'a> {
    fn set(db: &'a TestDb, settings: &[(&str, &str)]) -> Self {
        let was = settings
            .iter()
            .map(|(name, _)| {
                let v = db.mysql_rows(&format!("SELECT CAST(@@GLOBAL.{name} AS CHAR)"));
                (name.to_string(), v[0][0].clone().unwrap())
            })
            .collect();
        let restore = Globals { db, was };
        let list: Vec<String> = settings.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        db.mysql(&format!("SET GLOBAL {}", list.join(", ")));
        restore
    }
}

impl Drop for Globals<'_> {
    fn drop(&mut self) {
        let list: Vec<String> = self.was.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        self.db.mysql(&format!("SET GLOBAL {}", list.join(", ")));
    }
}

/// Runs `sql` on the source server with the `mariadb` client: its rows, tab-separated.
fn mariadb_client(sql: &str) -> Vec<Vec<String>> {
    mariadb_at(&source_port(), sql)
}

/// Runs `sql` with the `mariadb` client on the server at 127.0.0.1:`port`.
fn mariadb_at(port: &str, sql: &str) -> Vec<Vec<String>> {
    let out = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            "-uroot",
            &format!("-P{port}"),
            "-N",
            "-B",
            "-e",
            sql,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{sql}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The server's binlog position: file and offset.
fn binlog_position() -> (String, String) {
    let status = &mariadb_client("SHOW MASTER STATUS")[0];
    (status[0].clone(), status[1].clone())
}

/// The binlog events from `from` on: their types, as `SHOW BINLOG EVENTS` names them, and
/// what it says of them (a statement's text).
fn binlog_events(from: &(String, String)) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for log in mariadb_client("SHOW BINARY LOGS") {
        if log[0] < from.0 {
            continue;
        }
        let pos = if log[0] == from.0 {
            from.1.as_str()
        } else {
            "4"
        };
        let events = mariadb_client(&format!("SHOW BINLOG EVENTS IN '{}' FROM {pos}", log[0]));
        all.extend(events.into_iter().map(|e| (e[2].clone(), e[5].clone())));
    }
    all
}

#[test]
fn binlog_capture_applies_compressed_events() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.assert_binlog_on();
    db.mysql(
        "CREATE TABLE docs (id INT NOT NULL PRIMARY KEY, body TEXT NOT NULL, n INT NOT NULL); \
         INSERT INTO docs SELECT seq, CONCAT('before ', seq), seq FROM seq_1_to_5",
    );
    let cfg = db.config("[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"docs\"\n");
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    wait_equal(&db, "docs", "id, body, n", &|| run.log());
    run.wait_for("reading the binlog", Duration::from_secs(60));
    let from = binlog_position();
    // The smallest minimum (10 bytes): the statements below are compressed too.
    let compression = Globals::set(
        &db,
        &[
            ("log_bin_compress", "ON"),
            ("log_bin_compress_min_len", "10"),
        ],
    );
    // Rows over 256 bytes (compressed even at the default minimum): written, updated, deleted.
    db.mysql(
        "INSERT INTO docs SELECT seq, REPEAT(CONCAT('row ', seq, ' '), 40), seq FROM seq_6_to_105; \
         UPDATE docs SET body = REPEAT('updated ', 50), n = n + 1000 WHERE id <= 30; \
         DELETE FROM docs WHERE id > 95",
    );
    wait_equal(&db, "docs", "id, body, n", &|| run.log());
    db.mysql(
        "ALTER TABLE docs ADD COLUMN note VARCHAR(100) NOT NULL DEFAULT 'added' /* compressed too */; \
         UPDATE docs SET note = REPEAT('n', 100) WHERE id <= 3",
    );
    wait_until(
        "the new column on the target",
        Duration::from_secs(60),
        || {
            db.pg_i64(
                "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'docs' AND column_name = 'note'",
            ) == 1
        },
    );
    wait_equal(&db, "docs", "id, body, n, note", &|| run.log());
    db.mysql(
        "TRUNCATE TABLE docs /* compressed too */; \
         INSERT INTO docs VALUES (1, REPEAT('after the truncate ', 20), 1, 'last')",
    );
    wait_equal(&db, "docs", "id, body, n, note", &|| run.log());
    drop(compression);
    // Every kind was compressed indeed.
    let events = binlog_events(&from);
    for (kind, text) in [
        ("Write_rows_compressed_v1", ""),
        ("Update_rows_compressed_v1", ""),
        ("Delete_rows_compressed_v1", ""),
        ("Query_compressed", "ALTER TABLE docs ADD COLUMN"),
        ("Query_compressed", "TRUNCATE TABLE docs"),
    ] {
        assert!(
            events
                .iter()
                .any(|(t, info)| t == kind && info.contains(text)),
            "no {kind} {text:?} in {events:?}"
        );
    }
    assert!(
        !run.log().contains("was skipped"),
        "nothing was skipped: {}",
        run.log()
    );
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
}

#[test]
fn binlog_capture_applies_group_committed_transactions() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.assert_binlog_on();
    db.mysql(
        "CREATE TABLE hits (id INT NOT NULL PRIMARY KEY, writer INT NOT NULL, n INT NOT NULL); \
         CREATE TABLE tally (writer INT NOT NULL PRIMARY KEY, n INT NOT NULL); \
         INSERT INTO tally SELECT seq, 0 FROM seq_0_to_15",
    );
    let cfg = db.config(
        "[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"hits\"\n[[tables]]\nname = \"tally\"\n",
    );
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    wait_equal(&db, "tally", "writer, n", &|| run.log());
    run.wait_for("reading the binlog", Duration::from_secs(60));
    let from = binlog_position();
    // MariaDB's group commit made to wait for company.
    let group_commit = Globals::set(
        &db,
        &[
            ("binlog_commit_wait_count", "8"),
            ("binlog_commit_wait_usec", "20000"),
        ],
    );
    // 16 writers, each committing transactions of two tables: MariaDB commits them in groups,
    // their GTID events carrying a commit id.
    const EACH: usize = 150;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..16usize)
        .map(|w| {
            mysql_worker(db.source_url.clone(), stop.clone(), move |n| {
                (n < EACH).then(|| {
                    format!(
                        "BEGIN; INSERT INTO hits VALUES ({}, {w}, {n}); \
                         UPDATE tally SET n = n + 1 WHERE writer = {w}; COMMIT",
                        w * EACH + n
                    )
                })
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.join().unwrap(), EACH);
    }
    drop(group_commit);
    wait_equal(&db, "hits", "id, writer, n", &|| run.log());
    wait_equal(&db, "tally", "writer, n", &|| run.log());
    assert!(
        binlog_events(&from)
            .iter()
            .any(|(t, info)| t == "Gtid" && info.contains("cid=")),
        "no group commit in the binlog"
    );
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
}

/// A MariaDB server of a test's own (a replica, a failover target): a fresh data directory
/// (`mariadb-install-db`) and a free port, with the binlog sluice needs; shut down and removed
/// when dropped.
struct Mariadbd {
    dir: std::path::PathBuf,
    port: u16,
    child: std::process::Child,
}

impl Mariadbd {
    fn start(server_id: u32) -> Mariadbd {
        let dir = std::env::temp_dir().join(format!(
            "sluice-mariadbd-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        let data = dir.join("data");
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let user: &[&str] = if root { &["--user=root"] } else { &[] };
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .args(user)
            .output()
            .unwrap();
        assert!(out.status.success(), "mariadb-install-db: {out:?}");
        let port = common::free_port();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .args(user)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(format!("--server-id={server_id}"))
            .args([
                "--log-bin=rbin",
                "--log-slave-updates",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = Mariadbd { dir, port, child };
        wait_until(
            "the second MariaDB to answer",
            Duration::from_secs(60),
            || {
                Command::new("mariadb")
                    .args([
                        "-h127.0.0.1",
                        "-uroot",
                        &format!("-P{port}"),
                        "-e",
                        "SELECT 1",
                    ])
                    .output()
                    .is_ok_and(|o| o.status.success())
            },
        );
        server
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Runs `sql` on it with the `mariadb` client: its rows, tab-separated.
    fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        mariadb_at(&self.port.to_string(), sql)
    }
}

impl Drop for Mariadbd {
    fn drop(&mut self) {
        let _ = Command::new("mariadb-admin")
            .args([
                "-h127.0.0.1",
                "-uroot",
                &format!("-P{}", self.port),
                "shutdown",
            ])
            .output();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The port of the main source server.
fn source_port() -> String {
    common::mysql_server()
        .rsplit(':')
        .next()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or("3306")
        .to_string()
}

/// Failover: sluice follows the primary; is stopped; the primary takes more writes, which its
/// GTID replica (log_slave_updates) gets; the replica is promoted and takes writes of its own;
/// sluice pointed at it resumes there by GTID and ends equal without a snapshot. Then a server
/// whose history is another (the same server_id and file names, its binlog reset) is refused
/// with exit 1, naming both positions, and nothing of it lands.
#[test]
fn binlog_capture_follows_a_failover_to_a_promoted_replica() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The replica starts from the primary's binlog as it is now (a GTID that surely exists).
    mariadb_client(
        "CREATE DATABASE IF NOT EXISTS sluice_gtid_anchor; DROP DATABASE sluice_gtid_anchor",
    );
    let anchor = mariadb_client("SELECT @@gtid_binlog_pos")[0][0].clone();
    let replica = Mariadbd::start(2 + std::process::id() % 1000);
    replica.sql(&format!(
        "SET GLOBAL gtid_slave_pos = '{anchor}'; \
         CHANGE MASTER TO master_host = '127.0.0.1', master_port = {}, master_user = 'root', \
           master_use_gtid = slave_pos; \
         START SLAVE",
        source_port()
    ));
    let mut db = TestDb::new();
    db.assert_binlog_on();
    db.mysql(
        "CREATE TABLE items (id INT NOT NULL PRIMARY KEY, v VARCHAR(40), n INT NOT NULL); \
         INSERT INTO items SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_200",
    );
    let cfg = db.config("[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"items\"\n");
    let cfg = cfg.to_str().unwrap();
    let cols = "id, v, n";

    let replica_url = format!("{}/{}", replica.url(), db.name);
    let caught_up = || {
        let primary_at = mariadb_client("SELECT @@gtid_binlog_pos")[0][0].clone();
        wait_until("the replica to catch up", Duration::from_secs(60), || {
            replica.sql("SELECT @@gtid_slave_pos")[0][0] == primary_at
        });
    };

    // 0. A copy from the primary; then, the replica caught up, a run pointed at it finds
    // nothing new (the server, asked by GTID, skips everything it has and waits at its end):
    // `--once` ends there.
    db.ok(&["--config", cfg, "run", "--once"]);
    caught_up();
    let primary_url = std::mem::replace(&mut db.source_url, replica_url.clone());
    let out = db.run(&["--config", cfg, "run", "--once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replicated 0 rows"),
        "{out:?}"
    );
    assert!(stderr.contains("resuming by GTID"), "{stderr}");
    db.source_url = primary_url;

    // 1. sluice follows the primary.
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    wait_equal(&db, "items", cols, &|| run.log());
    db.mysql(
        "INSERT INTO items SELECT seq, 'on the primary', seq FROM seq_201_to_250; \
         UPDATE items SET n = n + 1000 WHERE id <= 20; DELETE FROM items WHERE id BETWEEN 21 AND 30",
    );
    wait_equal(&db, "items", cols, &|| run.log());
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());

    // 2. Stopped: the primary takes more writes, and the replica gets them.
    db.mysql(
        "INSERT INTO items SELECT seq, 'while sluice was down', seq FROM seq_251_to_300; \
         UPDATE items SET v = 'changed while down' WHERE id BETWEEN 40 AND 50",
    );
    caught_up();

    // 3. The replica is promoted and takes writes of its own.
    let items = format!("`{}`.items", db.name);
    replica.sql(&format!(
        "STOP SLAVE; RESET SLAVE ALL; \
         INSERT INTO {items} SELECT seq, 'on the promoted replica', seq FROM `{}`.seq_301_to_350; \
         UPDATE {items} SET n = -1 WHERE id BETWEEN 60 AND 70; \
         DELETE FROM {items} WHERE id BETWEEN 80 AND 85",
        db.name
    ));

    // 4. sluice pointed at it resumes there, by GTID, without a snapshot.
    let primary_url = std::mem::replace(&mut db.source_url, replica_url);
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    wait_equal(&db, "items", cols, &|| run.log());
    replica.sql(&format!(
        "INSERT INTO {items} VALUES (1000, 'streamed from the replica', 0)"
    ));
    wait_equal(&db, "items", cols, &|| run.log());
    let log = run.log();
    assert!(log.contains("resuming by GTID"), "{log}");
    assert!(!log.contains("snapshot of the table started"), "{log}");
    let pos = db.pg_rows(
        "SELECT position->'binlog'->>'server_id', position->'binlog'->>'gtid', position->'binlog'->>'file' \
         FROM sluice.replication_state",
    );
    let replica_id = replica.sql("SELECT @@server_id")[0][0].clone();
    assert_eq!(pos[0][0].as_deref(), Some(replica_id.as_str()), "{pos:?}");
    assert!(
        pos[0][1]
            .as_deref()
            .unwrap_or_default()
            .contains(&format!("-{replica_id}-")),
        "{pos:?}"
    );
    assert!(
        pos[0][2]
            .as_deref()
            .unwrap_or_default()
            .starts_with("rbin."),
        "{pos:?}"
    );
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());

    // 5. The same server_id and file names with another history (its binlog reset): refused,
    // exit 1, and nothing of it lands.
    replica.sql(&format!(
        "RESET MASTER; INSERT INTO {items} VALUES (2000, 'another history', 0)"
    ));
    let out = db.run(&["--config", cfg, "run", "--once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not hold sluice's position"),
        "{stderr}"
    );
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM public.items WHERE id = 2000"),
        0
    );
    db.source_url = primary_url;
}

/// A MEMORY table loses its rows when the server restarts, and MariaDB writes that, when the
/// table is first used after, as a statement (`TRUNCATE TABLE … /* generated by server for
/// memory table after a restart */`, no row images): binlog capture applies it, so the target
/// loses them too; the other tables go on across the restart.
#[test]
fn a_memory_table_emptied_by_a_restart_is_emptied_on_the_target() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.assert_binlog_on();
    db.mysql(
        "CREATE TABLE mem (id INT NOT NULL PRIMARY KEY, v VARCHAR(10)) ENGINE=MEMORY; \
         CREATE TABLE fine (id INT NOT NULL PRIMARY KEY, v VARCHAR(10)); \
         INSERT INTO mem VALUES (1, 'a'), (2, 'b'); INSERT INTO fine VALUES (1, 'a')",
    );
    let cfg = db.config(
        "[source]\ncapture = \"binlog\"\n[retry]\nbackoff_max_ms = 1000\n\
         [[tables]]\nname = \"mem\"\n[[tables]]\nname = \"fine\"\n",
    );
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    wait_equal(&db, "mem", "id, v", &|| run.log());
    wait_equal(&db, "fine", "id, v", &|| run.log());
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.mem"), 2);
    restart_mariadb();
    // The first use after the restart writes the statement.
    assert_eq!(db.mysql_i64("SELECT COUNT(*) FROM mem"), 0);
    db.mysql("INSERT INTO fine VALUES (2, 'after'); INSERT INTO mem VALUES (3, 'new')");
    wait_equal(&db, "fine", "id, v", &|| run.log());
    wait_equal(&db, "mem", "id, v", &|| run.log());
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
}

/// `[source] on_binlog_gone = "snapshot"`: a table whose binlog file was purged while sluice
/// was stopped has its target emptied and is copied again (a stale row on the target goes),
/// said at warn; the run ends equal instead of stopping.
#[test]
fn a_purged_binlog_is_copied_again_when_asked_to() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    db.mysql("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT NOT NULL); INSERT INTO t VALUES (1, 1), (2, 2)");
    let cfg = db.config(
        "[source]\ncapture = \"binlog\"\non_binlog_gone = \"snapshot\"\n[[tables]]\nname = \"t\"\n",
    );
    let cfg = cfg.to_str().unwrap();
    db.ok(&["--config", cfg, "run", "--once"]);
    purge_after(
        &db,
        "INSERT INTO t VALUES (3, 3); FLUSH BINARY LOGS; DELETE FROM t WHERE id = 1; \
         UPDATE t SET v = 20 WHERE id = 2; FLUSH BINARY LOGS",
    );
    db.pg("INSERT INTO public.t VALUES (99, 99)");
    db.mysql("INSERT INTO t VALUES (4, 4)");
    let out = db.run(&["--config", cfg, "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("no longer has the binlog file of the table's position"),
        "{err}"
    );
    let rows = db.pg_rows("SELECT id::text, v::text FROM public.t ORDER BY id");
    let want: Vec<Vec<Option<String>>> = [(2, 20), (3, 3), (4, 4)]
        .iter()
        .map(|(a, b)| vec![Some(a.to_string()), Some(b.to_string())])
        .collect();
    assert_eq!(rows, want, "{err}");
}
