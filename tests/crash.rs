//! Crash safety and late commits, against real MariaDB and PostgreSQL.

mod common;

use std::process::Stdio;
use std::time::Duration;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{mysql_worker, signal, wait_output, wait_until, TestDb};
use sea_orm::sqlx::{self, Connection, MySqlConnection};

/// The target holds exactly the rows its watermark covers: the count recorded with the
/// watermark equals the rows present, and equals the source rows at or below the watermark.
fn assert_consistent_prefix(db: &TestDb) {
    let written = db.pg_i64("SELECT COUNT(*) FROM public.orders");
    let recorded =
        db.pg_i64("SELECT COALESCE(SUM(rows_replicated), 0)::bigint FROM sluice.replication_state");
    assert_eq!(
        written, recorded,
        "rows present vs rows the watermark covers"
    );
    let wm = db.pg_rows(
        "SELECT position->'keyset'->'values'->0->>'v', position->'keyset'->'values'->1->>'v' FROM sluice.replication_state WHERE position IS NOT NULL",
    );
    if let Some(w) = wm.first() {
        let (created, id) = (
            w[0].clone().unwrap().replace('T', " "),
            w[1].clone().unwrap(),
        );
        let covered = db.mysql_i64(&format!(
            "SELECT COUNT(*) FROM orders WHERE created < '{created}' OR (created = '{created}' AND order_id <= '{id}')"
        ));
        assert_eq!(
            covered, written,
            "source rows at or below the watermark vs target rows"
        );
    }
}

fn crash_at(point: &str) {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "20000"]);
    let cfg = db.config("[pipeline]\nbatch_rows = 1000\n");
    let cfg = cfg.to_str().unwrap();
    let out = db
        .sluice()
        .env("SLUICE_FAILPOINT", format!("{point}:3"))
        .args(["--config", cfg, "run", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint must kill the process");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {point} hit")));
    assert_consistent_prefix(&db);
    db.ok(&["--config", cfg, "run", "--once"]);
    assert_eq!(db.assert_orders_equal(), 20_000);
}

#[test]
fn crash_after_read_loses_nothing() {
    crash_at("after_read");
}

#[test]
fn crash_before_commit_loses_nothing() {
    crash_at("before_commit");
}

#[test]
fn crash_after_commit_duplicates_nothing() {
    crash_at("after_commit");
}

#[test]
fn kill_9_at_random_moments_under_load_loses_and_duplicates_nothing() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let gen = db.spawn(&["generate", "--rate", "3000", "--total", "30000"]);
    let cfg = db.config("[pipeline]\nbatch_rows = 500\n");
    let cfg = cfg.to_str().unwrap();
    for round in 0..8u64 {
        let mut run = db
            .sluice()
            .args(["--config", cfg, "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A pseudo-random moment: different in every round and every test run.
        let ms = 150 + (uuid::Uuid::new_v4().as_u128() % 900) as u64 + round * 37;
        std::thread::sleep(Duration::from_millis(ms));
        run.kill().unwrap(); // SIGKILL
        run.wait().unwrap();
        assert_consistent_prefix(&db);
    }
    let out = wait_output(gen, Duration::from_secs(60));
    assert!(out.status.success());
    db.ok(&["run", "--once"]);
    assert_eq!(db.assert_orders_equal(), 30_000);
}

/// Opens a transaction on the source that inserts the order `late-row` (created = NOW(6))
/// and stays open; COMMIT it on the returned connection.
fn open_late_row(db: &TestDb) -> (tokio::runtime::Runtime, MySqlConnection) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut late = rt
        .block_on(MySqlConnection::connect(&db.source_url))
        .unwrap();
    rt.block_on(async {
        sqlx::raw_sql("BEGIN").execute(&mut late).await.unwrap();
        sqlx::query("INSERT INTO orders (order_id, created) VALUES ('late-row', NOW(6))")
            .execute(&mut late)
            .await
            .unwrap();
    });
    (rt, late)
}

