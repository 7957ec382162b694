//! Shared test harness: a fresh MariaDB database and a fresh PostgreSQL database per test,
//! the `sluice` binary, and waits on conditions with timeouts (never bare sleeps).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, AssertSqlSafe, Connection, MySqlConnection, PgConnection, Row};

pub fn mysql_server() -> String {
    std::env::var("SLUICE_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub fn pg_server() -> String {
    std::env::var("SLUICE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Rows of a query, each column as text (or NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// A pair of fresh databases with the same name on both servers, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub source_url: String,
    pub target_url: String,
    rt: tokio::runtime::Runtime,
    dir: PathBuf,
}

impl TestDb {
    pub fn new() -> TestDb {
        let name = format!(
            "sluice_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut my = MySqlConnection::connect(&format!("{}/mysql", mysql_server()))
                .await
                .expect("MariaDB reachable (run scripts/services.sh)");
            sqlx::raw_sql(AssertSqlSafe(format!(
                "CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
            )))
            .execute(&mut my)
            .await
            .unwrap();
            let mut pg = PgConnection::connect(&format!("{}/postgres", pg_server()))
                .await
                .expect("PostgreSQL reachable (run scripts/services.sh)");
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut pg)
                .await
                .unwrap();
        });
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        TestDb {
            source_url: format!("{}/{name}", mysql_server()),
            target_url: format!("{}/{name}", pg_server()),
            name,
            rt,
            dir,
        }
    }

    /// Writes a config file for this test and returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self
            .dir
            .join(format!("{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A `sluice` command pointed at this test's databases.
    pub fn sluice(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.env("SLUICE_SOURCE_URL", &self.source_url)
            .env("SLUICE_TARGET_URL", &self.target_url)
            .env("RUST_LOG", "info")
            // Tests run in parallel: each sluice serves HTTP on a free port of its own.
            .env("SLUICE_HTTP_ADDR", "127.0.0.1:0")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `sluice <args>` in the background, its output captured.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.sluice()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `sluice <args>` to completion (with a timeout) and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let child = self
            .sluice()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(child, Duration::from_secs(180))
    }

    /// Runs and asserts exit 0, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sluice {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn mysql(&self, sql: &str) {
        let url = self.source_url.clone();
        let sql = sql.to_string();
        self.rt.block_on(async move {
            let mut c = MySqlConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap();
        });
    }

    /// Runs `sql` on the source, returning its error rather than failing.
    pub fn mysql_try(&self, sql: &str) -> Result<(), String> {
        let url = self.source_url.clone();
        let sql = sql.to_string();
        self.rt.block_on(async move {
            let mut c = MySqlConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    pub fn pg(&self, sql: &str) {
        let url = self.target_url.clone();
        let sql = sql.to_string();
        self.rt.block_on(async move {
            let mut c = PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap();
        });
    }

    /// First column of the first row, as i64.
    pub fn mysql_i64(&self, sql: &str) -> i64 {
        let url = self.source_url.clone();
        let sql = sql.to_string();
        self.rt.block_on(async move {
            let mut c = MySqlConnection::connect(&url).await.unwrap();
            let row = sqlx::query(AssertSqlSafe(sql))
                .fetch_one(&mut c)
                .await
                .unwrap();
            row.try_get::<i64, _>(0).unwrap()
        })
    }

    /// First column of the first row, as text (the other columns may be of any type).
    pub fn mysql_text(&self, sql: &str) -> String {
        let url = self.source_url.clone();
        let sql = sql.to_string();
        self.rt.block_on(async move {
            let mut c = MySqlConnection::connect(&url).await.unwrap();
            let row = sqlx::query(AssertSqlSafe(sql))
                .fetch_one(&mut c)
                .await
                .unwrap();
            row.try_get::<String, _>(0).unwrap()
        })
    }

    pub fn pg_i64(&self, sql: &str) -> i64 {
        let url = self.target_url.clone();
        let sql = sql.to_string();
        self.rt.block_on(async move {
            let mut c = PgConnection::connect(&url).await.unwrap();
            let row = sqlx::query(AssertSqlSafe(sql))
                .fetch_one(&mut c)
                .await
                .unwrap();
            row.try_get::<i64, _>(0).unwrap()
        })
    }

    /// Every row of a query, each column rendered to text by the database itself.
    pub fn mysql_rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let url = self.source_url.clone();
        let sql = sql.to_string();
        self.rt.block_on(async move {
            let mut c = MySqlConnection::connect(&url).await.unwrap();
            let rows = sqlx::query(AssertSqlSafe(sql))
                .fetch_all(&mut c)
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    // Text, or a number (SHOW statements' unsigned columns) as text.
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<Option<String>, _>(i)
                                .or_else(|_| {
                                    r.try_get::<Option<u64>, _>(i)
                                        .map(|v| v.map(|v| v.to_string()))
                                })
                                .or_else(|_| {
                                    r.try_get::<Option<i64>, _>(i)
                                        .map(|v| v.map(|v| v.to_string()))
                                })
                                .unwrap()
                        })
                        .collect()
                })
                .collect()
        })
    }

    pub fn pg_rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let url = self.target_url.clone();
        let sql = sql.to_string();
        self.rt.block_on(async move {
            let mut c = PgConnection::connect(&url).await.unwrap();
            let rows = sqlx::query(AssertSqlSafe(sql))
                .fetch_all(&mut c)
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.try_get::<Option<String>, _>(i).unwrap())
                        .collect()
                })
                .collect()
        })
    }

    /// Demo orders on each side as sorted `(order_id, created with microseconds)` text.
    pub fn orders_both_sides(&self) -> (Rows, Rows) {
        let mut src = self.mysql_rows(
            "SELECT CAST(order_id AS CHAR), DATE_FORMAT(created, '%Y-%m-%d %H:%i:%s.%f') FROM orders",
        );
        let mut tgt = self.pg_rows(
            "SELECT order_id, to_char(created, 'YYYY-MM-DD HH24:MI:SS.US') FROM public.orders",
        );
        src.sort();
        tgt.sort();
        (src, tgt)
    }

    /// Asserts the demo table is equal, row for row, on both sides; returns the row count.
    pub fn assert_orders_equal(&self) -> usize {
        let (src, tgt) = self.orders_both_sides();
        assert_eq!(
            src.len(),
            tgt.len(),
            "row counts differ: source {} target {}",
            src.len(),
            tgt.len()
        );
        let missing: Vec<_> = src
            .iter()
            .filter(|r| tgt.binary_search(r).is_err())
            .take(5)
            .collect();
        assert!(
            missing.is_empty() && src == tgt,
            "rows differ, e.g. missing on target: {missing:?}"
        );
        src.len()
    }

    /// Inserts `n` demo orders sharing one `created` value, straight into the source.
    pub fn insert_orders_at(&self, n: usize, created: &str) {
        let values: Vec<String> = (0..n)
            .map(|_| format!("('{}', '{created}')", uuid::Uuid::new_v4()))
            .collect();
        self.mysql(&format!(
            "INSERT INTO orders (order_id, created) VALUES {}",
            values.join(",")
        ));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::fs::remove_dir_all(&self.dir);
        self.rt.block_on(async {
            if let Ok(mut my) = MySqlConnection::connect(&format!("{}/mysql", mysql_server())).await
            {
                let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                    .execute(&mut my)
                    .await;
            }
            if let Ok(mut pg) = PgConnection::connect(&format!("{}/postgres", pg_server())).await {
                let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut pg)
                .await;
            }
        });
    }
}

