//! Type fidelity, updates, composite keys, quoted names and bad table definitions, against
//! real MariaDB and PostgreSQL. Values are compared column by column, each rendered to
//! canonical text by its own database.

mod common;

use common::TestDb;

/// How the two renderings of a column are compared.
#[derive(Clone, Copy, Debug)]
enum Cmp {
    /// Equal text.
    Text,
    /// Both parse to the same f64 (bit for bit).
    Float,
    /// Both parse to the same JSON value.
    Json,
    /// MySQL TIME text (`-838:59:59.000000`) against PostgreSQL microseconds.
    TimeMicros,
}

/// One column to compare: name, MySQL rendering, PostgreSQL rendering (`{}` is the quoted
/// column), comparison.
struct Check {
    col: &'static str,
    my: &'static str,
    pg: &'static str,
    cmp: Cmp,
}

const fn check(col: &'static str, my: &'static str, pg: &'static str, cmp: Cmp) -> Check {
    Check { col, my, pg, cmp }
}

const INT_TEXT: (&str, &str) = ("CAST({} AS CHAR)", "{}::text");
const DATETIME: (&str, &str) = (
    "DATE_FORMAT({}, '%Y-%m-%d %H:%i:%s.%f')",
    "to_char({}, 'YYYY-MM-DD HH24:MI:SS.US')",
);
const TIMESTAMP: (&str, &str) = (
    // sqlx sets the session time zone to UTC on both connections of the test.
    "DATE_FORMAT({}, '%Y-%m-%d %H:%i:%s.%f')",
    "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
);

fn time_micros(mysql_time: &str) -> i64 {
    let (neg, t) = match mysql_time.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, mysql_time),
    };
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let parts: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    let frac: i64 = format!("{frac:0<6}").parse().unwrap();
    let v = ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1_000_000 + frac;
    if neg {
        -v
    } else {
        v
    }
}

/// Compares every listed column of `table` row by row (rows matched by the primary-key
/// columns `keys`), naming the column, the key and both renderings on a difference.
/// Returns the row count.
fn assert_same(db: &TestDb, table: &str, keys: &[&str], checks: &[Check]) -> usize {
    let qm = |c: &str| format!("`{}`", c.replace('`', "``"));
    let qp = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let my_sql = format!(
        "SELECT CONCAT_WS('|', {}), {} FROM {}",
        keys.iter()
            .map(|k| format!("CAST({} AS CHAR)", qm(k)))
            .collect::<Vec<_>>()
            .join(", "),
        checks
            .iter()
            .map(|c| c.my.replace("{}", &qm(c.col)))
            .collect::<Vec<_>>()
            .join(", "),
        qm(table)
    );
    let pg_sql = format!(
        "SELECT concat_ws('|', {}), {} FROM public.{}",
        keys.iter()
            .map(|k| format!("{}::text", qp(k)))
            .collect::<Vec<_>>()
            .join(", "),
        checks
            .iter()
            .map(|c| c.pg.replace("{}", &qp(c.col)))
            .collect::<Vec<_>>()
            .join(", "),
        qp(table)
    );
    // Sorted here: the two servers collate text differently.
    let mut src = db.mysql_rows(&my_sql);
    let mut tgt = db.pg_rows(&pg_sql);
    src.sort_by(|a, b| a[0].cmp(&b[0]));
    tgt.sort_by(|a, b| a[0].cmp(&b[0]));
    assert_eq!(
        src.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        tgt.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        "keys of {table:?} differ"
    );
    for (s, t) in src.iter().zip(&tgt) {
        for (i, c) in checks.iter().enumerate() {
            let (a, b) = (&s[i + 1], &t[i + 1]);
            let same = match (a, b, c.cmp) {
                (None, None, _) => true,
                (Some(a), Some(b), Cmp::Text) => a == b,
                (Some(a), Some(b), Cmp::Float) => {
                    a.parse::<f64>().unwrap().to_bits() == b.parse::<f64>().unwrap().to_bits()
                }
                (Some(a), Some(b), Cmp::Json) => {
                    serde_json::from_str::<serde_json::Value>(a).unwrap()
                        == serde_json::from_str::<serde_json::Value>(b).unwrap()
                }
                (Some(a), Some(b), Cmp::TimeMicros) => time_micros(a) == b.parse::<i64>().unwrap(),
                _ => false,
            };
            assert!(
                same,
                "table {table:?}, key {:?}, column {:?}: source {a:?} but target {b:?}",
                s[0], c.col
            );
        }
    }
    src.len()
}

