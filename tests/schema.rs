//! Schema changes on the source while `run` goes on, in both capture modes, against real
//! MariaDB and PostgreSQL: additive and widening changes are followed at their place in the
//! stream, under a continuous load, with values equal before and after; changes that could
//! lose data stop only their table, saying how to go on; a crash right after a change was
//! applied resumes cleanly.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{signal, wait_until, Logged, Rows, TestDb};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Poll,
    Binlog,
}

fn config(db: &TestDb, mode: Mode, tables: &str, extra: &str) -> String {
    let head = match mode {
        Mode::Poll => String::new(),
        Mode::Binlog => {
            db.assert_binlog_on();
            "[source]\ncapture = \"binlog\"\n".to_string()
        }
    };
    let path = db.config(&format!("{head}{extra}{tables}"));
    path.to_str().unwrap().to_string()
}

fn table_entry(mode: Mode, name: &str) -> String {
    match mode {
        Mode::Poll => format!("[[tables]]\nname = \"{name}\"\ncursor = \"updated\"\n"),
        Mode::Binlog => format!("[[tables]]\nname = \"{name}\"\n"),
    }
}

/// Inserts a row into `items` every few milliseconds from a thread of its own (filling
/// whichever columns the table has then), until stopped.
fn load(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    common::mysql_worker(url, stop, |n| {
        std::thread::sleep(Duration::from_millis(5));
        Some(format!("INSERT INTO items (id) VALUES ({})", 1_000_000 + n))
    })
}

