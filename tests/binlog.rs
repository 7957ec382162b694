//! Binlog capture (`[source] capture = "binlog"`) against real MariaDB and PostgreSQL: every
//! kind of change ends as on the source, source transactions land whole, a snapshot taken
//! under writes ends equal, crashes lose and repeat nothing.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{both, mysql_worker, signal, wait_equal, wait_until, TestDb};

const BINLOG: &str = "[source]\ncapture = \"binlog\"\n";

fn config(db: &TestDb, tables: &[&str], extra: &str) -> std::path::PathBuf {
    // Fail at once, saying how to fix it, on a server started without the binary log (for
    // instance by hand, bypassing scripts/services.sh), rather than by a timeout later.
    db.assert_binlog_on();
    let mut text = format!("{BINLOG}{extra}");
    for t in tables {
        text.push_str(&format!("[[tables]]\nname = \"{t}\"\n"));
    }
    db.config(&text)
}

/// `sluice verify` finds the tables equal; then the run stops cleanly on SIGTERM.
fn verify_then_stop(db: &TestDb, cfg: &str, mut run: common::Logged) {
    let out = db.run(&["--config", cfg, "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    signal(&run.child, "TERM");
    assert!(run.wait_exit(Duration::from_secs(30)).0.success());
}

#[test]
fn every_kind_of_change_ends_as_on_the_source() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE items (id INT NOT NULL PRIMARY KEY, v VARCHAR(20), n INT NOT NULL, \
           at DATETIME(6) NOT NULL DEFAULT '2026-01-01 00:00:00'); \
         CREATE TABLE notes (id INT NOT NULL PRIMARY KEY, body TEXT); \
         INSERT INTO items (id, v, n) SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_100; \
         INSERT INTO notes VALUES (1, 'one'), (2, 'two')",
    );
    let cfg = config(&db, &["items", "notes"], "");
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    let log = || run.log();
    wait_equal(&db, "items", "id, v, n, @at", &log);
    // Changes polling cannot see: updates that move no cursor, backdated rows, deletes.
    db.mysql(
        "UPDATE items SET v = 'same time' WHERE id = 1; \
         INSERT INTO items (id, v, n, at) VALUES (1000, 'backdated', 0, '1999-01-01'); \
         DELETE FROM items WHERE id BETWEEN 10 AND 19; \
         UPDATE items SET id = 2000 WHERE id = 2; \
         UPDATE items SET id = id + 500 WHERE id BETWEEN 30 AND 39; \
         REPLACE INTO items (id, v, n) VALUES (3, 'replaced', 3), (3000, 'new by replace', 0); \
         INSERT INTO items (id, v, n) VALUES (4, 'x', 0), (4000, 'y', 0) \
           ON DUPLICATE KEY UPDATE v = 'upserted', n = n + 1; \
         BEGIN; INSERT INTO items (id, v, n) VALUES (5000, 'in a transaction', 0); \
           UPDATE items SET n = n * 2 WHERE id < 50; DELETE FROM items WHERE id = 5; COMMIT; \
         BEGIN; INSERT INTO items (id, v, n) VALUES (6000, 'rolled back', 0); ROLLBACK; \
         UPDATE items SET v = NULL WHERE id = 6; \
         TRUNCATE TABLE notes; INSERT INTO notes VALUES (3, 'after the truncate')",
    );
    wait_equal(&db, "items", "id, v, n, @at", &log);
    wait_equal(&db, "notes", "id, body", &log);
    let status = db.ok(&["--config", cfg.to_str().unwrap(), "status"]);
    assert!(status.contains("position binlog mysql-bin."), "{status}");
    let json = db.ok(&["--config", cfg.to_str().unwrap(), "status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let items = &json["tables"][0];
    assert_eq!(items["table"], "items", "{json}");
    assert_eq!(items["snapshot"], "done", "{json}");
    assert!(items["bytes_behind"].is_u64(), "{json}");
    assert!(items["position"]["binlog"]["file"].is_string(), "{json}");
    // Where that is on any server of the topology, and whose binlog the file is.
    let gtid = items["position"]["binlog"]["gtid"]
        .as_str()
        .unwrap_or_default();
    assert!(gtid.starts_with("0-"), "{json}");
    assert_eq!(
        items["position"]["binlog"]["server_id"].to_string(),
        db.mysql_rows("SELECT CAST(@@server_id AS CHAR)")[0][0]
            .clone()
            .unwrap(),
        "{json}"
    );
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
    // And a restart changes nothing.
    let out = db.ok(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    assert!(out.contains("replicated 0 rows"), "{out}");
    let (s, t) = both(&db, "items", "id, v, n, @at");
    assert_eq!(s, t);
}

/// Positions an older sluice wrote (a file and an offset, no GTID state, no server) resume
/// where they are and gain both at their next commit; `status` shows the GTID.
#[test]
fn positions_without_gtids_resume_and_gain_them() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE items (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO items SELECT seq, CONCAT('v', seq) FROM seq_1_to_50",
    );
    let cfg = config(&db, &["items"], "");
    let cfg = cfg.to_str().unwrap();
    db.ok(&["--config", cfg, "run", "--once"]);
    // As sluice 0.8 wrote it.
    db.pg("UPDATE sluice.replication_state SET position = position #- '{binlog,gtid}' #- '{binlog,server_id}'");
    let old = db.pg_rows("SELECT position::text FROM sluice.replication_state");
    assert!(!old[0][0].as_deref().unwrap().contains("gtid"), "{old:?}");
    db.mysql(
        "INSERT INTO items SELECT seq, 'after' FROM seq_51_to_80; \
         UPDATE items SET v = 'changed' WHERE id <= 5; DELETE FROM items WHERE id = 6",
    );
    let out = db.ok(&["--config", cfg, "run", "--once"]);
    assert!(out.contains("replicated 36 rows"), "{out}");
    let (s, t) = both(&db, "items", "id, v");
    assert_eq!(s, t);
    let gtid = db.pg_rows("SELECT position->'binlog'->>'gtid', position->'binlog'->>'server_id' FROM sluice.replication_state");
    let source_gtid = db.mysql_rows("SELECT @@gtid_binlog_pos, CAST(@@server_id AS CHAR)");
    // The GTID state of the source's whole binlog at the end (other tests write too: each of
    // its domains is there, at least as far as when the run began).
    let ours = gtid[0][0].clone().unwrap_or_default();
    assert!(ours.starts_with("0-"), "{gtid:?} vs {source_gtid:?}");
    assert_eq!(gtid[0][1], source_gtid[0][1]);
    let status = db.ok(&["--config", cfg, "status"]);
    assert!(status.contains(&format!("(GTID {ours}")), "{status}");
}

/// Text in character sets other than UTF-8 streams as the snapshot reads it: single-byte
/// ones (latin1 with MySQL's five C1 bytes, a latin1 column holding UTF-8 bytes, cp1251, koi8r,
/// latin2, ascii), multi-byte ones (sjis, big5, utf16, ucs2, utf16le, utf32), inserted and
/// updated with non-ASCII text, both continuously and in a `run --once` catch-up.
#[test]
fn text_in_other_character_sets_streams_as_the_snapshot_reads_it() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE texts (id INT NOT NULL PRIMARY KEY, \
           l1 VARCHAR(40) CHARACTER SET latin1, cy VARCHAR(40) CHARACTER SET cp1251, \
           k8 TEXT CHARACTER SET koi8r, l2 CHAR(12) CHARACTER SET latin2, \
           a VARCHAR(20) CHARACTER SET ascii, sj VARCHAR(20) CHARACTER SET sjis, \
           b5 VARCHAR(20) CHARACTER SET big5, u16 VARCHAR(20) CHARACTER SET utf16, \
           u2 VARCHAR(20) CHARACTER SET ucs2, u16le VARCHAR(20) CHARACTER SET utf16le, \
           u32 VARCHAR(20) CHARACTER SET utf32); \
         INSERT INTO texts VALUES (1, 'café €', 'Привет', 'Привет', 'Łódź', 'plain', \
           'こんにちは', '中文', 'Grüße 😀', 'Ωmega', 'ñandú', 'ü😀')",
    );
    let cols = "id, l1, cy, k8, l2, a, sj, b5, u16, u2, u16le, u32";
    let cfg = config(&db, &["texts"], "");
    let cfg = cfg.to_str().unwrap();
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    wait_equal(&db, "texts", cols, &|| run.log());
    run.wait_for("reading the binlog", Duration::from_secs(60));
    let writes = |first: i64| {
        format!(
            "INSERT INTO texts VALUES ({first}, 'naïve ŒŸ', 'Съешь же ещё', 'ещё', 'Žluťoučký', 'x', \
               'ｶﾀｶﾅ漢字', '繁體', 'Ünïcødé 🎉', 'Ελληνικά', '¿qué?', '𝄞 clef'); \
             INSERT INTO texts (id, l1) VALUES ({}, CONVERT(CAST(CONVERT('é ü' USING utf8mb4) AS BINARY) USING latin1)), \
               ({}, CONVERT(UNHEX('818D8F909DA0FF') USING latin1)); \
             UPDATE texts SET l1 = CONCAT(l1, ' à'), cy = 'Ёлка', sj = 'ソ表', u32 = '∑ 😀' WHERE id = 1",
            first + 1,
            first + 2
        )
    };
    db.mysql(&writes(10));
    wait_equal(&db, "texts", cols, &|| run.log());
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
    // A backlog caught up at once.
    db.mysql(&writes(20));
    db.mysql("UPDATE texts SET k8 = 'Жук', l2 = 'Ćma' WHERE id > 10");
    let out = db.ok(&["--config", cfg, "run", "--once"]);
    assert!(out.contains("replicated"), "{out}");
    let (s, t) = both(&db, "texts", cols);
    assert_eq!(s, t);
    // The latin1 column holding UTF-8 bytes reads as MariaDB converts it, on both sides.
    let mojibake = db.pg_rows("SELECT l1 FROM public.texts WHERE id = 11");
    assert_eq!(mojibake[0][0].as_deref(), Some("Ã© Ã¼"));
}