/// Runs sluice with `config` and expects exit `code`; returns stderr.
fn fails(db: &TestDb, config: &str, code: i32) -> String {
    let cfg = db.config(config);
    let out = db.run(&["--config", cfg.to_str().unwrap(), "run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr:\n{err}");
    err
}

fn run_once(db: &TestDb, config: &str) -> String {
    let cfg = db.config(config);
    db.ok(&["--config", cfg.to_str().unwrap(), "run", "--once"])
}

const EVERY_TYPE: &str = "CREATE TABLE every_type (
    id INT NOT NULL PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
    bi BIGINT, biu BIGINT UNSIGNED, b TINYINT(1),
    d30 DECIMAL(30,10), d65 DECIMAL(65,30), d0 DECIMAL(20,0) UNSIGNED,
    f FLOAT, db DOUBLE,
    c CHAR(10), vc VARCHAR(100), tx TEXT, lt LONGTEXT,
    bn BINARY(4), vb VARBINARY(100), bl BLOB,
    dt DATE, dtm0 DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6),
    ts0 TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL,
    tm0 TIME, tm6 TIME(6), y YEAR, j JSON,
    e ENUM('a','b','c',''), st SET('a','b','c'),
    bit1 BIT(1), bit64 BIT(64)
) CHARACTER SET utf8mb4";

fn every_type_checks() -> Vec<Check> {
    let mut v = Vec::new();
    for c in [
        "ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu", "d30", "d65", "d0",
    ] {
        v.push(check(c, INT_TEXT.0, INT_TEXT.1, Cmp::Text));
    }
    // YEAR 0000 is the number 0.
    v.push(check(
        "y",
        "CAST(CAST({} AS SIGNED) AS CHAR)",
        "{}::text",
        Cmp::Text,
    ));
    v.push(check("b", "CAST({} AS CHAR)", "({})::int::text", Cmp::Text));
    v.push(check(
        "f",
        "CAST(CAST({} AS DOUBLE) AS CHAR)",
        "{}::float8::text",
        Cmp::Float,
    ));
    v.push(check("db", "CAST({} AS CHAR)", "{}::text", Cmp::Float));
    for c in ["c", "vc", "tx", "lt", "e", "st"] {
        v.push(check(c, "CAST({} AS CHAR)", "{}", Cmp::Text));
    }
    for c in ["bn", "vb", "bl"] {
        v.push(check(c, "HEX({})", "upper(encode({}, 'hex'))", Cmp::Text));
    }
    v.push(check(
        "dt",
        "DATE_FORMAT({}, '%Y-%m-%d')",
        "to_char({}, 'YYYY-MM-DD')",
        Cmp::Text,
    ));
    for c in ["dtm0", "dtm3", "dtm6"] {
        v.push(check(c, DATETIME.0, DATETIME.1, Cmp::Text));
    }
    for c in ["ts0", "ts6"] {
        v.push(check(c, TIMESTAMP.0, TIMESTAMP.1, Cmp::Text));
    }
    for c in ["tm0", "tm6"] {
        v.push(check(
            c,
            "CAST({} AS CHAR)",
            "(extract(epoch from {}) * 1000000)::bigint::text",
            Cmp::TimeMicros,
        ));
    }
    v.push(check("j", "{}", "{}::text", Cmp::Json));
    v.push(check(
        "bit1",
        "LPAD(BIN({}), 1, '0')",
        "{}::text",
        Cmp::Text,
    ));
    v.push(check(
        "bit64",
        "LPAD(BIN({}), 64, '0')",
        "{}::text",
        Cmp::Text,
    ));
    v
}