/// Both sides' rows of `items`, the columns as text.
fn both(db: &TestDb, cols: &[&str]) -> (Rows, Rows) {
    let src = db.mysql_rows(&format!(
        "SELECT {} FROM items ORDER BY id",
        cols.iter()
            .map(|c| format!("CAST({c} AS CHAR)"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let tgt = db.pg_rows(&format!(
        "SELECT {} FROM public.items ORDER BY items.id",
        cols.iter()
            .map(|c| format!("{c}::text"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    (src, tgt)
}

fn wait_equal(db: &TestDb, cols: &[&str], run: &Logged) {
    let start = Instant::now();
    loop {
        let (s, t) = if db
            .pg_rows(&format!(
                "SELECT count(*)::text FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'items' AND column_name IN ({})",
                cols.iter().map(|c| format!("'{c}'")).collect::<Vec<_>>().join(", ")
            ))[0][0]
            .as_deref()
            == Some(&cols.len().to_string())
        {
            both(db, cols)
        } else {
            (vec![], vec![vec![]])
        };
        if s == t {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "items differs after 60 s on ({}):\nsource {} rows, target {} rows; first difference: {:?}\nlog:\n{}",
            cols.join(", "),
            s.len(),
            t.len(),
            s.iter().zip(&t).find(|(a, b)| a != b),
            run.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A time cursor every test table has (polling reads by it; binlog capture ignores it).
const UPDATED: &str =
    "updated DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (updated)";

/// Stops `run` (which then exits 0: no table failed) and checks `verify` finds both sides
/// equal.
fn stop_and_verify(db: &TestDb, mut run: Logged, cfg: &str) {
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "run exited with {status}: {}", run.log());
    let out = db.run(&["--config", cfg, "verify"]);
    assert!(
        out.status.success(),
        "verify: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn target_columns(db: &TestDb) -> Vec<Vec<Option<String>>> {
    db.pg_rows(
        "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'items' ORDER BY ordinal_position",
    )
}

/// ADD COLUMN (with and without a default, in the middle), INT → BIGINT with a value past
/// 2^31 right after, VARCHAR(10) → VARCHAR(200) with a long value, RENAME COLUMN, DROP
/// COLUMN (kept), CREATE INDEX: all under a continuous load, each followed without a restart,
/// values equal after each, `verify` equal at the end, the history recorded.
fn follows_additive_and_widening_changes(mode: Mode) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 1, \
           name VARCHAR(10) NOT NULL DEFAULT 'x', \
           {UPDATED}); \
         INSERT INTO items (id, n, name) SELECT seq, seq, CONCAT('n', seq) FROM seq_1_to_200"
    ));
    let cfg = config(&db, mode, &table_entry(mode, "items"), "");
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    wait_equal(&db, &["id", "n", "name"], &run);
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(db.source_url.clone(), stop.clone());

    // ADD COLUMN with a default, in the middle: old rows get the default, as on the source.
    db.mysql("ALTER TABLE items ADD COLUMN note VARCHAR(20) NOT NULL DEFAULT 'none' AFTER id");
    db.mysql("UPDATE items SET note = 'after', n = n + 1 WHERE id <= 10");
    wait_equal(&db, &["id", "n", "name", "note"], &run);
    // ... and without one (NULL for old rows).
    db.mysql("ALTER TABLE items ADD COLUMN extra INT");
    db.mysql("UPDATE items SET extra = id WHERE id BETWEEN 11 AND 20");
    wait_equal(&db, &["id", "n", "name", "note", "extra"], &run);
    // INT → BIGINT, and a value past 2^31 right after.
    db.mysql("ALTER TABLE items MODIFY n BIGINT NOT NULL DEFAULT 1");
    db.mysql("UPDATE items SET n = 3000000000 WHERE id = 21");
    wait_equal(&db, &["id", "n", "name", "note", "extra"], &run);
    // VARCHAR(10) → VARCHAR(200), and a long value.
    db.mysql("ALTER TABLE items MODIFY name VARCHAR(200) NOT NULL DEFAULT 'x'");
    let long = "l".repeat(150);
    db.mysql(&format!("UPDATE items SET name = '{long}' WHERE id = 22"));
    wait_equal(&db, &["id", "n", "name", "note", "extra"], &run);
    // RENAME COLUMN: the values stay with the column.
    db.mysql("ALTER TABLE items RENAME COLUMN name TO title");
    db.mysql("UPDATE items SET title = 'renamed' WHERE id = 23");
    wait_equal(&db, &["id", "n", "title", "note", "extra"], &run);
    // An index: nothing to do, nothing breaks.
    db.mysql("CREATE INDEX items_n ON items (n)");
    // DROP COLUMN, kept (the default): the target column stays, takes NULL from then on.
    db.mysql("ALTER TABLE items DROP COLUMN extra");
    db.mysql("INSERT INTO items (id, title) VALUES (500, 'after the drop')");
    wait_equal(&db, &["id", "n", "title", "note"], &run);
    stop.store(true, Ordering::Relaxed);
    let loaded = loader.join().unwrap();
    assert!(loaded > 20, "the load ran throughout ({loaded} rows)");
    wait_equal(&db, &["id", "n", "title", "note"], &run);
    assert_eq!(
        db.pg_rows("SELECT extra::text FROM public.items WHERE id IN (15, 500) ORDER BY id"),
        vec![vec![Some("15".into())], vec![None]],
        "the kept column holds what it had, and NULL in rows written since"
    );
    let cols = target_columns(&db);
    assert!(
        cols.contains(&vec![
            Some("n".into()),
            Some("bigint".into()),
            Some("NO".into())
        ]) && cols.contains(&vec![
            Some("extra".into()),
            Some("integer".into()),
            Some("YES".into())
        ]) && cols.iter().any(|c| c[0].as_deref() == Some("title"))
            && !cols.iter().any(|c| c[0].as_deref() == Some("name")),
        "{cols:?}"
    );
    let versions = db.pg_rows(
        "SELECT version::text, array_to_string(ddl, E'\\n') FROM sluice.schema_history \
         WHERE table_name = 'items' ORDER BY version",
    );
    let numbers: Vec<String> = versions.iter().map(|v| v[0].clone().unwrap()).collect();
    let expected: Vec<String> = (1..=versions.len()).map(|v| v.to_string()).collect();
    assert_eq!(numbers, expected, "versions count up from 1: {versions:?}");
    // Each change applied exactly once (polling may see two changes at one look).
    let all: String = versions
        .iter()
        .filter_map(|v| v[1].clone())
        .collect::<Vec<_>>()
        .join("\n");
    for change in [
        "ADD COLUMN \"note\" text DEFAULT 'none'::text NOT NULL",
        "ADD COLUMN \"extra\" integer",
        "ALTER COLUMN \"n\" TYPE bigint",
        "RENAME COLUMN \"name\" TO \"title\"",
        "CREATE INDEX \"items_items_n\"",
    ] {
        assert_eq!(all.matches(change).count(), 1, "{change:?} once in {all}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&db.ok(&["--config", &cfg, "status", "--json"])).unwrap();
    assert_eq!(
        json["tables"][0]["shape_version"].as_u64(),
        versions.last().unwrap()[0]
            .as_deref()
            .unwrap()
            .parse::<u64>()
            .ok(),
        "{json}"
    );
    stop_and_verify(&db, run, &cfg);
}

#[test]
fn poll_follows_additive_and_widening_changes() {
    follows_additive_and_widening_changes(Mode::Poll);
}

#[test]
fn binlog_follows_additive_and_widening_changes() {
    follows_additive_and_widening_changes(Mode::Binlog);
}

/// A narrowing change stops its table only, naming the change and the fix; once the target
/// column is changed as told, a restart goes on. DROP COLUMN under `on_drop_column = "drop"`
/// drops the target's too.
fn narrowing_stops_only_its_table(mode: Mode) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n BIGINT NOT NULL, gone INT, \
           {UPDATED}); \
         CREATE TABLE other (id BIGINT NOT NULL PRIMARY KEY, v INT, \
           {UPDATED}); \
         INSERT INTO items (id, n, gone) SELECT seq, seq, seq FROM seq_1_to_50; \
         INSERT INTO other (id, v) SELECT seq, seq FROM seq_1_to_50"
    ));
    let tables = format!(
        "{}on_drop_column = \"drop\"\n{}",
        table_entry(mode, "items"),
        table_entry(mode, "other")
    );
    let cfg = config(&db, mode, &tables, "");
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    wait_equal(&db, &["id", "n", "gone"], &run);
    db.mysql("ALTER TABLE items DROP COLUMN gone");
    db.mysql("UPDATE items SET n = n + 1 WHERE id = 1");
    wait_equal(&db, &["id", "n"], &run);
    wait_until(
        "the dropped column gone from the target too",
        Duration::from_secs(30),
        || {
            !target_columns(&db)
                .iter()
                .any(|c| c[0].as_deref() == Some("gone"))
        },
    );
    db.mysql("ALTER TABLE items MODIFY n INT NOT NULL");
    // One source transaction, so one batch in binlog capture: items' part stops items only,
    // and other's part of the same batch is applied without it.
    db.mysql(
        "BEGIN; UPDATE items SET n = 7 WHERE id = 2; UPDATE other SET v = -2 WHERE id = 4; COMMIT",
    );
    run.wait_for(
        "changed on the source from bigint(20) to int(11)",
        Duration::from_secs(30),
    );
    wait_until(
        "the other table's change of the same transaction",
        Duration::from_secs(30),
        || db.pg_i64("SELECT v::bigint FROM public.other WHERE id = 4") == -2,
    );
    let log = run.log();
    assert!(
        log.contains("ALTER TABLE \"public\".\"items\" ALTER COLUMN \"n\" TYPE integer"),
        "the message says how to go on: {log}"
    );
    // The other table goes on.
    db.mysql("UPDATE other SET v = -1 WHERE id = 3");
    wait_until("the other table goes on", Duration::from_secs(30), || {
        db.pg_i64("SELECT v::bigint FROM public.other WHERE id = 3") == -1
    });
    let status = db.ok(&["--config", &cfg, "status"]);
    assert!(
        status.contains("int(11)"),
        "status shows why items stopped: {status}"
    );
    signal(&run.child, "TERM");
    let mut run = run;
    run.wait_exit(Duration::from_secs(30));
    // As the message says: change the target column, restart.
    db.pg("ALTER TABLE public.items ALTER COLUMN n TYPE integer");
    let out = db.run(&["--config", &cfg, "run", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, t) = both(&db, &["id", "n"]);
    assert_eq!(s, t);
    assert_eq!(
        db.pg_i64("SELECT n::bigint FROM public.items WHERE id = 2"),
        7
    );
}

#[test]
fn poll_narrowing_stops_only_its_table() {
    narrowing_stops_only_its_table(Mode::Poll);
}

#[test]
fn binlog_narrowing_stops_only_its_table() {
    narrowing_stops_only_its_table(Mode::Binlog);
}

/// Killed right after a schema change was applied, before the next batch: the restart
/// resumes cleanly in the new shape (nothing applied twice wrongly, nothing lost).
fn a_crash_right_after_a_change_resumes(mode: Mode) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL DEFAULT 0, \
           {UPDATED}); \
         INSERT INTO items (id, n) SELECT seq, seq FROM seq_1_to_100"
    ));
    let cfg = config(&db, mode, &table_entry(mode, "items"), "");
    // The process dies (as kill -9 would) right after the batch that applied the change
    // committed, before anything else.
    let mut run = db.spawn_logged(
        &["--config", &cfg, "run"],
        &[("SLUICE_FAILPOINT", "after_shape_commit")],
    );
    wait_equal(&db, &["id", "n"], &run);
    db.mysql("ALTER TABLE items ADD COLUMN tag VARCHAR(8) NOT NULL DEFAULT 'old'");
    db.mysql("INSERT INTO items (id, n, tag) VALUES (101, 101, 'new')");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the failpoint stopped it: {}", run.log());
    assert_eq!(
        db.pg_i64("SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'tag'"),
        1,
        "the change was applied before the crash"
    );
    db.mysql("INSERT INTO items (id, n, tag) VALUES (102, 102, 'newer'); UPDATE items SET tag = 'upd' WHERE id = 1");
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    wait_equal(&db, &["id", "n", "tag"], &run);
    assert_eq!(
        db.pg_i64("SELECT count(*) FROM sluice.schema_history WHERE table_name = 'items'"),
        2,
        "the change is recorded once"
    );
    stop_and_verify(&db, run, &cfg);
}

#[test]
fn poll_a_crash_right_after_a_change_resumes() {
    a_crash_right_after_a_change_resumes(Mode::Poll);
}

#[test]
fn binlog_a_crash_right_after_a_change_resumes() {
    a_crash_right_after_a_change_resumes(Mode::Binlog);
}

/// Binlog capture reads renames from the ALTER statement itself: a rename together with
/// other changes in one statement keeps its values.
#[test]
fn binlog_renames_named_by_the_statement_keep_their_values() {
    let mode = Mode::Binlog;
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, a INT, \
           {UPDATED}); \
         INSERT INTO items (id, a) SELECT seq, seq * 10 FROM seq_1_to_50"
    ));
    let cfg = config(&db, mode, &table_entry(mode, "items"), "");
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    wait_equal(&db, &["id", "a"], &run);
    db.mysql("ALTER TABLE items RENAME COLUMN a TO b, ADD COLUMN c INT NOT NULL DEFAULT 5 FIRST");
    db.mysql("UPDATE items SET b = -1, c = 6 WHERE id = 1");
    wait_equal(&db, &["id", "b", "c"], &run);
    assert!(
        !target_columns(&db)
            .iter()
            .any(|c| c[0].as_deref() == Some("a")),
        "{:?}",
        target_columns(&db)
    );
    assert_eq!(
        db.pg_i64("SELECT b::bigint FROM public.items WHERE id = 2"),
        20
    );
    stop_and_verify(&db, run, &cfg);
}