/// Waits for `cond` to hold, polling, up to `timeout`; panics naming `what` otherwise.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a child to exit, killing it after `timeout`. Its output is drained while it
/// runs, so a chatty child never blocks on a full pipe.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    use std::io::Read;
    fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    }
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Output {
                status,
                stdout: collect(out),
                stderr: collect(err),
            };
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "process did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&collect(out)),
                String::from_utf8_lossy(&collect(err))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal to a child process (through `kill`: the workspace forbids unsafe code).
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {} failed", child.id());
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET: (status code, body), or None when nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((code, body))
}

/// Runs SQL on the PostgreSQL server's `postgres` database (not the test's own).
pub fn pg_admin(sql: &str) {
    use sea_orm::sqlx::{self, AssertSqlSafe, Connection, PgConnection};
    let sql = sql.to_string();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let mut c = PgConnection::connect(&format!("{}/postgres", pg_server()))
                .await
                .unwrap();
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap();
        });
}

/// Every row of `table` on both sides, as text, ordered by the first column. A column named
/// `@c` is a date and time, rendered alike on both sides.
pub fn both(db: &TestDb, table: &str, cols: &str) -> (Rows, Rows) {
    let cols: Vec<&str> = cols.split(',').map(str::trim).collect();
    // The select list of one side: `time` renders a date and time column, `other` the rest.
    let list = |time: &dyn Fn(&str) -> String, other: &dyn Fn(&str) -> String| {
        cols.iter()
            .map(|c| c.strip_prefix('@').map_or_else(|| other(c), time))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let src = db.mysql_rows(&format!(
        "SELECT {} FROM `{table}` ORDER BY 1",
        list(
            &|c| format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s.%f')"),
            &|c| format!("CAST({c} AS CHAR)")
        )
    ));
    let tgt = db.pg_rows(&format!(
        "SELECT {} FROM public.\"{table}\" ORDER BY 1",
        list(
            &|c| format!("to_char({c}, 'YYYY-MM-DD HH24:MI:SS.US')"),
            &|c| format!("{c}::text")
        )
    ));
    (src, tgt)
}

/// Waits (up to 60 s) until `table` exists on the target and holds the source's rows
/// (`cols` as for [`both`]); `log` says what sluice was doing when it does not.
pub fn wait_equal(db: &TestDb, table: &str, cols: &str, log: &dyn Fn() -> String) {
    let start = Instant::now();
    wait_until(
        &format!("target table {table}"),
        Duration::from_secs(60),
        || db.pg_rows(&format!("SELECT to_regclass('public.\"{table}\"')::text"))[0][0].is_some(),
    );
    loop {
        let (s, t) = both(db, table, cols);
        if s == t {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{table} differs after 60 s:\nsource {s:?}\ntarget {t:?}\nlog:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child whose stderr goes to a file, so a test can wait for a log line while it runs.
pub struct Logged {
    pub child: Child,
    pub log: PathBuf,
}

impl Logged {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {needle:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 60 s) until `cond` holds, failing with the log otherwise.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out after 60 s waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process with SIGTERM and checks it exits cleanly within 30 s.
    pub fn stop(mut self) {
        signal(&self.child, "TERM");
        let (status, _) = self.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "{status}: {}", self.log());
    }

    /// Waits for the process to exit (killing it after `timeout`); returns its status and
    /// how long it took from the call.
    pub fn wait_exit(&mut self, timeout: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "process did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl TestDb {
    /// Starts `sluice <args>` with its stderr logged to a file of this test.
    pub fn spawn_logged(&self, args: &[&str], env: &[(&str, &str)]) -> Logged {
        let log = self
            .dir
            .join(format!("{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = self.sluice();
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Logged {
            child: cmd.spawn().unwrap(),
            log,
        }
    }
}

/// Runs statements on the source over one connection, from a thread of its own, until
/// `stop` is set or `work` returns `None`; `work(n)` gives the `n`th. Returns how many ran.
pub fn mysql_worker(
    url: String,
    stop: Arc<AtomicBool>,
    mut work: impl FnMut(usize) -> Option<String> + Send + 'static,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = MySqlConnection::connect(&url).await.unwrap();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let Some(sql) = work(n) else { break };
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut c)
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    })
}

/// Tables per owning process id, from the state rows.
pub fn owners(db: &TestDb) -> std::collections::HashMap<u32, Vec<String>> {
    let mut out: std::collections::HashMap<u32, Vec<String>> = Default::default();
    for r in
        db.pg_rows("SELECT owner, table_name FROM sluice.replication_state ORDER BY table_name")
    {
        let pid = r[0]
            .as_deref()
            .and_then(|o| o.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        out.entry(pid).or_default().push(r[1].clone().unwrap());
    }
    out
}

/// True when every process of `pids` holds exactly `each` tables (by the state rows) and
/// no other process holds any.
pub fn balanced(db: &TestDb, pids: &[u32], each: usize) -> bool {
    let o = owners(db);
    pids.iter().all(|p| o.get(p).map_or(0, Vec::len) == each) && o.keys().all(|p| pids.contains(p))
}

impl TestDb {
    /// Fails at once, saying how to fix it, on a server started without the ROW binary log
    /// (by hand, bypassing scripts/services.sh), rather than by a timeout later.
    pub fn assert_binlog_on(&self) {
        let on = self.mysql_rows("SELECT CONCAT(@@log_bin + 0, @@binlog_format)");
        assert_eq!(
            on[0][0].as_deref(),
            Some("1ROW"),
            "MariaDB's binary log is off or not ROW: run scripts/services.sh (scripts/test.sh does)"
        );
    }
}