/// Five rows covering each type's extremes, empty values, NULLs and odd characters.
fn insert_every_type_rows(db: &TestDb) {
    // Minimum values, the empty ones, and the bottom of every date range.
    db.mysql(
        "INSERT INTO every_type VALUES (1,
          -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, 0,
          '-99999999999999999999.9999999999',
          '-99999999999999999999999999999999999.999999999999999999999999999999', 0,
          -3.402823466E+38, -1.7976931348623157E308,
          '', '', '', '', x'00000000', x'', x'',
          '1000-01-01', '1000-01-01 00:00:00', '1000-01-01 00:00:00.000', '1000-01-01 00:00:00.000000',
          '1970-01-01 00:00:01', '1970-01-01 00:00:01.000000',
          '-838:59:59', '-838:59:59.000000', 1901, '{}', '', '', b'0', b'0')",
    );
    // Maximum values, 4-byte UTF-8, control characters, binary with NULs, nested JSON.
    db.mysql(
        "INSERT INTO every_type VALUES (2,
          127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
          9223372036854775807, 18446744073709551615, 1,
          '99999999999999999999.9999999999',
          '99999999999999999999999999999999999.999999999999999999999999999999',
          99999999999999999999,
          3.402823466E+38, 1.7976931348623157E308,
          'abcdefghij', 'emoji 😀 𝄞 ü Ω 中文', 'tab\\tnl\\ncr\\rbs\\\\ q\\' dq\" \\Z \\b end'
            , REPEAT('long 😀 ', 20000),
          x'FFFFFFFF', x'00FF00', x'000102030405060708090A0B0C0D0E0F00FF',
          '9999-12-31', '9999-12-31 23:59:59', '9999-12-31 23:59:59.999',
          '9999-12-31 23:59:59.999999',
          '2038-01-19 03:14:07', '2038-01-19 03:14:07.999999',
          '838:59:59', '838:59:59.999999', 2155,
          '{\"a\": [1, 2.5, -3.5, true, false, null, \"x\\\\u00e9\\\\n\"], \"b\": {\"c\": {\"d\": [[], {}]}}, \"😀\": \"\\\\\\\"q\\\\\\\"\"}',
          'c', 'a,c', b'1', b'1111111111111111111111111111111111111111111111111111111111111111')",
    );
    // Every column NULL.
    db.mysql("INSERT INTO every_type (id) VALUES (3)");
    // Small and fractional values: tiny floats, negative TIME with fractions.
    db.mysql(
        "INSERT INTO every_type VALUES (4,
          -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, 1,
          '0.0000000001', '-0.000000000000000000000000000001', 1,
          1.401298464324817e-45, 4.9e-324,
          ' lead', 'x', 'ctl \\Z\x01\x1f\x7f end', '\\'\"`', x'00', x'00', x'00',
          '2024-02-29', '2024-02-29 12:34:56', '2024-02-29 12:34:56.001',
          '2024-02-29 12:34:56.000001',
          '2024-02-29 12:34:56', '2024-02-29 12:34:56.000001',
          '-00:00:01', '-00:00:01.500000', 2000,
          '[1, \"two\", [3, [4, [5]]], {\"k\": null}]', 'b', 'a,b,c', b'1', b'1')",
    );
    // The earliest dates MariaDB stores, and YEAR 0000.
    db.mysql(
        "INSERT INTO every_type (id, dt, dtm6, tm6, y, f, db, j) VALUES (5,
          '0001-01-01', '0001-01-01 00:00:00.000001', '00:00:00.000001', 0,
          0.1, 0.1, '\"just a string\"')",
    );
}

#[test]
fn every_type_round_trips_value_by_value() {
    let db = TestDb::new();
    db.mysql(EVERY_TYPE);
    insert_every_type_rows(&db);
    run_once(&db, "[[tables]]\nname = \"every_type\"\ncursor = \"id\"\n");
    assert_eq!(
        assert_same(&db, "every_type", &["id"], &every_type_checks()),
        5
    );
    // The target table was created with the documented mapping.
    let types = db.pg_rows(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), (NOT a.attnotnull)::text \
         FROM pg_attribute a WHERE a.attrelid = 'public.every_type'::regclass AND a.attnum > 0 \
         ORDER BY a.attnum",
    );
    let got: Vec<String> = types
        .iter()
        .map(|r| format!("{} {}", r[0].as_ref().unwrap(), r[1].as_ref().unwrap()))
        .collect();
    let want = [
        "id integer",
        "ti smallint",
        "tiu smallint",
        "si smallint",
        "siu integer",
        "mi integer",
        "miu integer",
        "i integer",
        "iu bigint",
        "bi bigint",
        "biu numeric(20,0)",
        "b boolean",
        "d30 numeric(30,10)",
        "d65 numeric(65,30)",
        "d0 numeric(20,0)",
        "f real",
        "db double precision",
        "c text",
        "vc text",
        "tx text",
        "lt text",
        "bn bytea",
        "vb bytea",
        "bl bytea",
        "dt date",
        "dtm0 timestamp(0) without time zone",
        "dtm3 timestamp(3) without time zone",
        "dtm6 timestamp(6) without time zone",
        "ts0 timestamp(0) with time zone",
        "ts6 timestamp(6) with time zone",
        "tm0 interval",
        "tm6 interval",
        "y smallint",
        "j jsonb",
        "e text",
        "st text",
        "bit1 bit(1)",
        "bit64 bit(64)",
    ];
    assert_eq!(got, want);
    assert_eq!(types[0][2].as_deref(), Some("false"), "id is NOT NULL");
}