/// ENUM and SET labels changed on the source (a label inserted mid-list, so every later
/// label's number shifts; labels appended) are followed at their place in the stream: rows
/// written after the change read with the new labels, and, after a restart that reads the
/// binlog from before it, rows written before it keep the labels they had.
#[test]
fn enum_and_set_label_changes_are_followed_where_they_happen() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE e (id INT NOT NULL PRIMARY KEY, \
           s ENUM('pending','paid','shipped') NOT NULL, f SET('a','b') NOT NULL DEFAULT ''); \
         INSERT INTO e VALUES (1, 'pending', 'a'), (2, 'paid', 'b'), (3, 'shipped', 'a,b')",
    );
    let cols = "id, s, f";
    let cfg = config(&db, &["e"], "");
    let cfg = cfg.to_str().unwrap();
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    wait_equal(&db, "e", cols, &|| run.log());
    run.wait_for("reading the binlog", Duration::from_secs(60));
    db.mysql(
        "ALTER TABLE e MODIFY s ENUM('new','pending','paid','shipped') NOT NULL, \
           MODIFY f SET('a','b','c') NOT NULL DEFAULT ''; \
         INSERT INTO e VALUES (4, 'new', 'c'), (5, 'shipped', 'a,c'); \
         UPDATE e SET s = 'new', f = 'b,c' WHERE id = 1; UPDATE e SET s = 'paid' WHERE id = 2",
    );
    wait_equal(&db, "e", cols, &|| run.log());
    db.mysql(
        "ALTER TABLE e MODIFY s ENUM('new','pending','paid','shipped','returned') NOT NULL; \
         INSERT INTO e VALUES (6, 'returned', '')",
    );
    wait_equal(&db, "e", cols, &|| run.log());
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
    // Stopped: rows written with the labels as they are, then a label inserted at the front.
    db.mysql(
        "INSERT INTO e VALUES (7, 'shipped', 'b'), (8, 'pending', 'c'); \
         ALTER TABLE e MODIFY s ENUM('draft','new','pending','paid','shipped','returned') NOT NULL; \
         INSERT INTO e VALUES (9, 'draft', 'a'); UPDATE e SET s = 'draft' WHERE id = 3",
    );
    db.ok(&["--config", cfg, "run", "--once"]);
    let (s, t) = both(&db, "e", cols);
    assert_eq!(s, t);
}

/// Tables whose rows are replaced wholesale: gh-ost's swap of its copy (filled from the table)
/// goes on without a copy; an ETL job's swap of a table built elsewhere stops the table,
/// naming the statement, and none of the new rows lands; `CREATE OR REPLACE TABLE` empties
/// the table, and what follows it (rows inserted after, or its own `SELECT`) lands.
#[test]
fn tables_replaced_wholesale_are_followed_or_stop_named() {
    let db = TestDb::new();
    let mut ddl = String::new();
    for t in ["ghosted", "swapped", "recreated"] {
        ddl.push_str(&format!(
            "CREATE TABLE {t} (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)); \
             INSERT INTO {t} SELECT seq, CONCAT('v', seq) FROM seq_1_to_50; "
        ));
    }
    db.mysql(&ddl);
    let cfg = config(&db, &["ghosted", "swapped", "recreated"], "");
    let cfg = cfg.to_str().unwrap();
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    for t in ["ghosted", "swapped", "recreated"] {
        wait_equal(&db, t, "id, v", &|| run.log());
    }
    run.wait_for("reading the binlog", Duration::from_secs(60));
    // gh-ost: a copy, changed, filled from the table, changes on both, the swap.
    db.mysql(
        "CREATE TABLE _ghosted_gho LIKE ghosted; ALTER TABLE _ghosted_gho ADD INDEX (v); \
         INSERT INTO _ghosted_gho SELECT * FROM ghosted; \
         UPDATE ghosted SET v = 'during' WHERE id = 3; UPDATE _ghosted_gho SET v = 'during' WHERE id = 3; \
         RENAME TABLE ghosted TO _ghosted_del, _ghosted_gho TO ghosted; \
         INSERT INTO ghosted VALUES (100, 'after the swap'); DROP TABLE _ghosted_del",
    );
    wait_equal(&db, "ghosted", "id, v", &|| run.log());
    // An ETL job publishing a table it built elsewhere. Nothing commits after the swap until
    // its copy is done, so the snapshot of the first chunk reports the position of the last
    // commit, before the swap (MariaDB counts transactions' commits only), though it holds
    // the new rows: the swap's emptying must not be applied again after them.
    db.mysql(
        "CREATE TABLE swapped_next LIKE swapped; \
         INSERT INTO swapped_next SELECT seq, 'rebuilt' FROM seq_1_to_20; \
         RENAME TABLE swapped TO swapped_old, swapped_next TO swapped",
    );
    // Rows sluice never read: its target is emptied there, and it is copied again beside
    // the stream.
    run.wait_for(
        "another table was put in the table's place",
        Duration::from_secs(30),
    );
    assert!(
        run.log().contains("RENAME TABLE swapped TO swapped_old"),
        "{}",
        run.log()
    );
    run.wait_for("copy of the table done", Duration::from_secs(60));
    wait_equal(&db, "swapped", "id, v", &|| run.log());
    db.mysql("INSERT INTO swapped VALUES (500, 'after'), (501, 'after the copy')");
    wait_equal(&db, "swapped", "id, v", &|| run.log());
    // CREATE OR REPLACE: emptied, then its new rows.
    db.mysql(
        "CREATE OR REPLACE TABLE recreated (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO recreated VALUES (7, 'new')",
    );
    wait_equal(&db, "recreated", "id, v", &|| run.log());
    db.mysql(
        "CREATE OR REPLACE TABLE recreated (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)) \
           SELECT seq AS id, 'selected' AS v FROM seq_1_to_30",
    );
    wait_equal(&db, "recreated", "id, v", &|| run.log());
    for t in ["ghosted", "swapped", "recreated"] {
        wait_equal(&db, t, "id, v", &|| run.log());
    }
    assert!(run.child.try_wait().unwrap().is_none(), "{}", run.log());
    signal(&run.child, "TERM");
    run.wait_exit(Duration::from_secs(30));
}

/// Writes without row images stop the replicated tables they change, naming the statement
/// and the fix, and never diverge silently: statement-format writes (a session with
/// `binlog_format = STATEMENT`), one to a table not replicated (ignored), and a row image
/// without every column (a session with `binlog_row_image = MINIMAL`). The other tables go on.
#[test]
fn writes_without_whole_row_images_stop_their_table_naming_the_fix() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE stmt (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)); \
         CREATE TABLE minimal (id INT NOT NULL PRIMARY KEY, v VARCHAR(20), n INT); \
         CREATE TABLE fine (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)); \
         CREATE TABLE unreplicated (id INT NOT NULL PRIMARY KEY); \
         CREATE TABLE loaded (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO stmt VALUES (1, 'a'); INSERT INTO minimal VALUES (1, 'a', 1); \
         INSERT INTO fine VALUES (1, 'a')",
    );
    let cfg = config(&db, &["stmt", "minimal", "fine", "loaded"], "");
    let cfg = cfg.to_str().unwrap();
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    wait_equal(&db, "fine", "id, v", &|| run.log());
    run.wait_for("reading the binlog", Duration::from_secs(60));
    db.mysql(
        "SET SESSION binlog_format = 'STATEMENT'; \
         INSERT INTO unreplicated VALUES (1); \
         UPDATE stmt SET v = 'by statement' WHERE id = 1; \
         SET SESSION binlog_format = 'ROW'; \
         SET SESSION binlog_row_image = 'MINIMAL'; \
         UPDATE minimal SET n = 2 WHERE id = 1",
    );
    // A statement-based LOAD DATA (its own binlog events, the file's rows in none).
    let file = format!("/tmp/{}.txt", db.name);
    db.mysql(&format!(
        "SELECT 5, 'loaded' INTO OUTFILE '{file}'; \
         SET SESSION binlog_format = 'STATEMENT'; \
         LOAD DATA INFILE '{file}' INTO TABLE loaded"
    ));
    run.wait_for("(`LOAD DATA INFILE", Duration::from_secs(30));
    run.wait_for("a statement-format write at", Duration::from_secs(30));
    run.wait_for(
        "binlog_row_image = MINIMAL or NOBLOB",
        Duration::from_secs(30),
    );
    let log = run.log();
    assert!(log.contains("UPDATE stmt SET v = 'by statement'"), "{log}");
    assert!(!log.contains("table \"unreplicated\""), "{log}");
    // Nothing of either landed, and the other table goes on.
    assert_eq!(
        db.pg_rows("SELECT v FROM public.stmt")[0][0].as_deref(),
        Some("a")
    );
    assert_eq!(db.pg_i64("SELECT n::bigint FROM public.minimal"), 1);
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.loaded"), 0);
    db.mysql("INSERT INTO fine VALUES (2, 'b')");
    wait_equal(&db, "fine", "id, v", &|| run.log());
    let status = db.ok(&["--config", cfg, "status"]);
    assert!(status.contains("binlog_format"), "{status}");
    // What the message says to do once every session writes rows: copy it again, while the
    // run goes on (the stopped table comes back; the others never stop).
    assert!(
        run.log().contains("sluice snapshot --table stmt"),
        "{}",
        run.log()
    );
    db.ok(&["--config", cfg, "snapshot", "--table", "stmt"]);
    run.wait_for("copy of the table done", Duration::from_secs(60));
    db.mysql("UPDATE stmt SET v = 'by rows' WHERE id = 1");
    wait_equal(&db, "stmt", "id, v", &|| run.log());
    assert!(run.child.try_wait().unwrap().is_none(), "{}", run.log());
    signal(&run.child, "TERM");
    run.wait_exit(Duration::from_secs(30));
}

