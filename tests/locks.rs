//! sluice's DDL on the target never makes the target's readers wait: a report holds the
//! table (an open transaction that read it) while sluice needs an exclusive lock; a new
//! reader's query still answers within the lock timeout plus a little, the wait is named in
//! the log and in `status`, and once the report ends the table ends equal.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_output, wait_until, TestDb};
use sea_orm::sqlx::{self, AssertSqlSafe, Connection, PgConnection};

const LOCK_TIMEOUT_MS: u64 = 300;

/// A report: a transaction that read `table` and stays open until dropped.
struct Report {
    release: Option<mpsc::Sender<()>>,
    done: Option<std::thread::JoinHandle<()>>,
}

impl Report {
    fn hold(db: &TestDb, table: &str) -> Report {
        let (url, sql) = (
            db.target_url.clone(),
            format!("SELECT count(*) FROM public.\"{table}\""),
        );
        let (release, wait) = mpsc::channel::<()>();
        let (held, is_held) = mpsc::channel::<()>();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = PgConnection::connect(&format!("{url}?application_name=the%20report"))
                    .await
                    .unwrap();
                sqlx::raw_sql("BEGIN").execute(&mut c).await.unwrap();
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .unwrap();
                held.send(()).unwrap();
                let _ = wait.recv();
                sqlx::raw_sql("COMMIT").execute(&mut c).await.unwrap();
            });
        });
        is_held
            .recv_timeout(Duration::from_secs(30))
            .expect("the report holds the table");
        Report {
            release: Some(release),
            done: Some(done),
        }
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(d) = self.done.take() {
            let _ = d.join();
        }
    }
}

/// Readers querying `table` one after another until stopped; the slowest answer.
struct Readers {
    stop: Arc<AtomicBool>,
    slowest: Arc<Mutex<(Duration, usize)>>,
    done: Option<std::thread::JoinHandle<()>>,
}

impl Readers {
    fn start(db: &TestDb, table: &str) -> Readers {
        let (url, sql) = (
            db.target_url.clone(),
            format!("SELECT count(*) FROM public.\"{table}\""),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let slowest = Arc::new(Mutex::new((Duration::ZERO, 0)));
        let (s, w) = (stop.clone(), slowest.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut c = PgConnection::connect(&url).await.unwrap();
                while !s.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    sqlx::raw_sql(AssertSqlSafe(sql.as_str()))
                        .execute(&mut c)
                        .await
                        .unwrap();
                    {
                        let mut m = w.lock().unwrap();
                        m.0 = m.0.max(t.elapsed());
                        m.1 += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        });
        Readers {
            stop,
            slowest,
            done: Some(done),
        }
    }

    /// Stops them; the slowest answer and how many there were.
    fn finish(mut self) -> (Duration, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.done.take().unwrap().join().unwrap();
        *self.slowest.lock().unwrap()
    }
}

fn assert_readers_never_waited(readers: Readers) {
    let (slowest, n) = readers.finish();
    assert!(n > 5, "the readers ran ({n} queries)");
    assert!(
        slowest < Duration::from_millis(LOCK_TIMEOUT_MS + 700),
        "a reader waited {slowest:?} with a lock timeout of {LOCK_TIMEOUT_MS} ms"
    );
}

fn settings(extra: &str) -> String {
    format!(
        "[target]\nlock_timeout_ms = {LOCK_TIMEOUT_MS}\nddl_wait_ms = 1500\n\
         [pipeline]\nbatch_rows = 1000\ndefer_key_min_rows = 0\n{extra}"
    )
}

fn has_primary_key(db: &TestDb, table: &str) -> bool {
    db.pg_i64(&format!(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.\"{table}\"'::regclass AND contype = 'p'"
    )) == 1
}

#[test]
fn an_initial_load_into_a_table_being_read_keeps_its_key_instead_of_queueing_readers() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "5000"]);
    let cfg = db.config(&settings(""));
    let report = Report::hold(&db, "orders");
    let readers = Readers::start(&db, "orders");
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("the initial load keeps its primary key") && log.contains("the report"),
        "the fallback is logged, naming the report's session: {log}"
    );
    assert_readers_never_waited(readers);
    drop(report);
    assert_eq!(db.assert_orders_equal(), 5000);
    assert!(has_primary_key(&db, "orders"));
}