/// Columns whose target types have a COPY binary form (no numeric, interval or bit): the
/// table goes through COPY binary, and every value still arrives exactly.
#[test]
fn every_type_with_a_binary_form_round_trips_through_copy_binary() {
    let db = TestDb::new();
    db.mysql(EVERY_TYPE);
    insert_every_type_rows(&db);
    let text_only = ["biu", "d30", "d65", "d0", "tm0", "tm6", "bit1", "bit64"];
    db.mysql(&format!(
        "ALTER TABLE every_type {}",
        text_only
            .iter()
            .map(|c| format!("DROP COLUMN {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let cfg = db.config("[[tables]]\nname = \"every_type\"\ncursor = \"id\"\n");
    let out = db
        .sluice()
        .env("RUST_LOG", "info,sluice::sink=debug")
        .args(["--config", cfg.to_str().unwrap(), "run", "--once"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("format=\"binary\""), "{log}");
    let checks: Vec<Check> = every_type_checks()
        .into_iter()
        .filter(|c| !text_only.contains(&c.col))
        .collect();
    assert_eq!(assert_same(&db, "every_type", &["id"], &checks), 5);
}

#[test]
fn zero_dates_become_null_by_default() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE legacy (id INT NOT NULL PRIMARY KEY, d DATE NOT NULL, \
         dt DATETIME(6) NOT NULL, ts TIMESTAMP(3) NOT NULL DEFAULT '2020-01-01', ok DATE)",
    );
    // Strict sql_mode refuses zero dates; legacy data was written without it.
    db.mysql(
        "SET SESSION sql_mode = ''; INSERT INTO legacy VALUES \
         (1, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '2020-01-02'), \
         (2, '2024-00-00', '2024-05-00 10:00:00.5', '2024-05-06 07:08:09.123', '2020-01-03'), \
         (3, '2024-05-06', '2024-05-06 07:08:09.123456', '2024-05-06 07:08:09.123', NULL)",
    );
    run_once(&db, "[[tables]]\nname = \"legacy\"\ncursor = \"id\"\n");
    let rows = db.pg_rows(
        "SELECT id::text, d::text, to_char(dt, 'YYYY-MM-DD HH24:MI:SS.US'), \
         to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), ok::text \
         FROM public.legacy ORDER BY id",
    );
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        rows,
        vec![
            vec![s("1"), None, None, None, s("2020-01-02")],
            vec![
                s("2"),
                None,
                None,
                s("2024-05-06 07:08:09.123000"),
                s("2020-01-03")
            ],
            vec![
                s("3"),
                s("2024-05-06"),
                s("2024-05-06 07:08:09.123456"),
                s("2024-05-06 07:08:09.123000"),
                None
            ],
        ]
    );
}

#[test]
fn zero_dates_stop_the_table_when_configured_as_errors() {
    let db = TestDb::new();
    db.mysql("CREATE TABLE legacy (id INT NOT NULL PRIMARY KEY, d DATE NOT NULL)");
    db.mysql(
        "SET SESSION sql_mode = ''; INSERT INTO legacy VALUES (1, '2020-01-01'), (2, '0000-00-00')",
    );
    let err = fails(
        &db,
        "[source]\nzero_dates = \"error\"\n[[tables]]\nname = \"legacy\"\ncursor = \"id\"\n",
        1,
    );
    assert!(
        err.contains("legacy")
            && err.contains("id=2")
            && err.contains("\"d\"")
            && err.contains("zero date")
            && err.contains("zero_dates"),
        "{err}"
    );
    // The batch holding the bad row was not committed, and no watermark passed it.
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.legacy"), 0);

    // A zero date in a cursor column is refused whatever the setting: it cannot be ordered.
    db.mysql(
        "SET SESSION sql_mode = ''; CREATE TABLE ev (id INT NOT NULL PRIMARY KEY, \
         at DATETIME NOT NULL); INSERT INTO ev VALUES (1, '0000-00-00 00:00:00')",
    );
    let err = fails(&db, "[[tables]]\nname = \"ev\"\ncursor = \"at\"\n", 1);
    assert!(
        err.contains("\"at\"") && err.contains("cursor or primary-key column"),
        "{err}"
    );
}

#[test]
fn tinyint1_is_boolean_only_while_it_holds_0_or_1() {
    let db = TestDb::new();
    db.mysql("CREATE TABLE flags (id INT NOT NULL PRIMARY KEY, f TINYINT(1))");
    db.mysql("INSERT INTO flags VALUES (1, 0), (2, 1), (3, 2), (4, -1), (5, NULL)");
    let table = "[[tables]]\nname = \"flags\"\ncursor = \"id\"\n";
    let err = fails(&db, table, 1);
    assert!(
        err.contains("flags")
            && err.contains("id=3")
            && err.contains("\"f\"")
            && err.contains("tinyint1_as_boolean = false"),
        "{err}"
    );
    assert_eq!(db.pg_i64("SELECT COUNT(*) FROM public.flags"), 0);
    // The target was created with boolean; switching the mapping is a widening the target
    // follows at the next start (boolean to smallint, true as 1), recorded as a new shape.
    let smallint = format!("{table}tinyint1_as_boolean = false\n");
    run_once(&db, &smallint);
    assert_eq!(
        db.pg_rows(
            "SELECT data_type::text FROM information_schema.columns WHERE table_name = 'flags' AND column_name = 'f'"
        ),
        vec![vec![Some("smallint".to_string())]]
    );
    assert_eq!(
        db.pg_i64(
            "SELECT max(version)::bigint FROM sluice.schema_history WHERE table_name = 'flags'"
        ),
        2
    );
    let checks = [check("f", "CAST({} AS CHAR)", "{}::text", Cmp::Text)];
    assert_eq!(assert_same(&db, "flags", &["id"], &checks), 5);
}

const WEIRD: &str = "Weird \"Name\"; -- ü";

fn weird_checks() -> Vec<Check> {
    vec![
        check("Sp ace;", "{}", "{}", Cmp::Text),
        check("\"q\"", "CAST({} AS CHAR)", "{}::text", Cmp::Text),
        check("updated_at", DATETIME.0, DATETIME.1, Cmp::Text),
    ]
}

#[test]
fn updates_with_a_composite_key_and_names_that_need_quoting() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE `Weird \"Name\"; -- ü` (`Región` VARCHAR(10) NOT NULL, \
         `id``x` INT NOT NULL, `Sp ace;` VARCHAR(50), `\"q\"` INT, \
         updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
         PRIMARY KEY (`Región`, `id``x`), KEY (updated_at))",
    );
    let values: Vec<String> = (0..300)
        .map(|i| {
            format!(
                "('{}', {}, 'v1 {i}', {i})",
                ["eu", "us", "ÄP"][i % 3],
                i / 3
            )
        })
        .collect();
    db.mysql(&format!(
        "INSERT INTO `Weird \"Name\"; -- ü` (`Región`, `id``x`, `Sp ace;`, `\"q\"`) VALUES {}",
        values.join(", ")
    ));
    let cfg = "[pipeline]\nbatch_rows = 64\n[[tables]]\nname = 'Weird \"Name\"; -- ü'\ncursor = \"updated_at\"\n";
    let out = run_once(&db, cfg);
    assert!(out.contains("replicated 300 rows"), "{out}");
    let keys = ["Región", "id`x"];
    assert_eq!(assert_same(&db, WEIRD, &keys, &weird_checks()), 300);
    // The target has the source's key.
    let pk = db.pg_rows(&format!(
        "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
           AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{}'::regclass AND i.indisprimary \
         ORDER BY a.attnum",
        "public.\"Weird \"\"Name\"\"; -- ü\"".replace('\'', "''")
    ));
    assert_eq!(
        pk,
        vec![vec![Some("Región".into())], vec![Some("id`x".into())]]
    );

    // Updates move the cursor: those rows are read again and upserted; new rows arrive too.
    db.mysql(
        "UPDATE `Weird \"Name\"; -- ü` SET `Sp ace;` = CONCAT(`Sp ace;`, ' v2'), `\"q\"` = NULL \
         WHERE `id``x` % 7 = 0",
    );
    db.mysql(
        "UPDATE `Weird \"Name\"; -- ü` SET `Sp ace;` = 'v3' WHERE `Región` = 'ÄP' AND `id``x` < 5",
    );
    db.mysql(
        "INSERT INTO `Weird \"Name\"; -- ü` (`Región`, `id``x`, `Sp ace;`) VALUES ('eu', 1000, 'new')",
    );
    let changed = db.mysql_i64(
        "SELECT COUNT(*) FROM `Weird \"Name\"; -- ü` WHERE `id``x` % 7 = 0 \
         OR (`Región` = 'ÄP' AND `id``x` < 5) OR `id``x` = 1000",
    );
    let out = run_once(&db, cfg);
    assert!(out.contains(&format!("replicated {changed} rows")), "{out}");
    assert_eq!(assert_same(&db, WEIRD, &keys, &weird_checks()), 301);
    let v3 = db.pg_i64(&format!(
        "SELECT COUNT(*) FROM public.{} WHERE \"Sp ace;\" = 'v3'",
        "\"Weird \"\"Name\"\"; -- ü\""
    ));
    assert_eq!(v3, 5);
}