/// A row image with a value sluice cannot carry (TINYINT(1) holding 2, replicated as a
/// boolean) stops its table, named with the row's whole key: the key columns before the bad
/// value and after it. The other table goes on.
#[test]
fn a_row_that_cannot_be_carried_stops_its_table_naming_its_key() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE bad (a INT NOT NULL, flag TINYINT(1) NOT NULL, b VARCHAR(10) NOT NULL, \
           PRIMARY KEY (a, b)); \
         CREATE TABLE fine (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO bad VALUES (1, 1, 'x'); INSERT INTO fine VALUES (1, 'a')",
    );
    let cfg = config(&db, &["bad", "fine"], "");
    let cfg = cfg.to_str().unwrap();
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    wait_equal(&db, "bad", "a, b", &|| run.log());
    run.wait_for("reading the binlog", Duration::from_secs(60));
    db.mysql("INSERT INTO bad VALUES (7, 2, 'seven')");
    run.wait_for("TINYINT(1) holds 2", Duration::from_secs(30));
    let log = run.log();
    assert!(
        log.contains("bad value in table bad, key a=7, b=\"seven\": column \"flag\""),
        "{log}"
    );
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.bad"), 1);
    db.mysql("INSERT INTO fine VALUES (2, 'b')");
    wait_equal(&db, "fine", "id, v", &|| run.log());
    signal(&run.child, "TERM");
    run.wait_exit(Duration::from_secs(30));
}

/// An update writes the columns it changed (the row before and the row after differ there)
/// and leaves the others as the target has them: a column edited on the target by hand stays
/// edited. Two updates of one row in a transaction, each of another column, both land (the
/// columns are those of every update, not only the last one's); a row the target lacks comes
/// back whole; in a table of 70 columns, changes from the 64th column on land too.
#[test]
fn updates_write_the_columns_they_changed_and_bring_back_a_missing_row_whole() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE acct (id INT NOT NULL PRIMARY KEY, balance DECIMAL(12,2) NOT NULL, \
           note VARCHAR(40) NOT NULL, body TEXT NOT NULL, touched DATETIME(6) NOT NULL); \
         INSERT INTO acct SELECT seq, seq * 10, CONCAT('note ', seq), REPEAT(MD5(seq), 64), \
           TIMESTAMP('2026-01-01') + INTERVAL seq SECOND FROM seq_1_to_3",
    );
    // A table of 70 columns: those from the 64th on are counted together.
    let many: Vec<String> = (1..70).map(|i| format!("c{i}")).collect();
    db.mysql(&format!(
        "CREATE TABLE many (id INT NOT NULL PRIMARY KEY, {}); \
         INSERT INTO many (id) VALUES (1), (2)",
        many.iter()
            .map(|c| format!("{c} INT NOT NULL DEFAULT 0"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let many_cols = format!("id, {}", many.join(", "));
    let cfg = config(&db, &["acct", "many"], "");
    let cfg = cfg.to_str().unwrap();
    let run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    let cols = "id, balance, note, body, @touched";
    wait_equal(&db, "acct", cols, &|| run.log());
    run.wait_for("reading the binlog", Duration::from_secs(60));
    db.pg("UPDATE public.acct SET note = 'edited on the target' WHERE id = 1");
    db.pg("DELETE FROM public.acct WHERE id = 2");
    db.mysql("UPDATE acct SET balance = balance + 1, touched = touched + INTERVAL 1 DAY WHERE id IN (1, 2)");
    wait_until("row 2 back on the target", Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM public.acct WHERE id = 2") == 1
    });
    // Each side's row of a key, as text.
    let row = |id: &str| {
        let (s, t) = both(&db, "acct", cols);
        let pick = |rows: Vec<Vec<Option<String>>>| {
            rows.into_iter()
                .find(|r| r[0].as_deref() == Some(id))
                .unwrap_or_default()
        };
        (pick(s), pick(t))
    };
    // Row 2 whole, as the source has it.
    let (s2, t2) = row("2");
    assert_eq!(s2, t2, "{}", run.log());
    // Row 1: the changed columns written, the note edited by hand left as it is.
    let (s1, t1) = row("1");
    assert_eq!(
        t1[2].as_deref(),
        Some("edited on the target"),
        "{}",
        run.log()
    );
    assert_eq!((&s1[..2], &s1[3..]), (&t1[..2], &t1[3..]));
    // Two updates of row 3 in one transaction, each of another column.
    db.mysql(
        "BEGIN; UPDATE acct SET note = 'changed first' WHERE id = 3; \
         UPDATE acct SET balance = 99.5 WHERE id = 3; COMMIT",
    );
    wait_until("row 3's balance", Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM public.acct WHERE id = 3 AND balance = 99.5") == 1
    });
    let (s3, t3) = row("3");
    assert_eq!(s3, t3, "{}", run.log());
    db.mysql(
        "BEGIN; UPDATE many SET c2 = 2, c66 = 66 WHERE id = 1; UPDATE many SET c64 = 64 WHERE id = 2; \
         UPDATE many SET c7 = 7 WHERE id = 2; COMMIT",
    );
    wait_equal(&db, "many", &many_cols, &|| run.log());
    // The note changed on the source too: written, and the tables end equal.
    db.mysql("UPDATE acct SET note = 'the source''s note' WHERE id = 1");
    wait_equal(&db, "acct", cols, &|| run.log());
    verify_then_stop(&db, cfg, run);
}

/// A transaction that also changes a non-transactional (MyISAM) table after a savepoint and
/// then rolls back to it: MariaDB writes the rows read since the savepoint into the group
/// with `SAVEPOINT` and `ROLLBACK TO` statements around them (the non-transactional change
/// goes in a group of its own). Those rows were taken back on the source and must not land.
#[test]
fn rows_rolled_back_to_a_savepoint_never_land() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE i (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB; \
         CREATE TABLE m (id INT NOT NULL PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM; \
         INSERT INTO i VALUES (1, 'start')",
    );
    let cfg = config(&db, &["i", "m"], "");
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    let log = || run.log();
    wait_equal(&db, "i", "id, v", &log);
    let from = db.mysql_rows("SHOW MASTER STATUS")[0].clone();
    db.mysql(
        "BEGIN; INSERT INTO i VALUES (2, 'kept'); SAVEPOINT s1; \
           INSERT INTO i VALUES (3, 'taken back'); UPDATE i SET v = 'taken back' WHERE id = 1; \
           INSERT INTO m VALUES (3, 'non-transactional'); ROLLBACK TO SAVEPOINT s1; \
           INSERT INTO i VALUES (4, 'after'); SAVEPOINT s2; DELETE FROM i WHERE id = 2; \
           INSERT INTO m VALUES (4, 'again'); ROLLBACK TO s2; COMMIT; \
         BEGIN; INSERT INTO i VALUES (5, 'all taken back'); INSERT INTO m VALUES (5, 'stays'); \
           ROLLBACK; \
         INSERT INTO i VALUES (6, 'last')",
    );
    // The statements were really written into the binlog: the test is about them.
    let (file, pos) = (from[0].clone().unwrap(), from[1].clone().unwrap());
    let written = db.mysql_rows(&format!("SHOW BINLOG EVENTS IN '{file}' FROM {pos}"));
    let info = |prefix: &str| {
        written
            .iter()
            .filter(|r| r[5].as_deref().is_some_and(|i| i.starts_with(prefix)))
            .count()
    };
    assert_eq!(info("ROLLBACK TO"), 2, "{written:?}");
    assert_eq!(info("SAVEPOINT"), 2, "{written:?}");
    wait_until(
        "the last row on the target",
        Duration::from_secs(60),
        || db.pg_i64("SELECT count(*) FROM public.i WHERE id = 6") == 1,
    );
    wait_equal(&db, "i", "id, v", &log);
    wait_equal(&db, "m", "id, v", &log);
    let (s, _) = both(&db, "i", "id, v");
    assert_eq!(s.len(), 4, "{s:?}");
    signal(&run.child, "TERM");
    let (status, _) = run.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", run.log());
}

#[test]
fn source_transactions_land_whole() {
    let db = TestDb::new();
    const ACCOUNTS: i64 = 20;
    db.mysql(&format!(
        "CREATE TABLE accounts (id INT NOT NULL PRIMARY KEY, balance BIGINT NOT NULL); \
         CREATE TABLE ledger (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, account INT NOT NULL, amount BIGINT NOT NULL); \
         INSERT INTO accounts SELECT seq, 1000 FROM seq_1_to_{ACCOUNTS}; \
         INSERT INTO ledger (account, amount) SELECT seq, 1000 FROM seq_1_to_{ACCOUNTS}"
    ));
    let cfg = config(&db, &["accounts", "ledger"], "");
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut run = db.spawn_logged(
        &["--config", cfg.to_str().unwrap(), "run"],
        &[("SLUICE_HTTP_ADDR", &addr)],
    );
    wait_until("the snapshot", Duration::from_secs(60), || {
        db.pg_rows("SELECT to_regclass('public.ledger')::text")[0][0].is_some()
            && db.pg_i64("SELECT COUNT(*) FROM public.ledger") == ACCOUNTS
    });
    // Transfers: two balances and two ledger rows change together, in one transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            let mut seed = w + 1;
            mysql_worker(db.source_url.clone(), stop.clone(), move |n| {
                if n >= 600 {
                    return None;
                }
                // Paced, so that the target is seen moving even on a loaded machine.
                std::thread::sleep(Duration::from_millis(1));
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let a = (seed >> 33) as i64 % ACCOUNTS + 1;
                let b = (a % ACCOUNTS) + 1;
                let x = (seed >> 20) as i64 % 50 + 1;
                Some(format!(
                    "BEGIN; UPDATE accounts SET balance = balance - {x} WHERE id = {a}; \
                     UPDATE accounts SET balance = balance + {x} WHERE id = {b}; \
                     INSERT INTO ledger (account, amount) VALUES ({a}, -{x}), ({b}, {x}); COMMIT"
                ))
            })
        })
        .collect();
    // Sample the target while it loads: never half a transfer.
    let check = "SELECT (SELECT sum(balance) FROM public.accounts)::text, \
                 (SELECT count(*) FROM public.accounts a WHERE a.balance <> \
                    (SELECT coalesce(sum(amount), 0) FROM public.ledger l WHERE l.account = a.id))::text, \
                 (SELECT count(*) FROM public.ledger)::text";
    let mut samples = 0;
    let mut seen_ledger = std::collections::BTreeSet::new();
    let started = Instant::now();
    // Until the target has every transfer, so that a slow start still shows it moving.
    while workers.iter().any(|w| !w.is_finished())
        || samples < 20
        || !seen_ledger.contains(&(ACCOUNTS + 2400))
    {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the transfers did not all land within 90 s; sluice's log:\n{}",
            run.log()
        );
        let r = &db.pg_rows(check)[0];
        assert_eq!(
            r[0].as_deref(),
            Some((ACCOUNTS * 1000).to_string().as_str()),
            "the balances must always sum to the same: {r:?}"
        );
        assert_eq!(
            r[1].as_deref(),
            Some("0"),
            "every balance must match its ledger: {r:?}"
        );
        seen_ledger.insert(r[2].clone().unwrap().parse::<i64>().unwrap());
        samples += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    for w in workers {
        assert_eq!(w.join().unwrap(), 600);
    }
    assert!(
        seen_ledger.len() > 3,
        "the target was sampled while it moved: {seen_ledger:?}"
    );
    wait_equal(&db, "ledger", "id, account, amount", &|| run.log());
    wait_equal(&db, "accounts", "id, balance", &|| run.log());
    // The metrics count what was applied: 1,200 transfers, each two updates and two inserts
    // (and the snapshot's 20 ledger rows, inserts too).
    let (code, metrics) = common::get(port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
    };
    assert_eq!(metric("sluice_source_transactions_total"), 1200.0);
    assert_eq!(
        metric("sluice_changes_total{table=\"accounts\",op=\"update\"}"),
        2400.0
    );
    assert_eq!(
        metric("sluice_changes_total{table=\"ledger\",op=\"insert\"}"),
        2420.0
    );
    // Bytes behind the server's binlog: measured every 5 s.
    wait_until(
        "binlog bytes behind in the metrics",
        Duration::from_secs(20),
        || {
            common::get(port, "/metrics")
                .is_some_and(|(_, m)| m.contains("sluice_binlog_bytes_behind{table=\"ledger\"}"))
        },
    );
    signal(&run.child, "TERM");
    assert!(run.wait_exit(Duration::from_secs(30)).0.success());
}

