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

/// Compares every listed column of `table` row by row (ordered by `key`), naming the
/// column, the key and both renderings on a difference. Returns the row count.
fn assert_same(db: &TestDb, table: &str, key: &str, checks: &[Check]) -> usize {
    let qm = |c: &str| format!("`{}`", c.replace('`', "``"));
    let qp = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
    let my_sql = format!(
        "SELECT CAST({k} AS CHAR), {} FROM {t} ORDER BY {k}",
        checks
            .iter()
            .map(|c| c.my.replace("{}", &qm(c.col)))
            .collect::<Vec<_>>()
            .join(", "),
        k = qm(key),
        t = qm(table)
    );
    let pg_sql = format!(
        "SELECT {k}::text, {} FROM public.{t} ORDER BY {k}",
        checks
            .iter()
            .map(|c| c.pg.replace("{}", &qp(c.col)))
            .collect::<Vec<_>>()
            .join(", "),
        k = qp(key),
        t = qp(table)
    );
    let src = db.mysql_rows(&my_sql);
    let tgt = db.pg_rows(&pg_sql);
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
                "table {table:?}, {key} = {:?}, column {:?}: source {a:?} but target {b:?}",
                s[0], c.col
            );
        }
    }
    src.len()
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

#[test]
fn every_type_round_trips_value_by_value() {
    let db = TestDb::new();
    db.mysql(EVERY_TYPE);
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
    db.ok(&["--config", every_type_config(&db).as_str(), "run", "--once"]);
    assert_eq!(
        assert_same(&db, "every_type", "id", &every_type_checks()),
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

fn every_type_config(db: &TestDb) -> String {
    db.config("[[tables]]\nname = \"every_type\"\ncursor = \"id\"\n")
        .to_str()
        .unwrap()
        .to_string()
}
