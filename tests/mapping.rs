//! Choosing what lands on the target, in both capture modes, against real MariaDB and
//! PostgreSQL: `exclude_columns` keeps columns off the target (never selected; skipped in
//! binlog row images), including a column of a type sluice cannot carry and the indexes on
//! it; verify compares without them; dropping an excluded column on the source changes
//! nothing; a pattern's exclusions apply to every table it takes, also to a column added
//! later; an excluded key, cursor or misspelt column is refused at start, all at once.

mod common;

use std::time::Duration;

use common::{signal, TestDb};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Poll,
    Binlog,
}

fn config(db: &TestDb, mode: Mode, tables: &str) -> String {
    let head = match mode {
        Mode::Poll => String::new(),
        Mode::Binlog => {
            db.assert_binlog_on();
            "[source]\ncapture = \"binlog\"\n".to_string()
        }
    };
    let path = db.config(&format!("{head}{tables}"));
    path.to_str().unwrap().to_string()
}

fn cursor(mode: Mode) -> &'static str {
    match mode {
        Mode::Poll => "cursor = \"updated\"\n",
        Mode::Binlog => "",
    }
}

const UPDATED: &str = "updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) \
                       ON UPDATE CURRENT_TIMESTAMP(6)";

/// The target table's columns, in order.
fn target_columns(db: &TestDb, table: &str) -> Vec<String> {
    db.pg_rows(&format!(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY ordinal_position"
    ))
    .into_iter()
    .filter_map(|r| r[0].clone())
    .collect()
}

/// `sluice verify` with `cfg` finds the target equal to the source through the mapping.
fn verify_equal(db: &TestDb, cfg: &str, why: &str) {
    let out = db.run(&["--config", cfg, "verify"]);
    assert!(
        out.status.success(),
        "{why}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the kept columns of `table` are equal on both sides.
fn wait_equal(db: &TestDb, table: &str, cols: &str, log: &dyn Fn() -> String) {
    common::wait_equal(db, table, cols, log);
}

fn excluded_columns_never_reach_the_target(mode: Mode) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE customers (id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(40), \
           password_hash VARCHAR(64) NOT NULL, email VARCHAR(80), home POINT, {UPDATED}, \
           KEY by_hash (password_hash), KEY by_email (email)); \
         INSERT INTO customers (id, name, password_hash, email, home) \
           SELECT seq, CONCAT('n', seq), SHA2(seq, 256), CONCAT('e', seq, '@x'), POINT(seq, seq) \
           FROM seq_1_to_50"
    ));
    let cfg = config(
        &db,
        mode,
        &format!(
            "[[tables]]\nname = \"customers\"\n{}exclude_columns = [\"password_hash\", \"HOME\"]\n",
            cursor(mode)
        ),
    );
    let cols = "id, name, email";
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    wait_equal(&db, "customers", cols, &|| run.log());
    assert_eq!(
        target_columns(&db, "customers"),
        ["id", "name", "email", "updated"],
        "the excluded columns (one of a type sluice cannot carry) are not on the target"
    );
    // Indexes are built once the copy is over (binlog capture: beside the stream).
    let indexes = || {
        format!(
            "{:?}",
            db.pg_rows(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'customers'",
            )
        )
    };
    run.wait_until("the kept column's index", || indexes().contains("email"));
    assert!(
        !indexes().contains("password_hash"),
        "the index on the excluded column is not mirrored: {}",
        indexes()
    );

    // Inserts, updates (of an excluded column alone too) and, in binlog capture, deletes
    // stream as usual.
    db.mysql(
        "INSERT INTO customers (id, name, password_hash, email) VALUES (51, 'new', 'h', 'n@x'); \
         UPDATE customers SET name = 'renamed', password_hash = 'changed' WHERE id = 2; \
         UPDATE customers SET password_hash = 'only' WHERE id = 3",
    );
    if mode == Mode::Binlog {
        db.mysql("DELETE FROM customers WHERE id = 4");
    }
    wait_equal(&db, "customers", cols, &|| run.log());
    verify_equal(&db, &cfg, "verify compares the kept columns");

    // The source drops an excluded column: nothing to follow on the target.
    db.mysql("ALTER TABLE customers DROP COLUMN password_hash");
    db.mysql("UPDATE customers SET email = 'after@x' WHERE id = 5");
    wait_equal(&db, "customers", cols, &|| run.log());
    assert_eq!(
        target_columns(&db, "customers"),
        ["id", "name", "email", "updated"]
    );
    assert!(!run.log().contains("ERROR"), "{}", run.log());
    run.stop();

    // Started again, the name no column has is refused: it may be misspelt, and a misspelt
    // exclusion lets its column through.
    let out = db.run(&["--config", &cfg, "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("exclude_columns names \"password_hash\", which the table does not have"),
        "{err}"
    );
}