#[test]
fn a_snapshot_taken_under_writes_ends_equal() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE busy (id INT NOT NULL PRIMARY KEY, v INT NOT NULL, pad CHAR(100) NOT NULL DEFAULT 'x'); \
         INSERT INTO busy (id, v) SELECT seq, seq FROM seq_1_to_40000",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let writer = mysql_worker(db.source_url.clone(), stop.clone(), move |n| {
        d.store(n, Ordering::Relaxed);
        let k = (n * 7919) % 40000 + 1;
        Some(match n % 4 {
            0 => format!("UPDATE busy SET v = v + 1 WHERE id = {k}"),
            1 => format!("DELETE FROM busy WHERE id = {k}"),
            2 => format!(
                "INSERT INTO busy (id, v) VALUES ({}, {n}) ON DUPLICATE KEY UPDATE v = {n}",
                40000 + n
            ),
            _ => format!("REPLACE INTO busy (id, v) VALUES ({k}, {n})"),
        })
    });
    // Small pages, so the snapshot takes a while among the writes.
    let cfg = config(
        &db,
        &["busy"],
        "[pipeline]\nbatch_rows = 500\ndefer_key_min_rows = 0\n",
    );
    let run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    run.wait_for("snapshot of the table done", Duration::from_secs(120));
    wait_until(
        "some writes after the snapshot",
        Duration::from_secs(60),
        || done.load(Ordering::Relaxed) > 2000,
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    wait_equal(&db, "busy", "id, v", &|| run.log());
    verify_then_stop(&db, cfg.to_str().unwrap(), run);
}

/// Starts `sluice run` `rounds` times, each killed with SIGKILL after `from_ms` plus a random
/// 0–900 ms.
fn kill_at_random_moments(db: &TestDb, cfg: &str, rounds: u64, from_ms: u64) {
    for round in 0..rounds {
        let mut run = db
            .sluice()
            .args(["--config", cfg, "run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let ms = from_ms + (uuid::Uuid::new_v4().as_u128() % 900) as u64 + round * 37;
        std::thread::sleep(Duration::from_millis(ms));
        run.kill().unwrap();
        run.wait().unwrap();
    }
}

#[test]
fn kill_9_at_random_moments_loses_and_repeats_nothing() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    db.ok(&["generate", "--rate", "1000000", "--total", "30000"]);
    let cfg = config(&db, &["orders"], "[pipeline]\nbatch_rows = 500\n");
    let cfg = cfg.to_str().unwrap();
    let gen = db.spawn(&["generate", "--rate", "2000", "--total", "15000"]);
    kill_at_random_moments(&db, cfg, 8, 200);
    assert!(common::wait_output(gen, Duration::from_secs(60))
        .status
        .success());
    db.ok(&["--config", cfg, "run", "--once"]);
    assert_eq!(db.assert_orders_equal(), 45_000);
    // Exactly once: the count sluice recorded is the number of changes, no more.
    let out = db.ok(&["--config", cfg, "verify"]);
    assert!(out.contains("orders: equal"), "{out}");
}

/// Updates of one column or another (single rows, ranges, two in one transaction), with
/// `REPLACE`s among them, while sluice is killed with SIGKILL at random moments: every column
/// ends as on the source (updates write only the columns they changed).
#[test]
fn kill_9_amid_updates_of_single_columns_loses_nothing() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE acct (id INT NOT NULL PRIMARY KEY, a INT NOT NULL, b INT NOT NULL, \
           note VARCHAR(40) NOT NULL); \
         INSERT INTO acct SELECT seq, seq, 0, CONCAT('start ', seq) FROM seq_1_to_2000",
    );
    let cfg = config(&db, &["acct"], "[pipeline]\nbatch_rows = 200\n");
    let cfg = cfg.to_str().unwrap();
    db.ok(&["--config", cfg, "run", "--once"]);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = mysql_worker(db.source_url.clone(), stop.clone(), |n| {
        let id = (n * 7919) % 2000 + 1;
        Some(match n % 5 {
            0 => format!("UPDATE acct SET a = a + 1 WHERE id = {id}"),
            1 => format!("UPDATE acct SET b = b + {n} WHERE id BETWEEN {id} AND {id} + 40"),
            2 => format!("UPDATE acct SET note = 'note {n}' WHERE id = {id}"),
            3 => format!(
                "BEGIN; UPDATE acct SET a = a + 2 WHERE id = {id}; \
                 UPDATE acct SET note = 'both {n}' WHERE id = {id}; COMMIT"
            ),
            _ => format!("REPLACE INTO acct VALUES ({id}, {n}, {n}, 'replaced {n}')"),
        })
    });
    kill_at_random_moments(&db, cfg, 6, 300);
    stop.store(true, Ordering::Relaxed);
    let ran = writes.join().unwrap();
    assert!(ran > 100, "only {ran} statements ran");
    db.ok(&["--config", cfg, "run", "--once"]);
    let (s, t) = both(&db, "acct", "id, a, b, note");
    assert_eq!(s.len(), 2000);
    assert!(s == t, "the tables differ after {ran} statements");
    let out = db.ok(&["--config", cfg, "verify"]);
    assert!(out.contains("acct: equal"), "{out}");
}

#[test]
fn a_binlog_rotation_mid_stream_loses_nothing() {
    let db = TestDb::new();
    db.ok(&["migrate"]);
    let cfg = config(&db, &["orders"], "");
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    let gen = db.spawn(&["generate", "--rate", "500", "--total", "2000"]);
    wait_until("rows to flow", Duration::from_secs(60), || {
        db.pg_rows("SELECT to_regclass('public.orders')::text")[0][0].is_some()
            && db.pg_i64("SELECT COUNT(*) FROM public.orders") > 300
    });
    db.mysql("FLUSH BINARY LOGS");
    assert!(common::wait_output(gen, Duration::from_secs(60))
        .status
        .success());
    wait_until("every row", Duration::from_secs(60), || {
        db.pg_i64("SELECT COUNT(*) FROM public.orders") == 2000
    });
    assert_eq!(db.assert_orders_equal(), 2000);
    signal(&run.child, "TERM");
    assert!(
        run.wait_exit(Duration::from_secs(30)).0.success(),
        "{}",
        run.log()
    );
}

#[test]
fn tables_without_a_primary_key_are_refused() {
    let db = TestDb::new();
    db.mysql("CREATE TABLE nokey (a INT, b INT)");
    let cfg = config(&db, &["nokey"], "");
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"nokey\" has no primary key"), "{err}");
}

#[test]
fn missing_replication_privileges_are_named() {
    let db = TestDb::new();
    db.mysql("CREATE TABLE t (id INT PRIMARY KEY)");
    let user = format!("{}_u", &db.name[..20]);
    db.mysql(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'; GRANT SELECT ON `{}`.* TO '{user}'@'%'",
        db.name
    ));
    let url = format!("mysql://{user}:pw@127.0.0.1:3306/{}", db.name);
    let cfg = config(&db, &["t"], "");
    let out = db.run(&[
        "--config",
        cfg.to_str().unwrap(),
        "--source",
        &url,
        "run",
        "--once",
    ]);
    db.mysql(&format!("DROP USER '{user}'@'%'"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("REPLICATION SLAVE")
            && err.contains("REPLICATION CLIENT")
            && err.contains("GRANT"),
        "{err}"
    );
}

