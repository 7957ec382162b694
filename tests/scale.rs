//! Hundreds of tables in one configuration: threads and connections are bounded by the
//! settings, not by the number of tables, so 300 tables catch up with PostgreSQL at its
//! default connection limit; and wide rows stay within the memory bound.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use sea_orm::sqlx::{self, Connection, MySqlConnection, PgConnection};

const TABLES: usize = 300;
const ROWS: usize = 10;

#[test]
fn three_hundred_tables_catch_up_within_the_connection_limits() {
    let db = TestDb::new();
    let mut ddl = String::new();
    let mut cfg = String::new();
    for i in 0..TABLES {
        ddl.push_str(&format!(
            "CREATE TABLE t{i:03} (id INT NOT NULL PRIMARY KEY, at DATETIME(6) NOT NULL, v VARCHAR(20) NOT NULL); \
             INSERT INTO t{i:03} SELECT seq, TIMESTAMP('2026-01-01') + INTERVAL seq SECOND, CONCAT('row ', seq) FROM seq_1_to_{ROWS}; "
        ));
        cfg.push_str(&format!(
            "[[tables]]\nname = \"t{i:03}\"\ncursor = \"at\"\n"
        ));
    }
    db.mysql(&ddl);
    let max_connections = db.pg_i64("SELECT current_setting('max_connections')::bigint");
    assert!(
        max_connections <= 100,
        "the server's limit is {max_connections}"
    );
    let cfg = db.config(&cfg);
    // Sample both servers' connections from this test's sluice while it runs.
    let done = Arc::new(AtomicBool::new(false));
    let (max_pg, max_my) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    let sampler = {
        let (done, max_pg, max_my) = (done.clone(), max_pg.clone(), max_my.clone());
        let (name, pg_url) = (db.name.clone(), format!("{}/postgres", common::pg_server()));
        let my_url = format!("{}/mysql", common::mysql_server());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut pg = PgConnection::connect(&pg_url).await.unwrap();
                let mut my = MySqlConnection::connect(&my_url).await.unwrap();
                while !done.load(Ordering::Relaxed) {
                    let n: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'sluice%'",
                    )
                    .bind(&name)
                    .fetch_one(&mut pg)
                    .await
                    .unwrap();
                    max_pg.fetch_max(n, Ordering::Relaxed);
                    let m: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = ?",
                    )
                    .bind(&name)
                    .fetch_one(&mut my)
                    .await
                    .unwrap();
                    max_my.fetch_max(m, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        })
    };
    let out = db.ok(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(
        out.contains(&format!("replicated {} rows", TABLES * ROWS)),
        "{out}"
    );
    for i in [0, 1, 149, 299] {
        assert_eq!(
            db.pg_i64(&format!("SELECT COUNT(*) FROM public.t{i:03}")),
            ROWS as i64
        );
    }
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM sluice.replication_state WHERE rows_replicated = 10"),
        TABLES as i64
    );
    // The defaults: max_target_connections = 8, max_source_connections = 4.
    let (pg, my) = (
        max_pg.load(Ordering::Relaxed),
        max_my.load(Ordering::Relaxed),
    );
    assert!((1..=8).contains(&pg), "target connections: {pg}");
    assert!((1..=4).contains(&my), "source connections: {my}");
}

/// Peak resident memory of a process, polled until it exits (VmHWM of /proc).
fn peak_rss_kib(child: &mut std::process::Child) -> u64 {
    let path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            if let Some(kb) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            {
                peak = peak.max(kb);
            }
        }
        if child.try_wait().unwrap().is_some() {
            return peak;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn wide_rows_stay_within_the_memory_bound() {
    let db = TestDb::new();
    // 240 rows of 512 KiB: 120 MiB, with the default 8 MiB batches.
    db.mysql(
        "CREATE TABLE blobs (id INT NOT NULL PRIMARY KEY, at DATETIME(6) NOT NULL, data LONGBLOB NOT NULL); \
         INSERT INTO blobs SELECT seq, TIMESTAMP('2026-01-01') + INTERVAL seq SECOND, \
           REPEAT(CHAR(seq % 256), 524288) FROM seq_1_to_240",
    );
    let cfg = db.config("[[tables]]\nname = \"blobs\"\ncursor = \"at\"\n");
    let mut child = db
        .sluice()
        .args(["--config", cfg.to_str().unwrap(), "run", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let peak = peak_rss_kib(&mut child);
    assert!(child.wait().unwrap().success());
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.blobs"), 240);
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM public.blobs WHERE length(data) = 524288 AND get_byte(data, 0) = id % 256"),
        240
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}