#[test]
fn a_row_committed_late_by_a_20_second_transaction_still_arrives() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let run = db.spawn(&["run"]);
    // A transaction takes its row's cursor value now, and stays open while newer rows are
    // committed (and would be replicated by a naive poller).
    let (rt, mut late) = open_late_row(&db);
    db.ok(&["generate", "--rate", "200", "--total", "400"]);
    // The transaction stays open 20 s while newer rows are committed on the source. All
    // that time nothing newer than its row is written, so the watermark cannot pass it.
    // (Asserting an absence needs a window of time: checked twice a second.)
    let open_until = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < open_until {
        assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.orders"), 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    rt.block_on(async { sqlx::raw_sql("COMMIT").execute(&mut late).await.unwrap() });
    wait_until(
        "the late row and all later rows to arrive",
        Duration::from_secs(30),
        || db.pg_i64("SELECT COUNT(*) FROM public.orders") == 401,
    );
    signal(&run, "TERM");
    let out = wait_output(run, Duration::from_secs(30));
    assert!(out.status.success());
    assert_eq!(db.assert_orders_equal(), 401);
}

/// A backlog older than every open transaction is read without locks (a covering-index
/// scan), but never past the oldest open transaction: its row still arrives, and nothing
/// newer is written while it is open.
#[test]
fn a_backlog_is_read_without_locks_up_to_the_oldest_open_transaction() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.mysql(
        "INSERT INTO orders (order_id, created) \
         SELECT UUID(), TIMESTAMP('2026-01-01') + INTERVAL seq SECOND FROM seq_1_to_30000",
    );
    let (rt, mut late) = open_late_row(&db);
    db.ok(&["generate", "--rate", "1000000", "--total", "400"]);
    let cfg = db.config("[pipeline]\nbatch_rows = 1000\n");
    let run = db
        .sluice()
        .env("RUST_LOG", "info,sluice::source=debug")
        .args(["--config", cfg.to_str().unwrap(), "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the backlog to arrive", Duration::from_secs(60), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") == 30_000
    });
    // While the transaction is open, nothing at or past its row is written.
    let open_until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < open_until {
        assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.orders"), 30_000);
        std::thread::sleep(Duration::from_millis(250));
    }
    rt.block_on(async { sqlx::raw_sql("COMMIT").execute(&mut late).await.unwrap() });
    wait_until(
        "the late row and the rows after it",
        Duration::from_secs(30),
        || db.pg_i64("SELECT COUNT(*) FROM public.orders") == 30_401,
    );
    signal(&run, "TERM");
    let out = wait_output(run, Duration::from_secs(30));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("without locks"), "{log}");
    assert_eq!(db.assert_orders_equal(), 30_401);
}

/// A source user without the PROCESS privilege cannot see open transactions: every read
/// is a locking read, said once in the log, and replication is exact all the same.
#[test]
fn without_the_process_privilege_every_read_locks_and_nothing_is_lost() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.mysql(
        "INSERT INTO orders (order_id, created) \
         SELECT UUID(), TIMESTAMP('2026-01-01') + INTERVAL seq SECOND FROM seq_1_to_3000",
    );
    struct User<'a>(&'a TestDb, String);
    impl Drop for User<'_> {
        fn drop(&mut self) {
            for host in ["127.0.0.1", "localhost"] {
                self.0
                    .mysql(&format!("DROP USER IF EXISTS '{}'@'{host}'", self.1));
            }
        }
    }
    let user = User(&db, format!("np_{}", &db.name[9..]));
    for host in ["127.0.0.1", "localhost"] {
        db.mysql(&format!("CREATE USER '{}'@'{host}'", user.1));
        db.mysql(&format!(
            "GRANT SELECT ON `{}`.* TO '{}'@'{host}'",
            db.name, user.1
        ));
    }
    let out = db
        .sluice()
        .env(
            "SLUICE_SOURCE_URL",
            format!(
                "mysql://{}@{}/{}",
                user.1,
                common::mysql_server().rsplit('@').next().unwrap(),
                db.name
            ),
        )
        .args(["run", "--once"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("no PROCESS privilege"), "{log}");
    assert_eq!(db.assert_orders_equal(), 3000);
}