#[test]
fn a_polled_table_moves_to_binlog_capture_and_no_stale_row_stays() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE items (id INT NOT NULL PRIMARY KEY, v VARCHAR(20), \
           at DATETIME(6) NOT NULL); \
         INSERT INTO items SELECT seq, CONCAT('v', seq), '2026-01-01' + INTERVAL seq SECOND \
           FROM seq_1_to_200",
    );
    let poll = db.config("[[tables]]\nname = \"items\"\ncursor = \"at\"\n");
    let poll = poll.to_str().unwrap();
    db.ok(&["--config", poll, "run", "--once"]);
    // What polling cannot see: deletes, and an update that leaves the cursor alone.
    db.mysql("DELETE FROM items WHERE id <= 20; UPDATE items SET v = 'unseen' WHERE id = 100");
    db.ok(&["--config", poll, "run", "--once"]);
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.items"), 200);

    // Binlog capture refuses to start from a polling position, and says how to move.
    let bin = config(&db, &["items"], "");
    let bin = bin.to_str().unwrap();
    let out = db.run(&["--config", bin, "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("was not written by binlog capture")
            && err.contains("snapshotted again")
            && err.contains("verify --table items --repair")
            && err.contains("DELETE FROM sluice.replication_state WHERE pipeline = '")
            && err.contains("AND table_name = 'items'"),
        "{err}"
    );

    // The way that keeps the target readable: a snapshot over the rows, then a repair.
    db.pg("DELETE FROM sluice.replication_state WHERE table_name = 'items'");
    db.ok(&["--config", bin, "run", "--once"]);
    assert_eq!(
        db.pg_rows("SELECT v FROM public.items WHERE id = 100")[0][0].as_deref(),
        Some("unseen")
    );
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.items"), 200);
    let repaired = db.ok(&["--config", bin, "verify", "--table", "items", "--repair"]);
    assert!(repaired.contains("now equal"), "{repaired}");
    let (s, t) = both(&db, "items", "id, v, @at");
    assert_eq!(s, t);

    // From here the binlog carries every change.
    db.mysql("DELETE FROM items WHERE id = 50; UPDATE items SET v = 'seen' WHERE id = 60");
    db.ok(&["--config", bin, "run", "--once"]);
    let (s, t) = both(&db, "items", "id, v, @at");
    assert_eq!(s, t);
    assert_eq!(t.len(), 179);
}

/// Peak resident memory of a process so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_large_transaction_lands_whole_within_the_memory_bound() {
    const ROWS: i64 = 1_000_000;
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE big (id INT NOT NULL PRIMARY KEY, v INT NOT NULL, pad CHAR(40) NOT NULL); \
         INSERT INTO big SELECT seq, 0, REPEAT('p', 40) FROM seq_1_to_{ROWS}"
    ));
    let cfg = config(&db, &["big"], "");
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    wait_equal(&db, "big", "id, v", &|| run.log());
    // One transaction changes a million rows: about 120 MB of row images.
    let updater = mysql_worker(
        db.source_url.clone(),
        Arc::new(AtomicBool::new(false)),
        |n| (n == 0).then(|| "UPDATE big SET v = 1, pad = REPEAT('q', 40)".to_string()),
    );
    let mut seen = std::collections::BTreeSet::new();
    let mut peak = 0;
    let start = Instant::now();
    loop {
        let done = db.pg_i64("SELECT COUNT(*) FROM public.big WHERE v = 1");
        seen.insert(done);
        peak = peak.max(peak_rss_kib(run.child.id()));
        if done == ROWS {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(240), "{}", run.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    updater.join().unwrap();
    assert!(
        seen.iter().all(|n| *n == 0 || *n == ROWS),
        "a reader saw part of the transaction: {seen:?}"
    );
    assert!(peak > 0 && peak < 64 * 1024, "peak RSS {peak} KiB");
    signal(&run.child, "TERM");
    assert!(run.wait_exit(Duration::from_secs(30)).0.success());
}

#[test]
fn foreign_key_cascades_the_binlog_does_not_carry_apply_on_the_target() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE parent (id INT NOT NULL PRIMARY KEY, name VARCHAR(20)); \
         CREATE TABLE child (id INT NOT NULL PRIMARY KEY, parent_id INT NOT NULL, \
           FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE); \
         CREATE TABLE grandchild (id INT NOT NULL PRIMARY KEY, child_id INT NOT NULL, \
           FOREIGN KEY (child_id) REFERENCES child (id) ON DELETE CASCADE ON UPDATE CASCADE); \
         CREATE TABLE orphan (id INT NOT NULL PRIMARY KEY, parent_id INT NULL, \
           FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE SET NULL ON UPDATE CASCADE); \
         INSERT INTO parent VALUES (1, 'one'), (2, 'two'), (3, 'three'); \
         INSERT INTO child VALUES (10, 1), (11, 1), (20, 2), (30, 3); \
         INSERT INTO grandchild VALUES (100, 10), (101, 11), (200, 20), (300, 30); \
         INSERT INTO orphan VALUES (1, 1), (2, 2), (3, NULL)",
    );
    let cfg = config(&db, &["parent", "child", "grandchild", "orphan"], "");
    let mut run = db.spawn_logged(&["--config", cfg.to_str().unwrap(), "run"], &[]);
    let log = || run.log();
    wait_equal(&db, "grandchild", "id, child_id", &log);
    wait_equal(&db, "orphan", "id, parent_id", &log);
    // The binlog carries the parent's row changes only; InnoDB changes the rest silently.
    db.mysql(
        "DELETE FROM parent WHERE id = 1; \
         UPDATE parent SET id = 200 WHERE id = 2; \
         BEGIN; DELETE FROM child WHERE id = 30; INSERT INTO child VALUES (31, 3); COMMIT",
    );
    wait_equal(&db, "parent", "id, name", &log);
    wait_equal(&db, "child", "id, parent_id", &log);
    wait_equal(&db, "grandchild", "id, child_id", &log);
    wait_equal(&db, "orphan", "id, parent_id", &log);
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM public.child WHERE parent_id = 200"),
        1
    );
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.grandchild"), 1);
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM public.orphan WHERE parent_id IS NULL"),
        2
    );
    assert!(run.log().contains("foreign key mirrored"), "{}", run.log());
    signal(&run.child, "TERM");
    assert!(run.wait_exit(Duration::from_secs(30)).0.success());
}

/// Cascades the target applies itself depend on the order of the source's changes: a
/// `REPLACE` of a referenced parent (a delete and an insert on InnoDB, whose cascade deletes
/// the children) leaves no child on the target either; inserting a parent, a child and
/// deleting the parent in one transaction lands (the child goes with the cascade, no 23503);
/// and 300 mixed parent/child transactions, caught up by one `run --once` that merges many
/// source transactions into each target transaction, end equal.
#[test]
fn cascades_follow_the_source_order_within_and_across_transactions() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE parent (id INT NOT NULL PRIMARY KEY, name VARCHAR(20)); \
         CREATE TABLE child (id INT NOT NULL PRIMARY KEY, parent_id INT NULL, \
           FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE); \
         CREATE TABLE note (id INT NOT NULL PRIMARY KEY, parent_id INT NULL, \
           FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE SET NULL); \
         INSERT INTO parent VALUES (1, 'one'), (2, 'two'); \
         INSERT INTO child VALUES (10, 1), (11, 1), (20, 2); INSERT INTO note VALUES (1, 1); \
         CREATE TABLE outside (id INT NOT NULL PRIMARY KEY); \
         CREATE TABLE stray (id INT NOT NULL PRIMARY KEY, outside_id INT NULL, \
           CONSTRAINT stray_outside FOREIGN KEY (outside_id) REFERENCES outside (id) ON DELETE CASCADE)",
    );
    let tables = ["parent", "child", "note", "stray"];
    let cfg = config(&db, &tables, "");
    let cfg = cfg.to_str().unwrap();
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    let log = || run.log();
    wait_equal(&db, "child", "id, parent_id", &log);
    run.wait_for("reading the binlog", Duration::from_secs(60));
    // A foreign key to a table not replicated: named at start, with what it means.
    let log_now = run.log();
    assert!(
        log_now.contains("stray_outside") && log_now.contains("parent is not replicated"),
        "{log_now}"
    );
    db.mysql(
        "REPLACE INTO parent VALUES (1, 'replaced'); \
         BEGIN; INSERT INTO parent VALUES (3, 'brief'); INSERT INTO child VALUES (30, 3); \
           INSERT INTO note VALUES (3, 3); DELETE FROM parent WHERE id = 3; COMMIT; \
         INSERT INTO child VALUES (12, 1)",
    );
    for (t, cols) in [
        ("parent", "id, name"),
        ("child", "id, parent_id"),
        ("note", "id, parent_id"),
    ] {
        wait_equal(&db, t, cols, &log);
    }
    signal(&run.child, "TERM");
    assert!(
        run.wait_exit(Duration::from_secs(30)).0.success(),
        "{}",
        run.log()
    );
    // A backlog of mixed transactions, caught up at once.
    let mut sql = String::new();
    for i in 0..300 {
        let p = 100 + i % 40;
        sql.push_str(&match i % 5 {
            0 => format!("REPLACE INTO parent VALUES ({p}, 'r{i}'); "),
            1 => format!("INSERT IGNORE INTO parent VALUES ({p}, 'p{i}'); INSERT INTO child SELECT {}, {p} FROM parent WHERE id = {p}; ", 1000 + i),
            2 => format!("BEGIN; INSERT IGNORE INTO parent VALUES ({p}, 'b{i}'); INSERT INTO child SELECT {}, {p} FROM parent WHERE id = {p}; DELETE FROM parent WHERE id = {p}; COMMIT; ", 1000 + i),
            3 => format!("INSERT IGNORE INTO parent VALUES ({p}, 'n{i}'); INSERT INTO note SELECT {}, {p} FROM parent WHERE id = {p}; ", 1000 + i),
            _ => format!("DELETE FROM parent WHERE id = {p}; "),
        });
    }
    db.mysql(&sql);
    let out = db.ok(&["--config", cfg, "run", "--once"]);
    assert!(out.contains("replicated"), "{out}");
    for (t, cols) in [
        ("parent", "id, name"),
        ("child", "id, parent_id"),
        ("note", "id, parent_id"),
    ] {
        let (s, t2) = both(&db, t, cols);
        assert_eq!(s, t2, "{t}");
    }
}

