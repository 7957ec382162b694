//! DATETIME cursors written in local time: compared with the source's clock in the zone they
//! are written in (the server's global zone, or `[source] datetime_zone`), and a clock that
//! goes back (the autumn change) loses no row. These tests change the server's global time
//! zone: they run one at a time, and put it back even when they fail (other test binaries
//! never run beside this one).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{wait_until, TestDb};

static SERIAL: Mutex<()> = Mutex::new(());

/// Sets the server's global time zone, and puts the previous one back when dropped.
struct GlobalZone<'a> {
    db: &'a TestDb,
    before: String,
}

impl<'a> GlobalZone<'a> {
    fn set(db: &'a TestDb, zone: &str) -> GlobalZone<'a> {
        let before = db.mysql_text("SELECT @@global.time_zone");
        db.mysql(&format!("SET GLOBAL time_zone = '{zone}'"));
        GlobalZone { db, before }
    }
}

impl Drop for GlobalZone<'_> {
    fn drop(&mut self) {
        self.db
            .mysql(&format!("SET GLOBAL time_zone = '{}'", self.before));
    }
}

/// `n` rows stamped `NOW(6)` by new sessions (which take the global zone), or by sessions
/// in `session_zone`.
fn insert_now(db: &TestDb, from: i64, n: i64, session_zone: Option<&str>) {
    // (The test's driver sets its sessions to UTC: set them as an application's would be.)
    let set = format!(
        "SET time_zone = {}; ",
        session_zone.map_or("@@global.time_zone".to_string(), |z| format!("'{z}'"))
    );
    db.mysql(&format!(
        "{set}INSERT INTO events (id, created) SELECT seq, NOW(6) FROM seq_{from}_to_{}",
        from + n - 1
    ));
}

fn setup(db: &TestDb) {
    db.mysql(
        "CREATE TABLE events (id INT NOT NULL PRIMARY KEY, created DATETIME(6) NOT NULL, KEY (created))",
    );
}

const TABLE: &str = "[[tables]]\nname = \"events\"\ncursor = \"created\"\n";

#[test]
fn rows_stamped_in_the_servers_local_time_are_copied_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    setup(&db);
    let _zone = GlobalZone::set(&db, "+02:00");
    insert_now(&db, 1, 100, None);
    let cfg = db.config(TABLE);
    let out = db.ok(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    assert!(out.contains("events: 100 rows"), "{out}");
    assert_eq!(db.pg_i64("SELECT count(*) FROM public.events"), 100);
    let status = db.ok(&["--config", cfg.to_str().unwrap(), "status"]);
    assert!(
        status.contains("lag 0.000 s") && !status.contains("ahead"),
        "{status}"
    );
}

#[test]
fn a_zone_the_application_writes_is_set_with_datetime_zone_and_a_mismatch_is_reported() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    setup(&db);
    // The server in UTC; the application's sessions write local time three hours ahead.
    let _zone = GlobalZone::set(&db, "+00:00");
    insert_now(&db, 1, 50, Some("+03:00"));
    let cfg = db.config(TABLE);
    let cfg = cfg.to_str().unwrap();
    let out = db.run(&["--config", cfg, "run", "--once"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("ahead of the source's clock") && log.contains("datetime_zone"),
        "the held rows are explained, not silent: {log}"
    );
    assert_eq!(db.pg_i64("SELECT count(*) FROM public.events"), 0);
    let status = db.ok(&["--config", cfg, "status"]);
    assert!(
        status.contains("50 rows, the newest")
            && status.contains("ahead of the source's clock")
            && status.contains("datetime_zone"),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&db.ok(&["--config", cfg, "status", "--json"])).unwrap();
    assert_eq!(json["tables"][0]["rows_future_cursor"], 50, "{json}");
    // Told the zone, sluice copies them.
    let fixed = db.config(&format!("[source]\ndatetime_zone = \"+03:00\"\n{TABLE}"));
    let fixed = fixed.to_str().unwrap();
    db.ok(&["--config", fixed, "run", "--once"]);
    assert_eq!(db.pg_i64("SELECT count(*) FROM public.events"), 50);
    let status = db.ok(&["--config", fixed, "status"]);
    assert!(!status.contains("ahead"), "{status}");
    // A zone the server does not know is refused, saying what to do.
    let named = db.config(&format!(
        "[source]\ndatetime_zone = \"Mars/Olympus\"\n{TABLE}"
    ));
    let out = db.run(&["--config", named.to_str().unwrap(), "run", "--once"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mysql_tzinfo_to_sql"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn when_the_clock_goes_back_an_hour_no_row_is_lost() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    setup(&db);
    let zone = GlobalZone::set(&db, "+02:00");
    insert_now(&db, 1, 50, None);
    let cfg = db.config(TABLE);
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    wait_until("the first rows", Duration::from_secs(60), || {
        db.pg_rows("SELECT to_regclass('public.events')::text")[0][0].is_some()
            && db.pg_i64("SELECT count(*) FROM public.events") == 50
    });
    // The autumn change: the zone's clock goes back an hour, and rows written after it
    // carry times an hour before the rows already copied.
    db.mysql("SET GLOBAL time_zone = '+01:00'");
    insert_now(&db, 51, 50, None);
    assert!(
        db.mysql_i64("SELECT COUNT(*) FROM events WHERE id > 50 AND created < (SELECT MIN(created) FROM events WHERE id <= 50)") == 50,
        "the new rows are an hour behind"
    );
    run.wait_for("went back", Duration::from_secs(30));
    wait_until("every row", Duration::from_secs(60), || {
        db.pg_i64("SELECT count(*) FROM public.events") == 100
    });
    common::signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
    drop(zone);
    assert_eq!(
        db.pg_i64("SELECT count(DISTINCT id) FROM public.events"),
        100,
        "each row once"
    );
}

#[test]
fn rows_stamped_in_the_future_are_counted_and_reported_not_silent() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = TestDb::new();
    setup(&db);
    // A client clock running a day fast, or scheduled dates: three rows wait for the clock.
    db.mysql(
        "INSERT INTO events SELECT seq, UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE FROM seq_1_to_5; \
         INSERT INTO events SELECT seq, UTC_TIMESTAMP(6) + INTERVAL 1 DAY FROM seq_6_to_8",
    );
    let _zone = GlobalZone::set(&db, "+00:00");
    let cfg = db.config(TABLE);
    let port = common::free_port();
    let mut run = db.spawn_logged(
        &["--config", cfg.to_str().unwrap(), "run"],
        &[("SLUICE_HTTP_ADDR", &format!("127.0.0.1:{port}"))],
    );
    wait_until("the metric", Duration::from_secs(60), || {
        common::get(port, "/metrics")
            .is_some_and(|(_, m)| m.contains("sluice_rows_future_cursor{table=\"events\"} 3"))
    });
    // The rows behind the clock arrive; the three ahead of it wait.
    wait_until("the five rows", Duration::from_secs(30), || {
        db.pg_i64("SELECT count(*) FROM public.events") == 5
    });
    run.wait_for("ahead of the source's clock", Duration::from_secs(10));
    let json: serde_json::Value =
        serde_json::from_str(&db.ok(&["--config", cfg.to_str().unwrap(), "status", "--json"]))
            .unwrap();
    assert_eq!(json["tables"][0]["rows_future_cursor"], 3, "{json}");
    assert!(
        json["tables"][0]["cursor_ahead_seconds"].as_i64().unwrap() > 86_000,
        "{json}"
    );
    common::signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
}