#[test]
fn poll_excluded_columns_never_reach_the_target() {
    excluded_columns_never_reach_the_target(Mode::Poll);
}

#[test]
fn binlog_excluded_columns_never_reach_the_target() {
    excluded_columns_never_reach_the_target(Mode::Binlog);
}

#[test]
fn a_patterns_excluded_columns_apply_to_every_table_it_takes() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE crm_a (id INT NOT NULL PRIMARY KEY, v INT, secret VARCHAR(20)); \
         CREATE TABLE crm_b (id INT NOT NULL PRIMARY KEY, v INT); \
         INSERT INTO crm_a VALUES (1, 1, 's1'), (2, 2, 's2'); \
         INSERT INTO crm_b VALUES (1, 1)",
    );
    let cfg = config(
        &db,
        Mode::Binlog,
        "[[tables]]\nname = \"crm_*\"\nexclude_columns = [\"secret\"]\n",
    );
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    wait_equal(&db, "crm_a", "id, v", &|| run.log());
    wait_equal(&db, "crm_b", "id, v", &|| run.log());
    assert_eq!(target_columns(&db, "crm_a"), ["id", "v"]);
    // A column added later: followed, unless the pattern excludes it.
    db.mysql(
        "ALTER TABLE crm_b ADD COLUMN secret VARCHAR(20), ADD COLUMN note VARCHAR(20); \
         INSERT INTO crm_b VALUES (2, 2, 'hidden', 'shown')",
    );
    run.wait_until("the added column on the target", || {
        target_columns(&db, "crm_b").contains(&"note".to_string())
    });
    wait_equal(&db, "crm_b", "id, v, note", &|| run.log());
    assert_eq!(target_columns(&db, "crm_b"), ["id", "v", "note"]);
    run.stop();
}

#[test]
fn an_excluded_key_cursor_or_unknown_column_is_refused_at_start() {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE a (id INT NOT NULL PRIMARY KEY, v INT, {UPDATED}); \
         CREATE TABLE b (id INT NOT NULL PRIMARY KEY, v INT, {UPDATED})"
    ));
    // The table's own key, and a name the table lacks: both named, in one run.
    let cfg = config(
        &db,
        Mode::Poll,
        "[[tables]]\nname = \"a\"\ncursor = \"updated\"\nexclude_columns = [\"id\"]\n\
         [[tables]]\nname = \"b\"\ncursor = \"updated\"\nexclude_columns = [\"secrte\"]\n",
    );
    let out = db.run(&["--config", &cfg, "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("exclude_columns names \"id\", which is in the table's primary key"),
        "{err}"
    );
    assert!(
        err.contains("exclude_columns names \"secrte\", which the table does not have (its columns: id, v, updated)"),
        "{err}"
    );
    // The cursor: refused as the configuration is read.
    let cfg = config(
        &db,
        Mode::Poll,
        "[[tables]]\nname = \"a\"\ncursor = \"updated\"\nexclude_columns = [\"updated\"]\n",
    );
    let out = db.run(&["--config", &cfg, "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("which is in its cursor"), "{err}");
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename IN ('a', 'b')"),
        0,
        "nothing was replicated"
    );
}

#[test]
fn every_mapping_problem_of_a_table_is_reported_at_once() {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE c (id INT NOT NULL PRIMARY KEY, email VARCHAR(80), born DATE, \
         amount DECIMAL(30,2), {UPDATED})"
    ));
    // Seven mistakes in one table: each is named, with its fix, in the one failed start.
    let cfg = config(
        &db,
        Mode::Binlog,
        "[[tables]]\nname = \"c\"\nexclude_columns = [\"passwrd\", \"emial\"]\n\
         rename_columns = { fname = \"first_name\" }\n\
         mask_columns = { id = \"redact\", born = \"sha256\" }\n\
         column_types = { amount = \"integer\", email = \"bytea\" }\n\
         where = \"regoin = 'EU'\"\n",
    );
    let out = db.run(&["--config", &cfg, "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for said in [
        "exclude_columns names \"passwrd\", \"emial\", which the table does not have",
        "rename_columns names \"fname\", which the table does not have",
        "mask_columns names \"id\", which is in the table's primary key",
        "a sha256 mask, which takes text",
        "column_types gives \"amount\" (decimal(30,2)) the type integer, which cannot hold",
        "column_types gives \"email\" the type \"bytea\", which column_types does not take",
        "the table has no column \"regoin\"",
    ] {
        assert!(err.contains(said), "{said:?} missing from:\n{err}");
    }
    assert!(
        err.contains("1 of the 1 tables cannot be replicated as configured (7 problems)"),
        "{err}"
    );
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'c'"),
        0,
        "nothing was replicated"
    );
}