#[test]
fn two_tables_keep_independent_watermarks() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE a (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, v TEXT); \
         CREATE TABLE b (k1 INT NOT NULL, k2 CHAR(2) NOT NULL, \
           at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
           PRIMARY KEY (k1, k2)); \
         INSERT INTO a (v) VALUES ('x'), ('y'), ('z'); \
         INSERT INTO b (k1, k2) VALUES (1, 'aa'), (1, 'bb'), (2, 'aa'), (3, 'cc'), (4, 'dd')",
    );
    let cfg = "[[tables]]\nname = \"a\"\ncursor = \"id\"\n\
               [[tables]]\nname = \"b\"\ncursor = \"at\"\n";
    run_once(&db, cfg);
    let state = || {
        db.pg_rows(
            "SELECT table_name, (position->'keyset'->'columns')::text, rows_replicated::text, position::text \
             FROM sluice.replication_state ORDER BY table_name",
        )
    };
    let first = state();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0][1].as_deref(), Some("[\"id\"]"));
    assert_eq!(first[1][1].as_deref(), Some("[\"at\", \"k1\", \"k2\"]"));
    assert_eq!(first[0][2].as_deref(), Some("3"));
    assert_eq!(first[1][2].as_deref(), Some("5"));
    db.mysql("INSERT INTO a (v) VALUES ('w')");
    run_once(&db, cfg);
    let second = state();
    assert_eq!(second[0][2].as_deref(), Some("4"));
    assert_ne!(second[0][3], first[0][3], "a's watermark moved");
    assert_eq!(second[1], first[1], "b's state is untouched");
    let v = [check("v", "{}", "{}", Cmp::Text)];
    assert_eq!(assert_same(&db, "a", &["id"], &v), 4);
    let at = [check("at", DATETIME.0, DATETIME.1, Cmp::Text)];
    assert_eq!(assert_same(&db, "b", &["k1", "k2"], &at), 5);
}