/// The target's indexes, sluice's own: (name, unique, deferrable).
fn target_indexes(db: &TestDb) -> Vec<Vec<Option<String>>> {
    db.pg_rows(
        "SELECT c.relname::text, i.indisunique::text, \
                COALESCE((SELECT k.condeferrable::text FROM pg_constraint k WHERE k.conindid = c.oid), 'false') \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = 'public.items'::regclass \
           AND obj_description(c.oid, 'pg_class') LIKE 'sluice: %' ORDER BY 1",
    )
}

/// The source's secondary indexes are built on the target once the initial load is over and
/// followed when the source adds or drops one; in binlog mode a unique index is checked at
/// commit, so a source transaction that swaps unique values between rows applies.
fn indexes_follow_the_source(mode: Mode) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, u INT NOT NULL, n INT, \
           UNIQUE KEY by_u (u), KEY by_n_u (n, u), {UPDATED}); \
         INSERT INTO items (id, u, n) SELECT seq, seq, seq % 7 FROM seq_1_to_300"
    ));
    let cfg = config(&db, mode, &table_entry(mode, "items"), "");
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    wait_equal(&db, &["id", "u", "n"], &run);
    let unique = if mode == Mode::Binlog {
        "true"
    } else {
        "false"
    };
    let want = |names: &[&str]| -> Vec<Vec<Option<String>>> {
        names
            .iter()
            .map(|n| {
                let u = n.ends_with("by_u");
                vec![
                    Some(n.to_string()),
                    Some(if u { unique } else { "false" }.to_string()),
                    Some(if u { unique } else { "false" }.to_string()),
                ]
            })
            .collect()
    };
    // (UPDATED's own index on the cursor column too.)
    let updated_index = vec!["items_updated"];
    let mut names = vec!["items_by_n_u", "items_by_u"];
    names.extend(&updated_index);
    names.sort();
    let start = Instant::now();
    while target_indexes(&db) != want(&names) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the target's indexes are {:?}, not {:?}; log:\n{}",
            target_indexes(&db),
            want(&names),
            run.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A transaction that swaps two rows' unique values.
    db.mysql(
        "BEGIN; UPDATE items SET u = -1 WHERE id = 1; UPDATE items SET u = 1 WHERE id = 2; \
         UPDATE items SET u = 2 WHERE id = 1; COMMIT",
    );
    wait_equal(&db, &["id", "u", "n"], &run);
    // An index added, one dropped, while running.
    db.mysql("CREATE INDEX by_id_n ON items (id, n); DROP INDEX by_n_u ON items");
    db.mysql("UPDATE items SET n = 100 WHERE id = 3");
    let mut names = vec!["items_by_id_n", "items_by_u"];
    names.extend(&updated_index);
    names.sort();
    wait_until(
        "the index changes on the target",
        Duration::from_secs(30),
        || target_indexes(&db) == want(&names),
    );
    wait_equal(&db, &["id", "u", "n"], &run);
    stop_and_verify(&db, run, &cfg);
}