#[test]
fn a_column_excluded_after_it_was_replicated_stays_and_gets_null() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT, note VARCHAR(20) NOT NULL); \
         INSERT INTO t VALUES (1, 1, 'kept')",
    );
    let before = config(&db, Mode::Binlog, "[[tables]]\nname = \"t\"\n");
    db.ok(&["--config", &before, "run", "--once"]);
    let after = config(
        &db,
        Mode::Binlog,
        "[[tables]]\nname = \"t\"\nexclude_columns = [\"note\"]\n",
    );
    db.mysql("INSERT INTO t VALUES (2, 2, 'not copied'); UPDATE t SET v = 10 WHERE id = 1");
    db.ok(&["--config", &after, "run", "--once"]);
    assert_eq!(
        db.pg_rows("SELECT id::text, v::text, note FROM public.t ORDER BY id"),
        vec![
            vec![Some("1".into()), Some("10".into()), Some("kept".into())],
            vec![Some("2".into()), Some("2".into()), None],
        ],
        "the column stays with what it had, and new rows leave it NULL"
    );
}

/// The target's rows of `crm.people`, as text.
fn people(db: &TestDb) -> Vec<Vec<Option<String>>> {
    db.pg_rows("SELECT id::text, first_name, email, phone, note FROM crm.people ORDER BY people.id")
}

/// `crm.people` as the source's `customers` masked: email hashed in MySQL (SHA2 unsalted,
/// or the HMAC the test computes in SQL), phone NULL, note a constant.
fn expected(db: &TestDb, email: &str) -> Vec<Vec<Option<String>>> {
    db.mysql_rows(&format!(
        "SELECT CAST(id AS CHAR), fname, {email}, NULL, IF(note IS NULL, NULL, 'n/a') \
         FROM customers ORDER BY id"
    ))
}