#[test]
fn cursor_column_that_does_not_exist_exits_2() {
    let db = TestDb::new();
    db.mysql("CREATE TABLE t (id INT NOT NULL PRIMARY KEY, at DATETIME NOT NULL)");
    let err = fails(&db, "[[tables]]\nname = \"t\"\ncursor = \"updated\"\n", 2);
    assert!(
        err.contains("\"t\"")
            && err.contains("\"updated\"")
            && err.contains("does not exist")
            && err.contains("`cursor`"),
        "{err}"
    );
}

#[test]
fn nullable_cursor_exits_2_before_any_table_is_replicated() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE good (id INT NOT NULL PRIMARY KEY); INSERT INTO good VALUES (1), (2); \
         CREATE TABLE t (id INT NOT NULL PRIMARY KEY, at DATETIME NULL)",
    );
    let err = fails(
        &db,
        "[[tables]]\nname = \"good\"\ncursor = \"id\"\n[[tables]]\nname = \"t\"\ncursor = \"at\"\n",
        2,
    );
    assert!(
        err.contains("\"t\"") && err.contains("\"at\"") && err.contains("NOT NULL"),
        "{err}"
    );
    // Nothing was written to the target: no table, no state.
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM pg_tables WHERE schemaname IN ('public', 'sluice')"),
        0
    );
}