#[test]
fn the_demo_runs_in_binlog_mode_with_lag_in_milliseconds() {
    let db = TestDb::new();
    let cfg = config(&db, &["orders"], "");
    let demo = db.spawn(&["--config", cfg.to_str().unwrap(), "demo", "--rate", "200"]);
    wait_until(
        "the demo to replicate some rows",
        Duration::from_secs(30),
        || {
            db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'orders'") == 1
                && db.pg_i64("SELECT COUNT(*) FROM public.orders") >= 600
        },
    );
    signal(&demo, "INT");
    let out = common::wait_output(demo, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo exited {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    db.assert_orders_equal();
    // Lag is read from commit times the binlog gives in whole seconds: within the second,
    // the moment sluice read the event stands for it, so lag is milliseconds, not the
    // fraction of a second the generator happens to write at.
    let lags: Vec<i64> = stdout
        .lines()
        .filter_map(|l| l.split("lag ").nth(1)?.strip_suffix(" ms")?.parse().ok())
        .collect();
    assert!(!lags.is_empty(), "{stdout}");
    let small = lags.iter().filter(|&&l| l < 100).count();
    assert!(small * 2 > lags.len(), "{stdout}");
}

/// Rolls back, when dropped, the XA transactions of a test still prepared (a test that
/// failed half-way would otherwise leave them holding locks on its database).
struct XaGuard<'a>(&'a TestDb, Vec<String>);

/// Runs `XA COMMIT`/`XA ROLLBACK` (`sql`) from a new connection, again until the server takes
/// it: the preparing connection has just closed, and the server hands a prepared transaction
/// over to other connections only once it has detached it (until then: `XAER_NOTA`).
fn xa_end(db: &TestDb, sql: &str) {
    wait_until(sql, Duration::from_secs(30), || match db.mysql_try(sql) {
        Ok(()) => true,
        Err(e) => {
            assert!(e.contains("XAER_NOTA"), "{sql}: {e}");
            false
        }
    });
}

impl Drop for XaGuard<'_> {
    fn drop(&mut self) {
        for x in &self.1 {
            // Committed already, as when the test passes: nothing to roll back.
            let _ = self.0.mysql_try(&format!("XA ROLLBACK {x}"));
        }
    }
}

#[test]
fn xa_transactions_apply_at_their_commit_and_rolled_back_ones_never() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE a (id INT NOT NULL PRIMARY KEY, v VARCHAR(40)); \
         CREATE TABLE b (id INT NOT NULL PRIMARY KEY, v VARCHAR(40)); \
         CREATE TABLE load_rows (id INT NOT NULL PRIMARY KEY, n INT NOT NULL); \
         INSERT INTO a VALUES (0, 'before'); INSERT INTO b VALUES (0, 'before')",
    );
    let cfg = config(&db, &["a", "b", "load_rows"], "");
    let cfg = cfg.to_str().unwrap();
    // XA ids are the server's, not the database's: each test run has its own.
    let tag = &db.name[db.name.len() - 8..];
    let xid = |n: &str| format!("'{tag}{n}'");
    let (x1, x2, x3, x4, x5) = (xid("1"), xid("2"), xid("3"), xid("4"), xid("5"));
    let x4 = format!("{x4},'branch',7");
    let _guard = XaGuard(&db, vec![x1.clone(), x2.clone(), x4.clone(), x5.clone()]);
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    let log = |run: &common::Logged| run.log();
    wait_equal(&db, "b", "id, v", &|| log(&run));
    // Inserts into another replicated table all along.
    let stop = Arc::new(AtomicBool::new(false));
    let load = mysql_worker(db.source_url.clone(), stop.clone(), |n| {
        Some(format!("INSERT INTO load_rows VALUES ({}, {n})", n + 1))
    });
    // Prepared, touching both tables; a transaction committed meanwhile is applied, the
    // prepared one is not, until its XA COMMIT (from another connection: the preparing one
    // is gone).
    db.mysql(&format!(
        "XA START {x1}; INSERT INTO a VALUES (1, 'x1'); UPDATE b SET v = 'x1' WHERE id = 0; \
         INSERT INTO b VALUES (1, 'x1'); XA END {x1}; XA PREPARE {x1}"
    ));
    db.mysql("INSERT INTO a VALUES (100, 'committed while x1 is prepared')");
    run.wait_until("the commit after the prepare", || {
        db.pg_i64("SELECT COUNT(*) FROM public.a WHERE id = 100") == 1
    });
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.a WHERE id = 1"), 0);
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.b WHERE v = 'x1'"), 0);
    xa_end(&db, &format!("XA COMMIT {x1}"));
    wait_equal(&db, "b", "id, v", &|| log(&run));
    // Prepared, then rolled back: never applied.
    db.mysql(&format!(
        "XA START {x2}; INSERT INTO a VALUES (2, 'x2'); DELETE FROM b WHERE id = 1; \
         XA END {x2}; XA PREPARE {x2}"
    ));
    xa_end(&db, &format!("XA ROLLBACK {x2}"));
    // One phase: an ordinary transaction.
    db.mysql(&format!(
        "XA START {x3}; INSERT INTO a VALUES (3, 'x3'); UPDATE b SET v = 'x3' WHERE id = 1; \
         XA END {x3}; XA COMMIT {x3} ONE PHASE"
    ));
    // A branch qualifier and a format id of its own, committed by the same connection.
    db.mysql(&format!(
        "XA START {x4}; INSERT INTO a VALUES (4, 'x4'); XA END {x4}; XA PREPARE {x4}; \
         XA COMMIT {x4}"
    ));
    wait_equal(&db, "a", "id, v", &|| log(&run));
    wait_equal(&db, "b", "id, v", &|| log(&run));
    // sluice stops while an XA transaction is prepared and later ones commit: restarted, it
    // still applies the prepared one at its commit.
    db.mysql(&format!(
        "XA START {x5}; INSERT INTO a VALUES (5, 'x5'); INSERT INTO b VALUES (5, 'x5'); \
         XA END {x5}; XA PREPARE {x5}"
    ));
    db.mysql("INSERT INTO b VALUES (50, 'committed while x5 is prepared')");
    run.wait_until("the commit after the prepare", || {
        db.pg_i64("SELECT COUNT(*) FROM public.b WHERE id = 50") == 1
    });
    signal(&run.child, "TERM");
    assert!(
        run.wait_exit(Duration::from_secs(30)).0.success(),
        "{}",
        run.log()
    );
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    db.mysql("INSERT INTO b VALUES (51, 'after the restart')");
    run.wait_until("the commit after the restart", || {
        db.pg_i64("SELECT COUNT(*) FROM public.b WHERE id = 51") == 1
    });
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.a WHERE id = 5"), 0);
    xa_end(&db, &format!("XA COMMIT {x5}"));
    stop.store(true, Ordering::Relaxed);
    assert!(load.join().unwrap() > 0);
    for (table, cols) in [("a", "id, v"), ("b", "id, v"), ("load_rows", "id, n")] {
        wait_equal(&db, table, cols, &|| log(&run));
    }
    assert!(!run.log().contains("1236"), "{}", run.log());
    signal(&run.child, "TERM");
    assert!(
        run.wait_exit(Duration::from_secs(30)).0.success(),
        "{}",
        run.log()
    );
}