fn mapped_tables_land_renamed_and_masked(mode: Mode) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE customers (id INT NOT NULL PRIMARY KEY, fname VARCHAR(20), \
           email VARCHAR(80) NOT NULL, phone VARCHAR(20), note VARCHAR(20) DEFAULT 'x', {UPDATED}, \
           UNIQUE KEY by_email (email), KEY by_fname (fname)); \
         INSERT INTO customers (id, fname, email, phone, note) \
           SELECT seq, CONCAT('f', seq), CONCAT('user', seq, '@example.com'), '555', \
             IF(seq % 2, 'private', NULL) FROM seq_1_to_20"
    ));
    // Polling hashes plainly; binlog capture with a salt (an HMAC).
    let (salt_line, email) = match mode {
        Mode::Poll => (String::new(), "SHA2(email, 256)".to_string()),
        Mode::Binlog => {
            let salt = std::env::temp_dir().join(format!("{}-salt", db.name));
            std::fs::write(&salt, b"pepper").unwrap();
            // HMAC-SHA256 with key "pepper" (6 bytes, zero-padded to 64), in MySQL.
            let pad = |x: u8| -> String {
                let mut k = b"pepper".to_vec();
                k.resize(64, 0);
                k.iter().map(|b| format!("{:02x}", b ^ x)).collect()
            };
            (
                format!("[pipeline]\nmask_salt_file = \"{}\"\n", salt.display()),
                format!(
                    "SHA2(CONCAT(UNHEX('{}'), UNHEX(SHA2(CONCAT(UNHEX('{}'), email), 256))), 256)",
                    pad(0x5c),
                    pad(0x36)
                ),
            )
        }
    };
    let cfg = config(
        &db,
        mode,
        &format!(
            "{salt_line}[[tables]]\nname = \"customers\"\n{}target = \"crm.people\"\n\
             rename_columns = {{ fname = \"first_name\" }}\n\
             mask_columns = {{ email = \"sha256\", phone = \"null\", note = \"constant:n/a\" }}\n",
            cursor(mode)
        ),
    );
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    run.wait_until("the rows in crm.people", || {
        db.pg_i64(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'crm' AND tablename = 'people'",
        ) == 1
            && people(&db) == expected(&db, &email)
    });
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'customers'"),
        0,
        "nothing lands under the source's name"
    );
    // Indexes are built once the copy is over (binlog capture: beside the stream).
    let indexes = || {
        format!(
            "{:?}",
            db.pg_rows("SELECT indexdef FROM pg_indexes WHERE schemaname = 'crm'")
        )
    };
    run.wait_until("the renamed column's index", || {
        indexes().contains("first_name")
    });
    assert!(
        !indexes().contains("email"),
        "the masked column's index is not mirrored: {}",
        indexes()
    );

    // Changes stream through the mapping.
    db.mysql(
        "UPDATE customers SET fname = 'Ann', email = 'ann@example.com', phone = '1' WHERE id = 2; \
         INSERT INTO customers (id, fname, email) VALUES (21, 'new', 'new@example.com')",
    );
    run.wait_until("the changes, mapped", || {
        people(&db) == expected(&db, &email)
    });
    verify_equal(&db, &cfg, "mapped tables verify equal");
    let status = db.ok(&["--config", &cfg, "status"]);
    assert!(
        status.contains("mapping: lands in crm.people; renames fname → first_name; masks email (sha256), note (constant), phone (null)"),
        "{status}"
    );
    run.stop();
    // A hand edit of a masked value is found, and repaired masked (with `run` stopped, as
    // `verify --repair` asks).
    db.pg("UPDATE crm.people SET email = 'tampered', note = NULL WHERE id = 3");
    let out = db.run(&["--config", &cfg, "verify", "--repair"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "repaired: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("different: 1 (id=3)") && said.contains("now equal"),
        "{said}"
    );
    assert_eq!(people(&db), expected(&db, &email), "repaired, masked");
    let out = db.run(&["--config", &cfg, "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn poll_mapped_tables_land_renamed_and_masked() {
    mapped_tables_land_renamed_and_masked(Mode::Poll);
}

#[test]
fn binlog_mapped_tables_land_renamed_and_masked() {
    mapped_tables_land_renamed_and_masked(Mode::Binlog);
}

#[test]
fn a_table_whose_target_changed_is_copied_in_full_to_the_new_one() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, v INT); \
         INSERT INTO t SELECT seq, seq FROM seq_1_to_30",
    );
    let before = config(&db, Mode::Binlog, "[[tables]]\nname = \"t\"\n");
    db.ok(&["--config", &before, "run", "--once"]);
    db.mysql("INSERT INTO t VALUES (31, 31)");
    let after = config(
        &db,
        Mode::Binlog,
        "[[tables]]\nname = \"t\"\ntarget = \"moved.t2\"\n",
    );
    let out = db.run(&["--config", &after, "run", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("its target table does not exist"),
        "said why it copies again"
    );
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM moved.t2"),
        31,
        "every row, not only those since the position"
    );
    let out = db.run(&["--config", &after, "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn column_types_override_the_mapping(mode: Mode) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE docs (id INT NOT NULL PRIMARY KEY, payload TEXT, amount DECIMAL(10,2), \
           ref CHAR(36), n INT, title VARCHAR(20), {UPDATED}); \
         INSERT INTO docs (id, payload, amount, ref, n, title) VALUES \
           (1, '{{\"a\": 1}}', 12.50, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 7, 'one'), \
           (2, NULL, NULL, NULL, NULL, NULL)"
    ));
    let entry = |types: &str| {
        config(
            &db,
            mode,
            &format!(
                "[[tables]]\nname = \"docs\"\n{}column_types = {{ {types} }}\n",
                cursor(mode)
            ),
        )
    };
    // Types that cannot hold every value: refused at start.
    let cfg = entry("n = \"smallint\", title = \"varchar(10)\", amount = \"numeric(5,1)\"");
    let out = db.run(&["--config", &cfg, "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("column_types gives \"amount\" (decimal(10,2)) the type numeric(5,1), which cannot hold all of its values"),
        "{err}"
    );

    let cfg = entry(
        "payload = \"jsonb\", amount = \"numeric(20,4)\", ref = \"uuid\", n = \"bigint\", \
         title = \"varchar(40)\"",
    );
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    let types = || {
        db.pg_rows(
            "SELECT column_name::text, format_type(atttypid, atttypmod) FROM information_schema.columns c \
             JOIN pg_attribute a ON a.attrelid = 'public.docs'::regclass AND a.attname = c.column_name \
             WHERE c.table_schema = 'public' AND c.table_name = 'docs' ORDER BY ordinal_position",
        )
    };
    run.wait_until("the table on the target", || {
        db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'docs'") == 1
            && db.pg_i64("SELECT COUNT(*) FROM public.docs") == 2
    });
    let got = format!("{:?}", types());
    for want in [
        "\"payload\"), Some(\"jsonb\")",
        "\"amount\"), Some(\"numeric(20,4)\")",
        "\"ref\"), Some(\"uuid\")",
        "\"n\"), Some(\"bigint\")",
        "\"title\"), Some(\"character varying(40)\")",
    ] {
        assert!(got.contains(want), "{want} in {got}");
    }
    db.mysql(
        "INSERT INTO docs (id, payload, amount, ref, n, title) VALUES \
           (3, '[1, 2]', 99999999.99, 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', 2147483647, 'three'); \
         UPDATE docs SET payload = '{\"b\": [true]}' WHERE id = 1",
    );
    run.wait_until("the changes", || {
        db.pg_rows("SELECT payload->>'b' FROM public.docs WHERE id = 1")
            == vec![vec![Some("[true]".to_string())]]
            && db.pg_i64("SELECT COUNT(*) FROM public.docs") == 3
    });
    assert_eq!(
        db.pg_rows("SELECT amount::text, ref::text, n::text FROM public.docs WHERE id = 3"),
        vec![vec![
            Some("99999999.9900".into()),
            Some("b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12".into()),
            Some("2147483647".into())
        ]]
    );
    let out = db.run(&["--config", &cfg, "verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    run.stop();
}

#[test]
fn poll_column_types_override_the_mapping() {
    column_types_override_the_mapping(Mode::Poll);
}

#[test]
fn binlog_column_types_override_the_mapping() {
    column_types_override_the_mapping(Mode::Binlog);
}

#[test]
fn a_renamed_key_keeps_its_mirrored_foreign_key_and_cascades() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE parent (id INT NOT NULL PRIMARY KEY, name VARCHAR(20)); \
         CREATE TABLE child (id INT NOT NULL PRIMARY KEY, parent_id INT, \
           FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE); \
         INSERT INTO parent VALUES (1, 'a'), (2, 'b'); \
         INSERT INTO child VALUES (10, 1), (11, 1), (20, 2)",
    );
    let cfg = config(
        &db,
        Mode::Binlog,
        "[[tables]]\nname = \"parent\"\nrename_columns = { id = \"parent_key\" }\n\
         [[tables]]\nname = \"child\"\nrename_columns = { parent_id = \"owner\" }\n",
    );
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    run.wait_until("both tables and the foreign key", || {
        db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'child'") == 1
            && db.pg_i64("SELECT COUNT(*) FROM public.child") == 3
            && db.pg_i64(
                "SELECT COUNT(*) FROM pg_constraint WHERE contype = 'f' \
                 AND conrelid = 'public.child'::regclass",
            ) == 1
    });
    let fk = db.pg_rows(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f' \
         AND conrelid = 'public.child'::regclass",
    );
    let fk = format!("{fk:?}");
    assert!(
        fk.contains("FOREIGN KEY (owner) REFERENCES public.parent(parent_key)")
            || fk.contains("FOREIGN KEY (owner) REFERENCES parent(parent_key)"),
        "{fk}"
    );
    // The source's cascade: the binlog holds the parent's delete only; the target's
    // mirrored key deletes the children.
    db.mysql("DELETE FROM parent WHERE id = 1");
    run.wait_until("the children gone with their parent", || {
        db.pg_rows("SELECT id::text FROM public.child ORDER BY child.id")
            == vec![vec![Some("20".to_string())]]
    });
    run.stop();
}