#[test]
fn unsupported_type_exits_2_naming_table_and_column() {
    let db = TestDb::new();
    db.mysql("CREATE TABLE shapes (id INT NOT NULL PRIMARY KEY, area POLYGON, p POINT)");
    let err = fails(&db, "[[tables]]\nname = \"shapes\"\ncursor = \"id\"\n", 2);
    assert!(
        err.contains("\"shapes\"") && err.contains("\"area\"") && err.contains("polygon"),
        "{err}"
    );
    // Nothing was created on the target for it.
    assert_eq!(
        db.pg_i64("SELECT COUNT(*) FROM pg_class WHERE relname = 'shapes'"),
        0
    );
}

#[test]
fn incompatible_existing_target_exits_2_naming_column_and_types() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, n BIGINT NOT NULL, d DECIMAL(12,4)); \
         INSERT INTO t VALUES (1, 9000000000, 1.2345)",
    );
    let cfg = "[[tables]]\nname = \"t\"\ncursor = \"id\"\n";
    db.pg("CREATE TABLE public.t (id integer PRIMARY KEY, n integer NOT NULL, d numeric(12,4))");
    let err = fails(&db, cfg, 2);
    assert!(
        err.contains("\"n\"")
            && err.contains("has type integer")
            && err.contains("bigint")
            && err.contains("ALTER TABLE"),
        "{err}"
    );
    db.pg("ALTER TABLE public.t ALTER COLUMN n TYPE numeric, ALTER COLUMN d TYPE numeric(12,2)");
    let err = fails(&db, cfg, 2);
    assert!(
        err.contains("\"d\"") && err.contains("numeric(12,2)") && err.contains("numeric(12,4)"),
        "{err}"
    );
    // Documented widenings are accepted: bigint into numeric, more fraction digits.
    db.pg("ALTER TABLE public.t ALTER COLUMN d TYPE numeric(14,6)");
    run_once(&db, cfg);
    let checks = [
        check("n", "CAST({} AS CHAR)", "{}::text", Cmp::Text),
        check(
            "d",
            "CAST(CAST({} AS DECIMAL(14,6)) AS CHAR)",
            "{}::text",
            Cmp::Text,
        ),
    ];
    assert_eq!(assert_same(&db, "t", &["id"], &checks), 1);
}

#[test]
fn decimal_cursor_compares_every_digit() {
    let db = TestDb::new();
    // These differ only past a double's 17 digits: the keyset must compare them exactly
    // (sluice binds DECIMAL keyset values through CAST(? AS DECIMAL(p,s))).
    db.mysql(
        "CREATE TABLE ledger (seq DECIMAL(30,10) NOT NULL PRIMARY KEY, note TEXT); \
         INSERT INTO ledger VALUES ('10000000000000000000.0000000001', 'a'), \
         ('10000000000000000000.0000000002', 'b'), ('10000000000000000000.0000000003', 'c')",
    );
    let cfg = "[pipeline]\nbatch_rows = 1\n[[tables]]\nname = \"ledger\"\ncursor = \"seq\"\n";
    run_once(&db, cfg);
    db.mysql("INSERT INTO ledger VALUES ('10000000000000000000.0000000004', 'd')");
    let out = run_once(&db, cfg);
    assert!(out.contains("replicated 1 rows"), "{out}");
    let note = [check("note", "{}", "{}", Cmp::Text)];
    assert_eq!(assert_same(&db, "ledger", &["seq"], &note), 4);
}

#[test]
fn enum_in_the_keyset_exits_2() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE t (region ENUM('us','eu') NOT NULL, id INT NOT NULL, \
         PRIMARY KEY (region, id))",
    );
    let err = fails(&db, "[[tables]]\nname = \"t\"\ncursor = \"id\"\n", 2);
    assert!(
        err.contains("\"region\"") && err.contains("keyset") && err.contains("primary_key"),
        "{err}"
    );
}