/// A table added to a pipeline that streams is copied beside the stream, a chunk at a time
/// (each at the exact binlog position of its own snapshot): the streaming table's changes
/// keep arriving while the copy runs; inserts, updates, deletes and key changes inside the
/// table being copied all end right; a kill -9 in the middle resumes the copy where it got
/// instead of starting it over.
#[test]
fn a_table_added_later_is_copied_beside_the_stream() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE busy (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL); \
         CREATE TABLE big (id INT NOT NULL PRIMARY KEY, v INT NOT NULL, pad CHAR(100) NOT NULL DEFAULT 'x'); \
         INSERT INTO big (id, v) SELECT seq, seq FROM seq_1_to_150000",
    );
    // Small chunks, so the copy takes a while among the writes.
    let extra = "[pipeline]\nbatch_rows = 300\n";
    stream_busy_alone(&db, extra);

    // Writes to both tables all along: `busy` gets rows, `big` every kind of change,
    // across the whole key range (behind, inside and ahead of the chunk being copied).
    let stop = Arc::new(AtomicBool::new(false));
    let busy = mysql_worker(db.source_url.clone(), stop.clone(), |n| {
        std::thread::sleep(Duration::from_millis(5));
        Some(format!("INSERT INTO busy (v) VALUES ({n})"))
    });
    // Half of `big`'s writes land just ahead of what the target holds: inside the chunk
    // being copied, or the next.
    let frontier = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let watcher = std::thread::spawn({
        let (frontier, stop, url) = (frontier.clone(), stop.clone(), db.target_url.clone());
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sea_orm::sqlx::Connection;
                let mut pg = sea_orm::sqlx::PgConnection::connect(&url).await.unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let max: Option<i64> = sea_orm::sqlx::query_scalar(
                        "SELECT MAX(id)::bigint FROM public.big WHERE id <= 150000",
                    )
                    .fetch_one(&mut pg)
                    .await
                    .unwrap_or(None);
                    frontier.store(max.unwrap_or(0), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    let big = mysql_worker(db.source_url.clone(), stop.clone(), move |n| {
        std::thread::sleep(Duration::from_millis(2));
        let k = if n % 2 == 0 {
            (frontier.load(Ordering::Relaxed) + 1 + (n as i64 * 37) % 600).min(150_000) as usize
        } else {
            (n * 7919) % 150_000 + 1
        };
        Some(match n % 5 {
            0 => format!("UPDATE big SET v = v + 1 WHERE id = {k}"),
            1 => format!("DELETE FROM big WHERE id = {k}"),
            2 => format!(
                "INSERT INTO big (id, v) VALUES ({}, {n}) ON DUPLICATE KEY UPDATE v = {n}",
                150_000 + n
            ),
            3 => format!("UPDATE IGNORE big SET id = id + 1000000 WHERE id = {k}"),
            _ => format!("REPLACE INTO big (id, v) VALUES ({k}, {n})"),
        })
    });
    let both_tables = config(&db, &["busy", "big"], extra);
    let args = ["--config", both_tables.to_str().unwrap(), "run"];
    // Every chunk is applied only after the stream has read past its position (as when
    // the binlog had the next transactions before the engine committed them): the
    // table's changes since then must follow the chunk again.
    let debug = [
        ("RUST_LOG", "info,sluice::source::binlog::source=debug"),
        ("SLUICE_FAILPOINT", "chunk_late"),
    ];
    let mut run = db.spawn_logged(&args, &debug);
    run.wait_for(
        "copy of the table started beside the stream",
        Duration::from_secs(60),
    );
    // While `big` is being copied, `busy`'s new rows arrive.
    let before = db.pg_i64("SELECT COUNT(*) FROM public.busy");
    wait_until(
        "busy's rows to arrive during the copy",
        Duration::from_secs(30),
        || db.pg_i64("SELECT COUNT(*) FROM public.busy") >= before + 50,
    );
    let copied = db.pg_i64("SELECT COUNT(*) FROM public.big");
    assert!(
        !run.log().contains("copy of the table done"),
        "the copy must still run while busy streams (it took {copied} rows so far); make it longer: {}",
        run.log()
    );
    // `status` shows how far the copy got: rows, chunks, of about how many, how long left.
    let status: serde_json::Value = serde_json::from_str(&db.ok(&[
        "--config",
        both_tables.to_str().unwrap(),
        "status",
        "--json",
    ]))
    .unwrap();
    let big_status = status["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "big")
        .unwrap();
    let copy = &big_status["copy"];
    assert_eq!(copy["beside"], true, "{big_status}");
    let rows = copy["rows_copied"].as_u64().unwrap();
    assert!(
        rows > 0 && copy["chunks"].as_u64().unwrap() > 0,
        "{big_status}"
    );
    // The source's estimate (InnoDB's, over 100,000 rows) is near its 150,000 rows.
    let estimated = copy["rows_estimated"].as_u64().unwrap();
    assert!((100_000..=250_000).contains(&estimated), "{big_status}");
    let percent = copy["percent"].as_f64().unwrap();
    assert!(percent > 0.0 && percent < 100.0, "{big_status}");
    assert!(copy["eta_seconds"].as_f64().unwrap() > 0.0, "{big_status}");
    let text = db.ok(&["--config", both_tables.to_str().unwrap(), "status"]);
    assert!(
        text.contains("copy beside the stream after key (")
            && text.contains("its changes applied up to binlog")
            && text.contains(" rows (")
            && text.contains("s left"),
        "{text}"
    );
    assert!(
        status["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["table"] == "busy" && t["copy"].is_null()),
        "{status}"
    );
    // Killed mid-copy: the next run goes on after the last chunk applied.
    wait_until("a part of big", Duration::from_secs(60), || {
        db.pg_i64("SELECT COUNT(*) FROM public.big") >= 20_000
    });
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    let kept = db.pg_i64("SELECT COUNT(*) FROM public.big");
    assert!(
        !run.log().contains("copy of the table done"),
        "{}",
        run.log()
    );
    let run = db.spawn_logged(&args, &debug);
    run.wait_for(
        "copy of the table resumed beside the stream",
        Duration::from_secs(60),
    );
    assert!(db.pg_i64("SELECT COUNT(*) FROM public.big") >= kept);
    run.wait_for("copy of the table done", Duration::from_secs(180));
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    big.join().unwrap();
    watcher.join().unwrap();
    wait_equal(&db, "busy", "id, v", &|| run.log());
    wait_equal(&db, "big", "id, v, pad", &|| run.log());
    verify_then_stop(&db, both_tables.to_str().unwrap(), run);
}

/// A table copied beside the stream gets its source's secondary indexes off the lane (`CREATE
/// INDEX CONCURRENTLY` on a connection of its own): while the build waits (here for a
/// session holding a lock on the table, as a long report would), the other table's changes
/// and the copied table's own keep arriving. A process killed during the build leaves an
/// invalid index, which the next start drops and builds again.
#[test]
fn a_copied_tables_indexes_are_built_off_the_lane() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE busy (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL); \
         CREATE TABLE big (id INT NOT NULL PRIMARY KEY, v INT NOT NULL, code CHAR(12) NOT NULL, \
                           UNIQUE KEY u (code), KEY k (v)); \
         INSERT INTO big SELECT seq, seq MOD 1000, LPAD(seq, 12, '0') FROM seq_1_to_60000",
    );
    // Small chunks: the copy lasts long enough for the lock to be taken before its end.
    let extra = "[pipeline]\nbatch_rows = 500\n";
    let (both_tables, mut run) = copy_big_beside_busy(&db, extra);
    let args = ["--config", both_tables.to_str().unwrap(), "run"];
    // A session holds a lock on the target table that a plain CREATE INDEX would queue
    // behind (and every table in the lane with it); rows go on being written meanwhile.
    let holder = hold_lock(&db, "big", "ROW EXCLUSIVE");
    run.wait_for(
        "building the copied table's indexes beside the stream",
        Duration::from_secs(120),
    );
    let valid = |db: &TestDb| {
        db.pg_i64(
            "SELECT COUNT(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname IN ('big_u', 'big_k') AND i.indisvalid \
               AND obj_description(c.oid, 'pg_class') LIKE 'sluice: source index %'",
        )
    };
    // The lane goes on while the build waits for the lock: both tables' changes arrive.
    busy_rows_arrive(&db, "v = v + 1", "busy's rows during the build");
    wait_until(
        "big's changes during the build",
        Duration::from_secs(30),
        || db.pg_i64("SELECT COUNT(*) FROM public.big WHERE id <= 10 AND v = id + 1") == 10,
    );
    assert_eq!(valid(&db), 0, "the build must be waiting: {}", run.log());
    // Killed during the build: the build ends with the process (it looks for its client
    // every second while it waits), and the index it started is left invalid.
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    wait_until(
        "the build to end with the process",
        Duration::from_secs(30),
        || {
            db.pg_i64(&format!(
                "SELECT COUNT(*) FROM pg_stat_progress_create_index p JOIN pg_database d \
             ON d.oid = p.datid WHERE d.datname = '{}'",
                db.name
            )) == 0
        },
    );
    release_lock(&db, holder);
    assert!(
        db.pg_i64(
            "SELECT COUNT(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname IN ('big_u', 'big_k') AND NOT i.indisvalid"
        ) > 0,
        "a killed CREATE INDEX CONCURRENTLY leaves its index invalid"
    );
    // The next start drops it and builds both.
    let run = db.spawn_logged(&args, &[]);
    run.wait_until("both indexes valid", || valid(&db) == 2);
    assert_eq!(
        db.pg_i64(
            "SELECT COUNT(*) FROM pg_constraint WHERE conname = 'big_u' AND contype = 'u' AND condeferrable"
        ),
        1,
        "the unique index is a deferred unique constraint, as a copy's in the lane: {}",
        run.log()
    );
    db.mysql("INSERT INTO busy (v) VALUES (1); UPDATE big SET code = 'swapped' WHERE id = 60000");
    wait_equal(&db, "busy", "id, v", &|| run.log());
    wait_equal(&db, "big", "id, v, code", &|| run.log());
    // Built beside the stream to the end, with the process alive: the table copied again
    // (asked for) after its indexes were dropped by hand.
    db.pg("DROP INDEX public.big_k; ALTER TABLE public.big DROP CONSTRAINT big_u");
    db.ok(&[
        "--config",
        both_tables.to_str().unwrap(),
        "snapshot",
        "--table",
        "big",
    ]);
    run.wait_until("both indexes built again", || valid(&db) == 2);
    assert!(
        run.log().matches("index built beside the stream").count() >= 2,
        "{}",
        run.log()
    );
    wait_equal(&db, "big", "id, v, code", &|| run.log());
    verify_then_stop(&db, both_tables.to_str().unwrap(), run);
}

/// A copy's chunks commit on a target connection of their own: a session holding a lock on
/// the copied table's target (a report, a `pg_dump`) holds up its copy, not the other
/// tables. In one connection the busy table's rows would wait behind the blocked chunk.
#[test]
fn a_lock_on_a_table_being_copied_holds_up_its_copy_not_the_other_tables() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE busy (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL); \
         CREATE TABLE big (id INT NOT NULL PRIMARY KEY, v INT NOT NULL); \
         INSERT INTO big SELECT seq, seq FROM seq_1_to_200000",
    );
    // Chunks of 100 rows: the copy lasts well past the moment the lock is taken.
    let extra = "[pipeline]\nbatch_rows = 200\n";
    let (both_tables, run) = copy_big_beside_busy(&db, extra);
    // SHARE mode: reads go on, every write to the table waits.
    let holder = hold_lock(&db, "big", "SHARE");
    busy_rows_arrive(
        &db,
        "v = -v",
        "busy's rows while the copy waits for the lock",
    );
    // The copy's own connection is the one waiting.
    wait_until(
        "the copy's connection to wait for the lock",
        Duration::from_secs(30),
        || {
            db.pg_i64(&format!(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{}' \
             AND application_name = 'sluice copy writer 0' AND wait_event_type = 'Lock'",
                db.name
            )) == 1
        },
    );
    // The copy was held up: had it ended before the lock, this test would show nothing.
    let copied = db.pg_i64("SELECT COUNT(*) FROM public.big");
    assert!(
        copied < 200_000,
        "the copy ended before the lock was taken ({copied} rows); make it longer: {}",
        run.log()
    );
    release_lock(&db, holder);
    db.mysql("INSERT INTO busy (v) VALUES (1)");
    wait_equal(&db, "busy", "id, v", &|| run.log());
    wait_equal(&db, "big", "id, v", &|| run.log());
    verify_then_stop(&db, both_tables.to_str().unwrap(), run);
}