#[test]
fn a_foreign_key_the_mapping_cannot_carry_is_not_mirrored_and_said_so() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE parent (id INT NOT NULL PRIMARY KEY, region CHAR(2) NOT NULL); \
         CREATE TABLE child (id INT NOT NULL PRIMARY KEY, parent_id INT, \
           FOREIGN KEY (parent_id) REFERENCES parent (id) ON DELETE CASCADE); \
         INSERT INTO parent VALUES (1, 'EU'), (2, 'US'); \
         INSERT INTO child VALUES (10, 1), (20, 2)",
    );
    // The parent keeps its EU rows only: a copy of the key on the target would refuse the
    // children of the others (and, checked at commit, fail every batch with them).
    let cfg = config(
        &db,
        Mode::Binlog,
        "[[tables]]\nname = \"parent\"\nwhere = \"region = 'EU'\"\n[[tables]]\nname = \"child\"\n",
    );
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    wait_equal(&db, "child", "id, parent_id", &|| run.log());
    db.mysql("INSERT INTO parent VALUES (3, 'US'); INSERT INTO child VALUES (30, 3), (31, 1)");
    wait_equal(&db, "child", "id, parent_id", &|| run.log());
    assert_eq!(
        db.pg_rows("SELECT id::text FROM public.parent ORDER BY id"),
        vec![vec![Some("1".to_string())]]
    );
    assert_eq!(
        db.pg_i64(
            "SELECT COUNT(*) FROM pg_constraint WHERE contype = 'f' \
             AND conrelid = 'public.child'::regclass"
        ),
        0
    );
    let log = run.log();
    assert!(
        log.contains("cannot be mirrored through the column mapping")
            && log.contains("its parent has a `where` filter"),
        "{log}"
    );
    assert!(!log.contains("table stopped"), "{log}");
    run.stop();

    // A key mirrored before the filter came (a run without it): dropped before the next
    // start's first batch, and the children of rows the filter keeps off go on arriving.
    let plain = config(
        &db,
        Mode::Binlog,
        "[[tables]]\nname = \"parent\"\n[[tables]]\nname = \"child\"\n",
    );
    db.pg("DELETE FROM public.child WHERE parent_id <> 1");
    db.ok(&["--config", &plain, "verify", "--repair"]);
    let fks = "SELECT COUNT(*) FROM pg_constraint WHERE contype = 'f' \
               AND conrelid = 'public.child'::regclass";
    let run = db.spawn_logged(&["--config", &plain, "run"], &[]);
    run.wait_until("the key mirrored", || db.pg_i64(fks) == 1);
    run.stop();
    let run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    db.mysql("INSERT INTO parent VALUES (4, 'US'); INSERT INTO child VALUES (40, 4)");
    wait_equal(&db, "child", "id, parent_id", &|| run.log());
    assert_eq!(db.pg_i64(fks), 0, "dropped before the first batch");
    run.stop();
}