#[test]
fn every_type_round_trips_through_the_binlog_too() {
    let db = TestDb::new();
    db.mysql(EVERY_TYPE);
    insert_every_type_rows(&db);
    let cfg = "[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"every_type\"\n";
    // Rows 1-5 come through the snapshot.
    run_once(&db, cfg);
    assert_eq!(
        assert_same(&db, "every_type", &["id"], &every_type_checks()),
        5
    );
    // The same values again, as rows 11-15, and changed in place: through the binlog.
    let cols: Vec<String> = db
        .mysql_rows(
            "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'every_type' AND COLUMN_NAME <> 'id' \
             ORDER BY ORDINAL_POSITION",
        )
        .into_iter()
        .map(|r| format!("`{}`", r[0].clone().unwrap()))
        .collect();
    db.mysql(&format!(
        "INSERT INTO every_type (id, {0}) SELECT id + 10, {0} FROM every_type WHERE id <= 5",
        cols.join(", ")
    ));
    db.mysql(
        "UPDATE every_type SET tm6 = '-12:34:56.789012', j = '[\"changed\"]', e = 'a', st = 'b,c', \
           bit64 = b'101', bn = x'01', y = 0, ts6 = '2001-02-03 04:05:06.7' WHERE id = 13",
    );
    let out = run_once(&db, cfg);
    assert!(out.contains("replicated 6 rows"), "{out}");
    assert_eq!(
        assert_same(&db, "every_type", &["id"], &every_type_checks()),
        10
    );
}

#[test]
fn negative_times_with_fractions_round_trip_through_the_binlog() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE times (id INT PRIMARY KEY, t1 TIME(1), t2 TIME(2), t3 TIME(3), t5 TIME(5))",
    );
    let cfg = "[source]\ncapture = \"binlog\"\n[[tables]]\nname = \"times\"\n";
    run_once(&db, cfg);
    db.mysql(
        "INSERT INTO times VALUES \
           (1, '-838:59:59.9', '-838:59:59.99', '-838:59:59.999', '-838:59:59.99999'), \
           (2, '-00:00:00.1', '-00:00:00.01', '-00:00:00.001', '-00:00:00.00001'), \
           (3, '-01:02:03.5', '-01:02:03.55', '-01:02:03.555', '-01:02:03.55555'), \
           (4, '838:59:59.9', '838:59:59.99', '838:59:59.999', '838:59:59.99999')",
    );
    run_once(&db, cfg);
    let checks: Vec<Check> = ["t1", "t2", "t3", "t5"]
        .into_iter()
        .map(|c| {
            check(
                c,
                "CAST({} AS CHAR)",
                "(extract(epoch from {}) * 1000000)::bigint::text",
                Cmp::TimeMicros,
            )
        })
        .collect();
    assert_eq!(assert_same(&db, "times", &["id"], &checks), 4);
}

#[test]
fn decimals_go_through_copy_binary_and_keep_every_digit() {
    let db = TestDb::new();
    db.mysql(
        "CREATE TABLE money (id INT NOT NULL PRIMARY KEY, small DECIMAL(5,2), d30 DECIMAL(30,10), \
           d65 DECIMAL(65,30), d0 DECIMAL(20,0) UNSIGNED, whole DECIMAL(12,0), bu BIGINT UNSIGNED); \
         INSERT INTO money VALUES \
           (1, 0, 0, 0, 0, 0, 0), \
           (2, -0.5, -0.0000000001, -1.000000000000000000000000000001, 1, -1, 1), \
           (3, 999.99, 99999999999999999999.9999999999, 99999999999999999999999999999999999.999999999999999999999999999999, 99999999999999999999, 999999999999, 18446744073709551615), \
           (4, -999.99, 10000.0001, 0.000000000000000000000000000001, 10000, 100000000, 9223372036854775808), \
           (5, 1.01, 12345678.0000000010, -12345678901234567890.123456789012345678901234567890, 100020003, -10000, 10000), \
           (6, NULL, NULL, NULL, NULL, NULL, NULL)",
    );
    let cfg = db.config("[[tables]]\nname = \"money\"\ncursor = \"id\"\n");
    let out = db
        .sluice()
        .env("RUST_LOG", "sluice=debug")
        .args(["--config", cfg.to_str().unwrap(), "run", "--once"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("COPY format chosen table=money format=\"binary\""),
        "a table of numerics goes through COPY binary: {log}"
    );
    let checks: Vec<Check> = ["small", "d30", "d65", "d0", "whole", "bu"]
        .into_iter()
        .map(|c| check(c, INT_TEXT.0, INT_TEXT.1, Cmp::Text))
        .collect();
    assert_eq!(assert_same(&db, "money", &["id"], &checks), 6);
}