#[test]
fn poll_indexes_follow_the_source() {
    indexes_follow_the_source(Mode::Poll);
}

#[test]
fn binlog_indexes_follow_the_source() {
    indexes_follow_the_source(Mode::Binlog);
}

/// An index of the target's own on the same columns serves: sluice adds none beside it, and
/// never drops it.
#[test]
fn an_index_of_the_targets_own_serves_and_stays() {
    let mode = Mode::Poll;
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT, KEY by_n (n), {UPDATED}); \
         INSERT INTO items (id, n) SELECT seq, seq FROM seq_1_to_100"
    ));
    db.pg(
        "CREATE TABLE public.items (id bigint PRIMARY KEY, n integer, updated timestamp(6) NOT NULL); \
         CREATE INDEX mine ON public.items (n)",
    );
    let cfg = config(&db, mode, &table_entry(mode, "items"), "");
    let out = db.run(&["--config", &cfg, "run", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = db.pg_rows(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'items' ORDER BY 1",
    );
    assert_eq!(
        all,
        vec![
            vec![Some("items_pkey".to_string())],
            vec![Some("items_updated".to_string())],
            vec![Some("mine".to_string())],
        ]
    );
    // Run again: still the same.
    let out = db.run(&["--config", &cfg, "run", "--once"]);
    assert!(out.status.success());
    assert_eq!(
        db.pg_i64(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'items'"
        ),
        3
    );
}

/// `[[tables]]` patterns: a glob with exclusions takes the source's tables; one that cannot
/// be replicated (no primary key) is left out with a warning rather than failing the run; a
/// table created while `run` goes on is picked up, copied whole and followed, without a restart
/// (binlog capture: the stream starts again where it was without the server checking the
/// position).
fn patterns_take_tables_and_new_ones_arrive(mode: Mode) {
    let db = TestDb::new();
    let table = |name: &str, key: bool| {
        format!(
            "CREATE TABLE {name} (id BIGINT NOT NULL{}, v INT, {UPDATED}); \
             INSERT INTO {name} (id, v) SELECT seq, seq FROM seq_1_to_40;",
            if key { " PRIMARY KEY" } else { "" }
        )
    };
    db.mysql(&format!(
        "{}{}{}",
        table("t_a", true),
        table("t_nokey", false),
        table("t_skip1", true)
    ));
    let entry = match mode {
        Mode::Poll => "[[tables]]\nname = \"t_*\"\nexclude = [\"t_skip*\"]\ncursor = \"updated\"\n",
        Mode::Binlog => "[[tables]]\nname = \"t_*\"\nexclude = [\"t_skip*\"]\n",
    };
    let cfg = config(&db, mode, entry, "");
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    let count = |t: &str| {
        db.pg_rows(&format!("SELECT to_regclass('public.{t}')::text"))[0][0]
            .is_some()
            .then(|| db.pg_i64(&format!("SELECT count(*) FROM public.{t}")))
    };
    wait_until("t_a copied", Duration::from_secs(30), || {
        count("t_a") == Some(40)
    });
    run.wait_for("t_nokey", Duration::from_secs(10));
    assert!(run.log().contains("left out"), "{}", run.log());
    // Created while running: picked up, copied whole, then followed.
    db.mysql(&table("t_new", true));
    wait_until("t_new copied", Duration::from_secs(30), || {
        count("t_new") == Some(40)
    });
    db.mysql("INSERT INTO t_new (id, v) VALUES (41, 41); INSERT INTO t_a (id, v) VALUES (41, 41)");
    wait_until("both followed", Duration::from_secs(30), || {
        count("t_new") == Some(41) && count("t_a") == Some(41)
    });
    assert_eq!(count("t_nokey"), None, "left out");
    assert_eq!(count("t_skip1"), None, "excluded");
    if mode == Mode::Binlog {
        // The round that took t_new started the stream from a position this process read and
        // committed: MariaDB was not asked to check it against its binlog (BINLOG_GTID_POS,
        // a read of the file up to the position, which every other table waits for).
        let log = run.log();
        let starts: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("reading the binlog"))
            .collect();
        assert!(starts.len() >= 2, "{log}");
        assert!(starts.iter().all(|l| l.contains("read_here=true")), "{log}");
    }
    // A table the pattern took is dropped: it is no longer replicated, and that is no failure.
    db.mysql("DROP TABLE t_a");
    run.wait_for("t_a (gone)", Duration::from_secs(30));
    db.mysql("INSERT INTO t_new (id, v) VALUES (42, 42)");
    wait_until("the others go on", Duration::from_secs(30), || {
        count("t_new") == Some(42)
    });
    let port: u16 = run
        .log()
        .split("addr=127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("the HTTP address in the log");
    wait_until(
        "/readyz ready without the dropped table",
        Duration::from_secs(10),
        || common::get(port, "/readyz").map(|r| r.0) == Some(200),
    );
    let status = db.ok(&["--config", &cfg, "status"]);
    assert!(
        status.contains("t_new:") && !status.contains("t_skip1"),
        "{status}"
    );
    stop_and_verify(&db, run, &cfg);
}

#[test]
fn poll_patterns_take_tables_and_new_ones_arrive() {
    patterns_take_tables_and_new_ones_arrive(Mode::Poll);
}

#[test]
fn binlog_patterns_take_tables_and_new_ones_arrive() {
    patterns_take_tables_and_new_ones_arrive(Mode::Binlog);
}

/// A schema change while a table's first load runs (polling: in primary-key order; binlog:
/// the snapshot, which the ALTER waits for) ends equal.
fn a_change_during_the_initial_load_ends_equal(mode: Mode) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE items (id BIGINT NOT NULL PRIMARY KEY, n INT NOT NULL, {UPDATED}); \
         INSERT INTO items (id, n) SELECT seq, seq FROM seq_1_to_300000"
    ));
    let cfg = config(
        &db,
        mode,
        &table_entry(mode, "items"),
        "[pipeline]\nbatch_rows = 500\nkey_order_load_min_rows = 0\ndefer_key = false\n",
    );
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    wait_until("the load under way", Duration::from_secs(30), || {
        db.pg_rows("SELECT to_regclass('public.items')::text")[0][0].is_some()
            && db.pg_i64("SELECT count(*) FROM public.items") > 1000
    });
    db.mysql("ALTER TABLE items ADD COLUMN tag VARCHAR(8) NOT NULL DEFAULT 'old'");
    db.mysql("UPDATE items SET tag = 'new', n = -n WHERE id % 1000 = 0");
    let loaded = db.pg_i64("SELECT count(*) FROM public.items");
    wait_equal(&db, &["id", "n", "tag"], &run);
    // Polling reads without holding the table, so the change lands mid-load. A binlog
    // snapshot is one transaction, and the source's ALTER waits for it to end (its metadata
    // lock, as with mysqldump --single-transaction): the change follows the snapshot.
    if mode == Mode::Poll {
        assert!(
            loaded < 300_000,
            "the change came while the load ran ({loaded} rows were in)"
        );
    }
    stop_and_verify(&db, run, &cfg);
}

#[test]
fn poll_a_change_during_the_initial_load_ends_equal() {
    a_change_during_the_initial_load_ends_equal(Mode::Poll);
}

#[test]
fn binlog_a_change_during_the_snapshot_ends_equal() {
    a_change_during_the_initial_load_ends_equal(Mode::Binlog);
}