fn a_filter_keeps_only_its_rows_as_updates_cross_it(mode: Mode) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE accounts (id INT NOT NULL PRIMARY KEY, region VARCHAR(4), \
           deleted_at DATETIME NULL, v INT, {UPDATED}); \
         INSERT INTO accounts (id, region, deleted_at, v) \
           SELECT seq, IF(seq % 2, 'US', 'EU'), IF(seq % 5 = 0, '2024-01-01 00:00:00', NULL), seq \
           FROM seq_1_to_40"
    ));
    let filter = "region = 'EU' AND deleted_at IS NULL";
    let cfg = config(
        &db,
        mode,
        &format!(
            "[[tables]]\nname = \"accounts\"\n{}where = \"{filter}\"\n",
            cursor(mode)
        ),
    );
    let kept = |db: &TestDb| {
        db.mysql_rows(&format!(
            // The filter compares text byte for byte: BINARY here.
            "SELECT CAST(id AS CHAR), CAST(v AS CHAR) FROM accounts WHERE BINARY {filter} ORDER BY id"
        ))
    };
    let target = |db: &TestDb| {
        db.pg_rows("SELECT id::text, v::text FROM public.accounts ORDER BY accounts.id")
    };
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let run = db.spawn_logged(
        &["--config", &cfg, "run"],
        &[("SLUICE_HTTP_ADDR", addr.as_str())],
    );
    run.wait_until("the kept rows on the target", || {
        db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'accounts'") == 1
            && target(&db) == kept(&db)
    });
    assert_eq!(kept(&db).len(), 16, "20 EU rows, 4 of them deleted");
    // Updates into the filter and out of it, a soft delete, inserts on both sides of it.
    db.mysql(
        "UPDATE accounts SET region = 'EU' WHERE id = 1; \
         UPDATE accounts SET region = 'US' WHERE id = 2; \
         UPDATE accounts SET deleted_at = NOW() WHERE id = 4; \
         UPDATE accounts SET v = -6 WHERE id = 6; \
         INSERT INTO accounts (id, region, v) VALUES (41, 'EU', 41), (42, 'eu', 42), (43, NULL, 43)",
    );
    if mode == Mode::Binlog {
        db.mysql("DELETE FROM accounts WHERE id = 8");
    }
    run.wait_until("the changes, filtered", || target(&db) == kept(&db));
    // The rows kept off: 24 at first (20 US, 4 deleted), then id 2 and 4 moved out, and 42
    // and 43 inserted outside.
    let (_, metrics) = common::get(port, "/metrics").expect("/metrics answers");
    let filtered: f64 = metrics
        .lines()
        .find(|l| l.starts_with("sluice_rows_filtered_total{table=\"accounts\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(filtered >= 28.0, "{filtered}: {metrics}");
    let ids: Vec<String> = target(&db)
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect();
    assert!(
        ids.contains(&"1".into()) && ids.contains(&"41".into()),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"2".into()) && !ids.contains(&"4".into()) && !ids.contains(&"42".into()),
        "moved out, soft-deleted, another case: {ids:?}"
    );
    verify_equal(&db, &cfg, "verify reads the source through the filter");
    if mode == Mode::Binlog {
        // A copy beside the stream (`sluice snapshot`) copies the kept rows only.
        db.pg("INSERT INTO public.accounts (id, region, v, updated) VALUES (99, 'US', 99, now())");
        db.ok(&["--config", &cfg, "snapshot", "--table", "accounts"]);
        run.wait_until("the copy, filtered", || target(&db) == kept(&db));
    }
    run.stop();
    // A filter on a column the table lacks: refused at start.
    let bad = config(
        &db,
        mode,
        &format!(
            "[[tables]]\nname = \"accounts\"\n{}where = \"country = 'EU'\"\n",
            cursor(mode)
        ),
    );
    let out = db.run(&["--config", &bad, "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the table has no column \"country\""), "{err}");
}

#[test]
fn poll_a_filter_keeps_only_its_rows_as_updates_cross_it() {
    a_filter_keeps_only_its_rows_as_updates_cross_it(Mode::Poll);
}