/// A statement takes its row's stamp (`NOW(6)`) as it starts, and may reach the table's
/// index much later: waiting for a lock (a metadata lock behind a schema change, a row
/// lock, a user lock), or busy first, as an `INSERT … SELECT` is. Newer rows committed
/// meanwhile must not carry the position past its row: nothing newer is written until it
/// lands, and then it arrives. A long read (a report) holds nothing back.
#[test]
fn a_row_whose_statement_waited_before_reaching_the_table_still_arrives() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let run = db.spawn_logged(
        &["--log-format", "text", "run"],
        &[("RUST_LOG", "info,sluice::source::poll=debug")],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut holder = rt
        .block_on(MySqlConnection::connect(&db.source_url))
        .unwrap();
    let lock = format!("late_{}", db.name);
    rt.block_on(async {
        let got: i64 = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
            .bind(&lock)
            .fetch_one(&mut holder)
            .await
            .unwrap();
        assert_eq!(got, 1);
    });
    // The statement stamps its row now, then waits for the user lock before inserting it.
    let never = Arc::new(AtomicBool::new(false));
    let stmt = mysql_worker(db.source_url.clone(), never.clone(), {
        let lock = lock.clone();
        move |n| {
            (n == 0).then(|| {
                format!(
                    "INSERT INTO orders (order_id, created) \
                     SELECT 'late-row', NOW(6) FROM DUAL WHERE GET_LOCK('{lock}', 60) = 1"
                )
            })
        }
    });
    wait_until(
        "the statement to wait for the lock",
        Duration::from_secs(10),
        || {
            db.mysql_i64(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO orders%GET_LOCK%'",
        ) == 1
        },
    );
    // A report reads for a long time meanwhile: it writes nothing, so it holds nothing back.
    let _report = mysql_worker(db.source_url.clone(), never, |n| {
        (n == 0).then(|| "SELECT SLEEP(30) FROM DUAL".to_string())
    });
    wait_until("the report to run", Duration::from_secs(10), || {
        db.mysql_i64(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(30)%'",
        ) == 1
    });
    db.ok(&["generate", "--rate", "200", "--total", "400"]);
    let open_until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < open_until {
        let written = db.pg_i64("SELECT COUNT(*) FROM public.orders");
        if written != 0 {
            // What the server showed then, for the horizon: the statements and their ages.
            let processes = db.mysql_rows(
                "SELECT ID, COMMAND, TIME_MS, STATE, LEFT(INFO, 100), NOW(6), UTC_TIMESTAMP(6) \
                 FROM information_schema.PROCESSLIST ORDER BY TIME_MS DESC",
            );
            let newest =
                db.pg_rows("SELECT max(created)::text, min(created)::text FROM public.orders");
            panic!(
                "{written} rows newer than a statement still running were written \
                 (target's newest/oldest created: {newest:?}); processes: {processes:#?}\nlog:\n{}",
                run.log()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    rt.block_on(async {
        sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(&lock)
            .execute(&mut holder)
            .await
            .unwrap();
    });
    stmt.join().unwrap();
    wait_until(
        "the late row and all later rows to arrive while the report still runs",
        Duration::from_secs(15),
        || db.pg_i64("SELECT COUNT(*) FROM public.orders") == 401,
    );
    run.stop();
    assert_eq!(db.assert_orders_equal(), 401);
}

/// The connection lost right after a page was read (the server going down as sluice checks
/// the table's definition): the page is not handed out, and it is read again after the
/// reconnect rather than skipped.
#[test]
fn a_page_read_as_the_connection_drops_is_read_again() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "3000"]);
    let cfg = db.config("[pipeline]\nbatch_rows = 500\n[retry]\nbackoff_max_ms = 200\n");
    let out = db
        .sluice()
        .env("SLUICE_FAILPOINT", "lost_after_read:2")
        .args(["--config", cfg.to_str().unwrap(), "run", "--once"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("failpoint lost_after_read"), "{log}");
    assert_eq!(db.assert_orders_equal(), 3000);
}

/// `run --once` ends at the end of the source as of start, not where the read horizon
/// stops: with a statement still running on the server that may write (here an insert that
/// stamps its row, then sleeps before putting it in the table), newer rows are held back,
/// and `--once` waits for them rather than ending with them unread.
#[test]
fn run_once_reads_to_its_end_past_a_statement_still_running() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let never = Arc::new(AtomicBool::new(false));
    let slow = mysql_worker(db.source_url.clone(), never, |n| {
        (n == 0).then(|| {
            "INSERT INTO orders (order_id, created) \
             SELECT 'slow-row', NOW(6) FROM DUAL WHERE SLEEP(3) = 0"
                .to_string()
        })
    });
    wait_until("the slow insert to run", Duration::from_secs(10), || {
        db.mysql_i64(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'INSERT INTO orders%SLEEP(3)%'",
        ) == 1
    });
    db.ok(&["generate", "--rate", "1000000", "--total", "500"]);
    let out = db.run(&["run", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("waiting for them"), "{log}");
    slow.join().unwrap();
    assert_eq!(db.assert_orders_equal(), 501, "{log}");
}