/// `busy` streamed alone, then a run of `busy` and `big` (`extra` added to both
/// configurations), once `big`'s copy beside the stream has started.
fn copy_big_beside_busy(db: &TestDb, extra: &str) -> (std::path::PathBuf, common::Logged) {
    stream_busy_alone(db, extra);
    let both_tables = config(db, &["busy", "big"], extra);
    let run = db.spawn_logged(&["--config", both_tables.to_str().unwrap(), "run"], &[]);
    run.wait_for(
        "copy of the table started beside the stream",
        Duration::from_secs(60),
    );
    (both_tables, run)
}

/// Fifty rows inserted into `busy` (which held one) and `big`'s first ten rows updated with
/// `set`, in one statement: waits for busy's rows on the target.
fn busy_rows_arrive(db: &TestDb, set: &str, what: &str) {
    db.mysql(&format!(
        "INSERT INTO busy (v) SELECT seq FROM seq_1_to_50; UPDATE big SET {set} WHERE id <= 10"
    ));
    wait_until(what, Duration::from_secs(30), || {
        db.pg_i64("SELECT COUNT(*) FROM public.busy") == 51
    });
}

/// A session that holds a lock on the target's `public.<table>` in `mode` (`SHARE`, …), once
/// it is granted.
fn hold_lock(db: &TestDb, table: &str, mode: &str) -> std::process::Child {
    let holder = std::process::Command::new("psql")
        .args([
            db.target_url.as_str(),
            "-q",
            "-c",
            &format!("BEGIN; LOCK TABLE public.{table} IN {mode} MODE; SELECT pg_sleep(600)"),
        ])
        .env("PGAPPNAME", "lock holder")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    // pg_locks names the mode without spaces, in words: ROW EXCLUSIVE → RowExclusiveLock.
    let held: String = mode
        .split(' ')
        .map(|w| w[..1].to_string() + &w[1..].to_lowercase())
        .collect::<String>()
        + "Lock";
    wait_until("the lock to be held", Duration::from_secs(30), || {
        db.pg_i64(&format!(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = '{table}' AND l.mode = '{held}' AND l.granted \
               AND l.pid <> pg_backend_pid()"
        )) > 0
    });
    holder
}

/// Ends [`hold_lock`]'s session (a session asleep does not notice its client is gone).
fn release_lock(db: &TestDb, mut holder: std::process::Child) {
    db.pg(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'lock holder' AND datname = '{}'",
        db.name
    ));
    let _ = holder.kill();
    let _ = holder.wait();
}

/// A run of table `busy` alone, until its first row streams, then stopped: `busy` streams
/// when tables are added to the configuration after.
fn stream_busy_alone(db: &TestDb, extra: &str) {
    let first = config(db, &["busy"], extra);
    let mut run = db.spawn_logged(&["--config", first.to_str().unwrap(), "run"], &[]);
    run.wait_for("reading the binlog", Duration::from_secs(60));
    db.mysql("INSERT INTO busy (v) VALUES (0)");
    wait_until("busy to stream", Duration::from_secs(60), || {
        db.pg_i64("SELECT COUNT(*) FROM public.busy") == 1
    });
    signal(&run.child, "TERM");
    assert!(run.wait_exit(Duration::from_secs(30)).0.success());
}

/// Connections the process `pid` holds to the source's port.
fn source_connections(pid: u32) -> usize {
    let port = common::mysql_server()
        .rsplit(':')
        .next()
        .unwrap_or("3306")
        .to_string();
    let out = std::process::Command::new("ss")
        .args(["-tnpH", "state", "established"])
        .output()
        .expect("ss (iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|peer| peer.ends_with(&format!(":{port}")))
                && l.contains(&format!("pid={pid},"))
        })
        .count()
}

/// Three tables added while another streams are copied beside the stream at once, each
/// chunk on a connection of its own, within `max_source_connections` (5: the stream, the
/// helper and three readers): all three make progress together (`status`), the process
/// never holds more connections to the source than allowed, and all end equal under
/// writes.
#[test]
fn three_tables_are_copied_at_once_within_the_connection_limit() {
    let db = TestDb::new();
    db.mysql("CREATE TABLE busy (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)");
    for t in ["c1", "c2", "c3"] {
        db.mysql(&format!(
            "CREATE TABLE {t} (id INT NOT NULL PRIMARY KEY, v INT NOT NULL, pad CHAR(100) NOT NULL DEFAULT 'x'); \
             INSERT INTO {t} (id, v) SELECT seq, seq FROM seq_1_to_40000"
        ));
    }
    let extra = "[pipeline]\nbatch_rows = 300\nmax_source_connections = 5\n";
    stream_busy_alone(&db, extra);

    let stop = Arc::new(AtomicBool::new(false));
    let busy = mysql_worker(db.source_url.clone(), stop.clone(), |n| {
        std::thread::sleep(Duration::from_millis(5));
        Some(format!("INSERT INTO busy (v) VALUES ({n})"))
    });
    let writes = mysql_worker(db.source_url.clone(), stop.clone(), |n| {
        std::thread::sleep(Duration::from_millis(5));
        let (t, k) = (n % 3 + 1, (n * 7919) % 40_000 + 1);
        Some(match n % 3 {
            0 => format!("UPDATE c{t} SET v = v + 1 WHERE id = {k}"),
            1 => format!("DELETE FROM c{t} WHERE id = {k}"),
            _ => format!("INSERT INTO c{t} (id, v) VALUES ({}, {n})", 40_000 + n),
        })
    });
    let all = config(&db, &["busy", "c1", "c2", "c3"], extra);
    let cfg = all.to_str().unwrap();
    let run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    let pid = run.child.id();
    let (mut together, mut peak) = (false, 0);
    let started = Instant::now();
    while !together || !run.log().contains("copy of the table done") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the three copies never ran together (peak {peak} source connections): {}",
            run.log()
        );
        peak = peak.max(source_connections(pid));
        let status: serde_json::Value =
            serde_json::from_str(&db.ok(&["--config", cfg, "status", "--json"])).unwrap();
        let copying = status["tables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["copy"]["rows_copied"].as_u64().is_some_and(|n| n > 0))
            .count();
        together |= copying == 3;
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until("the three copies done", Duration::from_secs(180), || {
        peak = peak.max(source_connections(pid));
        run.log().matches("copy of the table done").count() == 3
    });
    // The stream and the helper, and at least two readers at once; never past the limit.
    assert!((4..=5).contains(&peak), "peak {peak} source connections");
    // The copies done, the readers' connections go back to the server.
    wait_until(
        "the readers' connections closed",
        Duration::from_secs(30),
        || source_connections(pid) <= 2,
    );
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    writes.join().unwrap();
    for t in ["busy", "c1", "c2", "c3"] {
        wait_equal(&db, t, "id, v", &|| run.log());
    }
    verify_then_stop(&db, cfg, run);
}

/// `sluice snapshot --table T` while `run` runs: T's target, edited by hand (rows deleted,
/// changed, added), is emptied and copied again beside the stream, and ends equal while
/// the other table streams on. A table the pipeline does not replicate is refused, and
/// then nothing is asked for.
#[test]
fn a_table_asked_for_is_copied_again_while_the_others_stream() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE a (id INT NOT NULL PRIMARY KEY, v INT NOT NULL); \
         INSERT INTO a SELECT seq, seq FROM seq_1_to_20000; \
         CREATE TABLE b (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)",
    );
    let cfg = config(&db, &["a", "b"], "[pipeline]\nbatch_rows = 500\n");
    let cfg = cfg.to_str().unwrap();
    let mut run = db.spawn_logged(&["--config", cfg, "run"], &[]);
    wait_equal(&db, "a", "id, v", &|| run.log());
    // The target drifts: edited by hand.
    db.pg(
        "DELETE FROM public.a WHERE id <= 10; UPDATE public.a SET v = -1 WHERE id = 20; \
           INSERT INTO public.a VALUES (999999, 1)",
    );
    let out = db.run(&[
        "--config", cfg, "snapshot", "--table", "nope", "--table", "a",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("has never replicated \"nope\""), "{err}");
    assert_eq!(
        db.pg_i64(
            "SELECT COUNT(*) FROM sluice.replication_state WHERE snapshot_requested IS NOT NULL"
        ),
        0
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writes = mysql_worker(db.source_url.clone(), stop.clone(), |n| {
        std::thread::sleep(Duration::from_millis(3));
        Some(match n % 3 {
            0 => format!("INSERT INTO b (v) VALUES ({n})"),
            1 => format!(
                "UPDATE a SET v = v + 1 WHERE id = {}",
                (n * 7919) % 20000 + 1
            ),
            _ => format!("DELETE FROM a WHERE id = {}", (n * 104729) % 20000 + 1),
        })
    });
    let asked = db.ok(&["--config", cfg, "snapshot", "--table", "a"]);
    assert!(asked.contains("asked for a new copy of a"), "{asked}");
    run.wait_for("copying the table again", Duration::from_secs(30));
    run.wait_for(
        "copy of the table done beside the stream",
        Duration::from_secs(120),
    );
    stop.store(true, Ordering::Relaxed);
    writes.join().unwrap();
    wait_equal(&db, "a", "id, v", &|| run.log());
    wait_equal(&db, "b", "id, v", &|| run.log());
    assert_eq!(
        db.pg_i64(
            "SELECT COUNT(*) FROM sluice.replication_state WHERE snapshot_requested IS NOT NULL"
        ),
        0
    );
    signal(&run.child, "TERM");
    assert!(run.wait_exit(Duration::from_secs(30)).0.success());
}