#[test]
fn binlog_a_filter_keeps_only_its_rows_as_updates_cross_it() {
    a_filter_keeps_only_its_rows_as_updates_cross_it(Mode::Binlog);
}

/// The target's rows of `p`: (id, email, v).
fn p_rows(db: &TestDb) -> Vec<Vec<Option<String>>> {
    if db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'p'") == 0 {
        return Vec::new();
    }
    db.pg_rows("SELECT id::text, email, v::text FROM p ORDER BY id")
}

fn a_mapped_column_renamed_on_the_source_stops_its_table_until_the_configuration_follows(
    mode: Mode,
) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE p (id INT NOT NULL PRIMARY KEY, email VARCHAR(80), secret VARCHAR(20), \
         v INT, {UPDATED}); \
         CREATE TABLE other (id INT NOT NULL PRIMARY KEY, v INT, {UPDATED}); \
         INSERT INTO p (id, email, secret, v) VALUES (1, 'a@x', 's1', 1), (2, 'b@x', 's2', 2); \
         INSERT INTO other (id, v) VALUES (1, 1)"
    ));
    let cur = cursor(mode);
    let tables = |p_options: &str| {
        config(
            &db,
            mode,
            &format!(
                "[[tables]]\nname = \"p\"\n{cur}{p_options}\n[[tables]]\nname = \"other\"\n{cur}"
            ),
        )
    };
    let mut cfg = tables("exclude_columns = [\"secret\"]\nmask_columns = { email = \"redact\" }");
    let mut run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
    run.wait_until("p's rows, masked", || {
        p_rows(&db).len() == 2 && p_rows(&db)[1][1].as_deref() == Some("***")
    });
    let shape = ["id", "email", "v", "updated"];
    assert_eq!(target_columns(&db, "p"), shape);
    // sluice.schema_history records the mapping in force with each shape.
    let mapping = || {
        db.pg_rows(
            "SELECT mapping FROM sluice.schema_history WHERE table_name = 'p' \
             ORDER BY version DESC LIMIT 1",
        )[0][0]
            .clone()
            .unwrap_or_default()
    };
    assert_eq!(mapping(), "excludes secret; masks email (redact)");

    // Each step: a source change renaming a column the mapping names, with a row in the new
    // shape (its value in the renamed column must not reach the target); what the stopped
    // table's error says; the options that follow the rename; the mapping then recorded.
    let steps = [
        // The excluded column: under its new name it would reach the target.
        (
            "ALTER TABLE p CHANGE secret hidden VARCHAR(20); \
             INSERT INTO p (id, email, hidden, v) VALUES (3, 'c@x', 'leaked', 3)",
            "exclude_columns names the old name, so the column would now reach the target",
            "exclude_columns = [\"hidden\"]\nmask_columns = { email = \"redact\" }",
            "excludes hidden; masks email (redact)",
        ),
        // The masked column: the mask names the old name and would no longer apply.
        (
            "ALTER TABLE p RENAME COLUMN email TO mail; \
             INSERT INTO p (id, mail, hidden, v) VALUES (4, 'leaked', 'h', 4)",
            "the source renamed column \"email\" to \"mail\", and mask_columns names \"email\"",
            "exclude_columns = [\"hidden\"]\nmask_columns = { mail = \"redact\" }\n\
             rename_columns = { mail = \"email\" }",
            "excludes hidden; renames mail → email; masks mail (redact)",
        ),
    ];
    for (n, (change, said, options, recorded)) in (3..).zip(steps) {
        // The table stops before any of its rows in the new shape is written; the others
        // go on.
        db.mysql(change);
        db.mysql(&format!("INSERT INTO other (id, v) VALUES ({n}, {n})"));
        run.wait_for(said, Duration::from_secs(60));
        wait_equal(&db, "other", "id, v", &|| run.log());
        assert_eq!(p_rows(&db).len(), n - 1, "{}", run.log());
        assert_eq!(target_columns(&db, "p"), shape);
        assert_eq!(
            db.pg_i64("SELECT COUNT(*) FROM p WHERE p::text LIKE '%leaked%'"),
            0,
            "nothing unmasked or excluded reached the target"
        );
        signal(&run.child, "TERM");
        run.wait_exit(Duration::from_secs(30));
        // A repair with the configuration as it was is refused too: through a mapping that
        // no longer names the column, it would write the values as they are.
        let out = db.run(&["--config", &cfg, "verify", "--repair"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("which the table does not have"), "{err}");
        assert_eq!(
            db.pg_i64("SELECT COUNT(*) FROM p WHERE p::text LIKE '%leaked%'"),
            0,
            "the refused repair wrote nothing"
        );

        // The configuration follows: the table resumes where it stopped, with the row.
        cfg = tables(options);
        run = db.spawn_logged(&["--config", &cfg, "run"], &[]);
        run.wait_until("p's new row", || p_rows(&db).len() == n);
        let id = Some(n.to_string());
        assert_eq!(p_rows(&db)[n - 1], [id.clone(), Some("***".into()), id]);
        assert_eq!(target_columns(&db, "p"), shape);
        assert_eq!(mapping(), recorded);
        verify_equal(&db, &cfg, "the table resumed equal");
    }
    run.stop();
}