#[test]
fn the_key_built_after_an_initial_load_waits_for_a_report_without_queueing_readers() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "5000"]);
    let cfg = db.config(&settings(""));
    let cfg = cfg.to_str().unwrap();
    // A load whose key build crashed before committing: the next run builds it.
    let out = db
        .sluice()
        .env("SLUICE_FAILPOINT", "before_key_commit")
        .args(["--config", cfg, "run", "--once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(out, Duration::from_secs(120));
    assert!(!out.status.success(), "the failpoint aborted the run");
    assert!(!has_primary_key(&db, "orders"), "the key is still deferred");

    let report = Report::hold(&db, "orders");
    let readers = Readers::start(&db, "orders");
    let mut run = db.spawn_logged(&["--config", cfg, "run", "--once"], &[]);
    run.wait_for(
        "waiting for a lock other sessions hold",
        Duration::from_secs(60),
    );
    wait_until(
        "status to say what the key build waits for",
        Duration::from_secs(30),
        || {
            let s = db.ok(&["--config", cfg, "status"]);
            s.contains("waiting since") && s.contains("the report")
        },
    );
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "still running, not failed"
    );
    assert_readers_never_waited(readers);
    drop(report);
    let (status, _) = run.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", run.log());
    assert!(run.log().contains("primary key built"), "{}", run.log());
    assert!(has_primary_key(&db, "orders"));
    assert_eq!(db.assert_orders_equal(), 5000);
    let text = db.ok(&["--config", cfg, "status"]);
    assert!(
        text.contains("last error none"),
        "the wait is no longer reported: {text}"
    );
    // Counted.
    assert!(run.log().contains("the lock was granted"), "{}", run.log());
}

#[test]
fn a_truncate_from_the_binlog_waits_for_a_report_without_queueing_readers() {
    let db = TestDb::new();
    db.assert_binlog_on();
    db.mysql("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_100");
    let cfg = db.config(&settings(
        "[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"t\"\n",
    ));
    let cfg = cfg.to_str().unwrap();
    let port = common::free_port();
    let mut run = db.spawn_logged(
        &["--config", cfg, "run"],
        &[("SLUICE_HTTP_ADDR", &format!("127.0.0.1:{port}"))],
    );
    wait_until("the snapshot", Duration::from_secs(60), || {
        db.pg_rows("SELECT to_regclass('public.t')::text")[0][0].is_some()
            && db.pg_i64("SELECT count(*) FROM public.t") == 100
    });
    let report = Report::hold(&db, "t");
    let readers = Readers::start(&db, "t");
    db.mysql("TRUNCATE TABLE t; INSERT INTO t VALUES (1, 1)");
    run.wait_for(
        "waiting for a lock other sessions hold",
        Duration::from_secs(60),
    );
    wait_until(
        "status to say what the TRUNCATE waits for",
        Duration::from_secs(30),
        || {
            let s = db.ok(&["--config", cfg, "status"]);
            s.contains("waiting since") && s.contains("TRUNCATE")
        },
    );
    let metrics = common::get(port, "/metrics").unwrap().1;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("sluice_ddl_lock_waits_total{table=\"t\"}") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    assert_readers_never_waited(readers);
    drop(report);
    wait_until(
        "the target to follow the TRUNCATE",
        Duration::from_secs(60),
        || {
            db.pg_rows("SELECT count(*)::text, coalesce(max(id), 0)::text FROM public.t")[0]
                == vec![Some("1".to_string()), Some("1".to_string())]
        },
    );
    common::signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
}