#[test]
fn poll_a_mapped_column_renamed_on_the_source_stops_its_table_until_the_configuration_follows() {
    a_mapped_column_renamed_on_the_source_stops_its_table_until_the_configuration_follows(
        Mode::Poll,
    );
}

#[test]
fn binlog_a_mapped_column_renamed_on_the_source_stops_its_table_until_the_configuration_follows() {
    a_mapped_column_renamed_on_the_source_stops_its_table_until_the_configuration_follows(
        Mode::Binlog,
    );
}

/// A process killed (as by `kill -9`) at `point` in the middle of applying a mapped table,
/// then started again: the target holds exactly the mapped rows, once each.
fn a_crash_with_a_mapping_loses_and_duplicates_nothing(mode: Mode, point: &str) {
    let db = TestDb::new();
    db.mysql(&format!(
        "CREATE TABLE m (id INT NOT NULL PRIMARY KEY, email VARCHAR(80) NOT NULL, \
         secret VARCHAR(20), region CHAR(2) NOT NULL, v INT NOT NULL, {UPDATED})"
    ));
    let insert = |from: u32, to: u32| {
        db.mysql(&format!(
            "INSERT INTO m (id, email, secret, region, v) \
             SELECT seq, CONCAT('user', seq, '@x'), 's', IF(seq % 2 = 0, 'EU', 'US'), seq \
             FROM seq_{from}_to_{to}"
        ))
    };
    let cfg = config(
        &db,
        mode,
        &format!(
            "[pipeline]\nbatch_rows = 1000\nkey_order_load_min_rows = 1000\n\
             defer_key_min_rows = 1000\n[[tables]]\nname = \"m\"\n{}target = \"crm.m_copy\"\n\
             exclude_columns = [\"secret\"]\nrename_columns = {{ v = \"value\" }}\n\
             mask_columns = {{ email = \"sha256\" }}\nwhere = \"region = 'EU'\"\n",
            cursor(mode)
        ),
    );
    if mode == Mode::Binlog {
        // The rows come through the stream: a backlog of 20 transactions.
        db.ok(&["--config", &cfg, "run", "--once"]);
        for k in 0..20 {
            insert(k * 1000 + 1, (k + 1) * 1000);
        }
    } else {
        insert(1, 20_000);
    }
    let out = db
        .sluice()
        .env("SLUICE_FAILPOINT", format!("{point}:3"))
        .args(["--config", &cfg, "run", "--once"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the failpoint must kill the process: {err}"
    );
    assert!(err.contains(&format!("failpoint {point} hit")), "{err}");
    if mode == Mode::Poll {
        // The load in key order into an empty table with its key deferred, where a row the
        // filter does not keep needs no delete.
        assert!(
            err.contains("initial load: reading in primary-key order"),
            "{err}"
        );
    }
    let landed = db.pg_i64("SELECT COUNT(*) FROM crm.m_copy");
    assert!(
        landed < 10_000,
        "the crash came before the end: {landed} rows"
    );

    // Rows cross the filter both ways while sluice is down (kept rows already copied among
    // them): 10,000 rows stay kept.
    db.mysql(
        "UPDATE m SET region = 'US' WHERE id <= 200 AND region = 'EU'; \
         UPDATE m SET region = 'EU' WHERE id BETWEEN 201 AND 400 AND region = 'US'",
    );
    db.ok(&["--config", &cfg, "run", "--once"]);
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM crm.m_copy"), 10_000);
    assert_eq!(
        db.pg_i64(
            "SELECT COUNT(*) FROM crm.m_copy \
             WHERE region = 'EU' AND value = id AND email = encode(sha256(('user' || id || '@x')::bytea), 'hex')"
        ),
        10_000,
        "every row once, filtered, renamed and masked"
    );
    verify_equal(&db, &cfg, "equal after the crash");
}

#[test]
fn poll_a_crash_with_a_mapping_loses_and_duplicates_nothing() {
    for point in ["before_commit", "after_commit"] {
        a_crash_with_a_mapping_loses_and_duplicates_nothing(Mode::Poll, point);
    }
}

#[test]
fn binlog_a_crash_with_a_mapping_loses_and_duplicates_nothing() {
    for point in ["before_commit", "after_commit"] {
        a_crash_with_a_mapping_loses_and_duplicates_nothing(Mode::Binlog, point);
    }
}
