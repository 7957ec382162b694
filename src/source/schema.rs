//! Table shapes and the MySQL → PostgreSQL type mapping.
//!
//! | MySQL / MariaDB                       | PostgreSQL              | read as                    |
//! |---------------------------------------|-------------------------|----------------------------|
//! | TINYINT(1)                            | boolean (only 0 and 1; `tinyint1_as_boolean = false`: smallint) | integer |
//! | TINYINT, SMALLINT                     | smallint                | integer                    |
//! | MEDIUMINT, INT                        | integer                 | integer                    |
//! | BIGINT                                | bigint                  | integer                    |
//! | TINYINT UNSIGNED                      | smallint                | unsigned integer           |
//! | SMALLINT/MEDIUMINT UNSIGNED           | integer                 | unsigned integer           |
//! | INT UNSIGNED                          | bigint                  | unsigned integer           |
//! | BIGINT UNSIGNED                       | numeric(20,0)           | unsigned integer           |
//! | DECIMAL(p,s)                          | numeric(p,s)            | exact digits as text       |
//! | FLOAT / DOUBLE                        | real / double precision | f32 / f64                  |
//! | CHAR, VARCHAR, *TEXT                  | text                    | text                       |
//! | ENUM, SET                             | text (`a,c` for a SET)  | `CAST(… AS CHAR)`          |
//! | JSON (MySQL), LONGTEXT with a `json_valid(col)` CHECK (MariaDB) | jsonb | text        |
//! | BINARY, VARBINARY, *BLOB              | bytea                   | bytes                      |
//! | DATE                                  | date                    | date                       |
//! | DATETIME(n)                           | timestamp(n)            | date-time                  |
//! | TIMESTAMP(n)                          | timestamptz(n)          | UTC instant (session UTC)  |
//! | TIME(n)                               | interval                | text (`-838:59:59.000000`) |
//! | YEAR                                  | smallint (0000 → 0)     | integer                    |
//! | BIT(n)                                | bit(n)                  | text of 0s and 1s          |
//!
//! Zero dates (year, month or day 0) become NULL, or stop the table with
//! `[source] zero_dates = "error"`; see [`TableSchema::target_nullable`].
//! Anything else (spatial types, MariaDB's UUID and INET types, for instance) is refused at
//! start naming the table and column: a column is never silently dropped.

use crate::config::ZeroDates;
use crate::error::{Error, Result};
use crate::value::{Row, Value};

/// How a column is read from MySQL and what it becomes in PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int,
    UInt,
    Float32,
    Float64,
    /// Selected as `CAST(col AS CHAR)`, kept as text: ENUM, SET, TIME.
    CastText,
    /// DECIMAL(p,s): selected as `CAST(col AS CHAR)`, every digit kept as text; bound back
    /// (as a keyset value) through `CAST(? AS DECIMAL(p,s))` so it compares exactly.
    Decimal(u32, u32),
    Text,
    Bytes,
    Date,
    DateTime,
    Timestamp,
    /// Selected as `CAST(col AS SIGNED)`: YEAR.
    CastInt,
    /// Selected as `LPAD(BIN(col), n, '0')`: BIT(n).
    Bits(u32),
}

/// One source column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// MySQL's full column type, e.g. `int(10) unsigned`.
    pub column_type: String,
    pub nullable: bool,
    pub kind: Kind,
    /// The PostgreSQL type the target column gets.
    pub pg_type: String,
}

/// A source table as sluice replicates it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the cursor columns.
    pub cursor: Vec<usize>,
    /// Indexes into `columns` of the primary-key columns.
    pub primary_key: Vec<usize>,
    /// Indexes of the keyset: the cursor columns, then the primary-key columns not already
    /// among them. Rows are read in this order and the watermark holds these values.
    pub key: Vec<usize>,
    /// What a zero date in a column outside the keyset becomes.
    pub zero_dates: ZeroDates,
    /// See [`TableSchema::zero_date_checked`].
    zero_checked: Vec<usize>,
}

impl TableSchema {
    /// The keyset values of a row: its watermark.
    pub fn key_of(&self, row: &Row) -> Vec<Value> {
        self.key.iter().map(|&i| row[i].clone()).collect()
    }

    /// Whether target column `i` allows NULL: when the source column does, and for DATE,
    /// DATETIME and TIMESTAMP columns outside the keyset when `zero_dates = "null"` (a zero
    /// date in a NOT NULL source column arrives as NULL).
    pub fn target_nullable(&self, i: usize) -> bool {
        let c = &self.columns[i];
        c.nullable
            || (self.zero_dates == ZeroDates::Null
                && matches!(c.kind, Kind::Date | Kind::DateTime | Kind::Timestamp)
                && !self.key.contains(&i))
    }

    /// Date columns whose zero dates must be caught rather than read: sqlx reads a
    /// `0000-00-00` as NULL and refuses `2024-00-00`, so the reader selects a flag for
    /// each of these and fails the row when it is set. Keyset columns always (a NULL
    /// there could not be ordered or bound); with `zero_dates = "error"`, every date column.
    pub fn zero_date_checked(&self) -> &[usize] {
        &self.zero_checked
    }

    /// Names of the keyset columns.
    pub fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&i| self.columns[i].name.clone())
            .collect()
    }

    /// Primary key of a row, for messages: `id=3, region="eu"`.
    pub fn describe_key(&self, row: &Row) -> String {
        self.primary_key
            .iter()
            .map(|&i| format!("{}={}", self.columns[i].name, row[i].display()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Builds the table from introspected columns and the configured cursor and key.
    pub fn resolve(
        name: &str,
        columns: Vec<Column>,
        cursor: &[String],
        configured_pk: Option<&[String]>,
        introspected_pk: &[String],
        zero_dates: ZeroDates,
    ) -> Result<TableSchema> {
        // PostgreSQL truncates identifiers past 63 bytes: the target would silently get
        // another name (and two long names could collide).
        for n in std::iter::once(name).chain(columns.iter().map(|c| c.name.as_str())) {
            if n.len() > 63 {
                return Err(Error::Schema(format!(
                    "table {name:?}: the name {n:?} is {} bytes long, and PostgreSQL truncates identifiers past 63 bytes; rename it on the source, or replicate a view with a shorter name",
                    n.len()
                )));
            }
        }
        let find = |col: &str, role: &str, key: &str| {
            columns.iter().position(|c| c.name == col).ok_or_else(|| {
                Error::Schema(format!(
                    "table {name:?}: {role} column {col:?} does not exist; its columns are {}. Fix `{key}` in the table's [[tables]] entry",
                    columns.iter().map(|c| format!("{:?}", c.name)).collect::<Vec<_>>().join(", ")
                ))
            })
        };
        let cursor: Vec<usize> = cursor
            .iter()
            .map(|c| find(c, "cursor", "cursor"))
            .collect::<Result<_>>()?;
        for &i in &cursor {
            if columns[i].nullable {
                return Err(Error::Schema(format!(
                    "table {name:?}: cursor column {:?} allows NULL, and rows with a NULL cursor would never be read; make it NOT NULL or choose another cursor",
                    columns[i].name
                )));
            }
        }
        let pk_configured = configured_pk.is_some();
        let pk_names: Vec<String> = match configured_pk {
            Some(pk) => pk.to_vec(),
            None => introspected_pk.to_vec(),
        };
        if pk_names.is_empty() {
            return Err(Error::Schema(format!(
                "table {name:?} has no primary key, so rows cannot be told apart; add a PRIMARY KEY on the source, or set `primary_key = [\"col\", …]` (unique, NOT NULL columns) in its [[tables]] entry"
            )));
        }
        let primary_key: Vec<usize> = pk_names
            .iter()
            .map(|c| find(c, "primary-key", "primary_key"))
            .collect::<Result<_>>()?;
        if pk_configured {
            for &i in &primary_key {
                if columns[i].nullable {
                    return Err(Error::Schema(format!(
                        "table {name:?}: primary-key column {:?} allows NULL, so it cannot tell rows apart; choose unique NOT NULL columns in `primary_key` of the table's [[tables]] entry",
                        columns[i].name
                    )));
                }
            }
        }
        let mut key = cursor.clone();
        for &i in &primary_key {
            if !key.contains(&i) {
                key.push(i);
            }
        }
        // Keyset reads compare bound values with `>`; these types order (ENUM and SET by
        // position) or compare with bound text (BIT, TIME) differently from their values.
        for &i in &key {
            let c = &columns[i];
            if matches!(c.kind, Kind::CastText | Kind::Bits(_)) || c.pg_type == "jsonb" {
                return Err(Error::Schema(format!(
                    "table {name:?}: column {:?} ({}) cannot be in the keyset (the cursor and primary-key columns): sluice cannot reproduce how MySQL orders and compares it; choose another `cursor`, or set `primary_key` to other unique NOT NULL columns in the table's [[tables]] entry",
                    c.name, c.column_type
                )));
            }
        }
        let zero_checked = (0..columns.len())
            .filter(|&i| {
                matches!(
                    columns[i].kind,
                    Kind::Date | Kind::DateTime | Kind::Timestamp
                ) && (zero_dates == ZeroDates::Error || key.contains(&i))
            })
            .collect();
        Ok(TableSchema {
            zero_checked,
            name: name.to_string(),
            columns,
            cursor,
            primary_key,
            key,
            zero_dates,
        })
    }
}

/// One row of `information_schema.COLUMNS`, plus what other tables say about it.
#[derive(Debug, Clone, Default)]
pub struct ColumnInfo {
    pub name: String,
    /// `DATA_TYPE`, e.g. `int`.
    pub data_type: String,
    /// `COLUMN_TYPE`, e.g. `int(10) unsigned`.
    pub column_type: String,
    pub nullable: bool,
    pub numeric_precision: Option<u64>,
    pub numeric_scale: Option<u64>,
    pub datetime_precision: Option<u64>,
    /// MariaDB's JSON is `longtext` with a `json_valid(col)` CHECK constraint.
    pub json_check: bool,
}

/// Per-table choices that change the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapOptions {
    /// TINYINT(1) becomes `boolean` (true) or `smallint` (false).
    pub tinyint1_as_boolean: bool,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            tinyint1_as_boolean: true,
        }
    }
}

/// Maps one source column to a [`Column`], or refuses it naming the table and column.
pub fn map_column(table: &str, info: &ColumnInfo, opts: MapOptions) -> Result<Column> {
    let data_type = info.data_type.to_ascii_lowercase();
    let ct = info.column_type.to_ascii_lowercase();
    let unsigned = ct.contains("unsigned");
    let fsp = info.datetime_precision.unwrap_or(0).min(6);
    let (kind, pg_type): (Kind, String) = match data_type.as_str() {
        "tinyint" if ct.starts_with("tinyint(1)") && !unsigned && opts.tinyint1_as_boolean => {
            (Kind::Bool, "boolean".into())
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" if unsigned => (
            Kind::UInt,
            match data_type.as_str() {
                "tinyint" => "smallint",
                "smallint" | "mediumint" => "integer",
                "int" | "integer" => "bigint",
                _ => "numeric(20,0)",
            }
            .into(),
        ),
        "tinyint" | "smallint" => (Kind::Int, "smallint".into()),
        "mediumint" | "int" | "integer" => (Kind::Int, "integer".into()),
        "bigint" => (Kind::Int, "bigint".into()),
        "decimal" | "numeric" => {
            let (p, s) = (
                info.numeric_precision.unwrap_or(10) as u32,
                info.numeric_scale.unwrap_or(0) as u32,
            );
            (Kind::Decimal(p, s), format!("numeric({p},{s})"))
        }
        "float" => (Kind::Float32, "real".into()),
        "double" | "real" => (Kind::Float64, "double precision".into()),
        "longtext" if info.json_check => (Kind::Text, "jsonb".into()),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            (Kind::Text, "text".into())
        }
        "enum" | "set" => (Kind::CastText, "text".into()),
        "json" => (Kind::Text, "jsonb".into()),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            (Kind::Bytes, "bytea".into())
        }
        "date" => (Kind::Date, "date".into()),
        "datetime" => (
            Kind::DateTime,
            format!("timestamp({fsp}) without time zone"),
        ),
        "timestamp" => (Kind::Timestamp, format!("timestamp({fsp}) with time zone")),
        "time" => (Kind::CastText, "interval".into()),
        "year" => (Kind::CastInt, "smallint".into()),
        "bit" => {
            let n = info.numeric_precision.unwrap_or(1).clamp(1, 64) as u32;
            (Kind::Bits(n), format!("bit({n})"))
        }
        other => {
            return Err(Error::Schema(format!(
                "table {table:?}, column {:?}: MySQL type {other:?} ({}) has no lossless PostgreSQL mapping in sluice; leave the table out, or replicate a view that casts the column to a supported type",
                info.name, info.column_type
            )))
        }
    };
    Ok(Column {
        name: info.name.clone(),
        column_type: info.column_type.clone(),
        nullable: info.nullable,
        kind,
        pg_type,
    })
}

/// Whether an existing target column of type `have` (as PostgreSQL's `format_type` prints
/// it) holds every value of `col` exactly. The type sluice would create is always
/// accepted; so are these widenings:
///
/// - integers (and YEAR) into any wider integer type or `numeric` with enough integer digits;
/// - `numeric(p,s)` into `numeric` with at least as many integer and fraction digits;
/// - `real` into `double precision`;
/// - `text` into `character varying` without a length;
/// - `jsonb` into `json`;
/// - `timestamp(n)`, `timestamptz(n)`, `interval` into the same type with precision ≥ n;
/// - `bit(n)` into `bit varying(m)` with m ≥ n.
pub fn target_type_accepts(col: &Column, have: &str) -> bool {
    /// `name(a,b)` → (name, [a, b]); a missing modifier list gives [].
    fn parse(t: &str) -> (String, Vec<u32>) {
        let t = t.trim();
        match t.find('(') {
            Some(open) => {
                let close = t[open..].find(')').map_or(t.len(), |c| open + c);
                let mods = t[open + 1..close]
                    .split(',')
                    .filter_map(|m| m.trim().parse().ok())
                    .collect();
                let name = format!("{}{}", &t[..open], &t[(close + 1).min(t.len())..]);
                (name.split_whitespace().collect::<Vec<_>>().join(" "), mods)
            }
            None => (t.to_string(), Vec::new()),
        }
    }
    let (want_name, want_mods) = parse(&col.pg_type);
    let (have_name, have_mods) = parse(have);
    if have_name == want_name && have_mods == want_mods {
        return true;
    }
    // Integer digits a numeric must have to hold each integer type.
    let int_digits = |t: &str| -> Option<u32> {
        match t {
            "smallint" => Some(5),
            "integer" => Some(10),
            "bigint" => Some(19),
            _ => None,
        }
    };
    let int_rank = |t: &str| {
        ["smallint", "integer", "bigint"]
            .iter()
            .position(|x| *x == t)
    };
    let numeric_holds = |int: u32, frac: u32| -> bool {
        match have_mods.as_slice() {
            [] => true,
            [p] => *p >= int && frac == 0,
            [p, s] => *s >= frac && p.saturating_sub(*s) >= int,
            _ => false,
        }
    };
    let precision_at_least = |n: u32| match have_mods.as_slice() {
        [] => true, // no modifier: microseconds
        [m] => *m >= n,
        _ => false,
    };
    match want_name.as_str() {
        "smallint" | "integer" | "bigint" => match have_name.as_str() {
            "numeric" => numeric_holds(int_digits(&want_name).unwrap_or(0), 0),
            h => matches!((int_rank(h), int_rank(&want_name)), (Some(a), Some(b)) if a >= b),
        },
        "numeric" => {
            let (p, s) = match want_mods.as_slice() {
                [p, s] => (*p, *s),
                [p] => (*p, 0),
                _ => return false,
            };
            have_name == "numeric" && numeric_holds(p - s, s)
        }
        "real" => have_name == "double precision",
        "text" => have_name == "character varying" && have_mods.is_empty(),
        "jsonb" => have_name == "json",
        "timestamp without time zone" | "timestamp with time zone" | "interval" => {
            have_name == want_name && precision_at_least(want_mods.first().copied().unwrap_or(6))
        }
        "bit" => {
            have_name == "bit varying"
                && (have_mods.is_empty() || have_mods[0] >= want_mods.first().copied().unwrap_or(1))
        }
        _ => false,
    }
}

/// Quotes a MySQL identifier: backticks, with embedded backticks doubled.
pub fn quote_mysql(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Quotes a PostgreSQL identifier: double quotes, with embedded ones doubled.
pub fn quote_pg(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, dt: &str, ct: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            data_type: dt.into(),
            column_type: ct.into(),
            nullable: false,
            numeric_precision: Some(20),
            numeric_scale: Some(0),
            datetime_precision: Some(6),
            json_check: false,
        }
    }

    fn col(name: &str, dt: &str, ct: &str) -> Column {
        map_column("t", &info(name, dt, ct), MapOptions::default()).unwrap()
    }

    #[test]
    fn unsigned_bigint_widens_to_numeric() {
        let c = col("u", "bigint", "bigint(20) unsigned");
        assert_eq!((c.kind, c.pg_type.as_str()), (Kind::UInt, "numeric(20,0)"));
        let c = col("b", "tinyint", "tinyint(1)");
        assert_eq!(c.kind, Kind::Bool);
        let opts = MapOptions {
            tinyint1_as_boolean: false,
        };
        let c = map_column("t", &info("b", "tinyint", "tinyint(1)"), opts).unwrap();
        assert_eq!((c.kind, c.pg_type.as_str()), (Kind::Int, "smallint"));
    }

    #[test]
    fn mariadb_json_is_longtext_with_a_check() {
        let mut i = info("j", "longtext", "longtext");
        assert_eq!(
            map_column("t", &i, MapOptions::default()).unwrap().pg_type,
            "text"
        );
        i.json_check = true;
        assert_eq!(
            map_column("t", &i, MapOptions::default()).unwrap().pg_type,
            "jsonb"
        );
    }

    #[test]
    fn target_types_accept_the_mapping_and_documented_widenings() {
        let ok = |c: &Column, have: &str| target_type_accepts(c, have);
        let int = col("i", "int", "int(11)");
        assert!(ok(&int, "integer") && ok(&int, "bigint") && ok(&int, "numeric"));
        assert!(ok(&int, "numeric(10,0)") && !ok(&int, "numeric(9,0)"));
        assert!(!ok(&int, "smallint") && !ok(&int, "text") && !ok(&int, "real"));
        let u64c = col("u", "bigint", "bigint(20) unsigned");
        assert!(ok(&u64c, "numeric(20,0)") && ok(&u64c, "numeric") && !ok(&u64c, "bigint"));
        let mut dec = info("d", "decimal", "decimal(30,10)");
        dec.numeric_precision = Some(30);
        dec.numeric_scale = Some(10);
        let dec = map_column("t", &dec, MapOptions::default()).unwrap();
        assert_eq!(dec.pg_type, "numeric(30,10)");
        assert!(ok(&dec, "numeric(30,10)") && ok(&dec, "numeric(40,12)") && ok(&dec, "numeric"));
        assert!(!ok(&dec, "numeric(30,9)") && !ok(&dec, "numeric(29,10)"));
        let dt = col("t", "datetime", "datetime(6)");
        assert_eq!(dt.pg_type, "timestamp(6) without time zone");
        assert!(
            ok(&dt, "timestamp without time zone") && ok(&dt, "timestamp(6) without time zone")
        );
        assert!(
            !ok(&dt, "timestamp(3) without time zone") && !ok(&dt, "timestamp(6) with time zone")
        );
        let txt = col("s", "varchar", "varchar(10)");
        assert!(
            ok(&txt, "text") && ok(&txt, "character varying") && !ok(&txt, "character varying(10)")
        );
        let mut b = info("b", "bit", "bit(5)");
        b.numeric_precision = Some(5);
        let b = map_column("t", &b, MapOptions::default()).unwrap();
        assert!(
            ok(&b, "bit(5)")
                && ok(&b, "bit varying(8)")
                && !ok(&b, "bit(4)")
                && !ok(&b, "bit varying(4)")
        );
        let f = col("f", "float", "float");
        assert!(ok(&f, "real") && ok(&f, "double precision") && !ok(&f, "numeric"));
        let bool_c = col("b", "tinyint", "tinyint(1)");
        assert!(ok(&bool_c, "boolean") && !ok(&bool_c, "smallint"));
    }

    #[test]
    fn spatial_types_are_refused_by_name() {
        let err = map_column(
            "shapes",
            &info("area", "geometry", "geometry"),
            MapOptions::default(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"shapes\"") && msg.contains("\"area\""),
            "{msg}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn keyset_is_cursor_then_missing_key_columns() {
        let cols = vec![
            col("id", "int", "int(11)"),
            col("at", "datetime", "datetime(6)"),
        ];
        let t = TableSchema::resolve(
            "t",
            cols.clone(),
            &["at".into()],
            None,
            &["id".into()],
            ZeroDates::Null,
        )
        .unwrap();
        assert_eq!(t.key, vec![1, 0]);
        let t = TableSchema::resolve(
            "t",
            cols.clone(),
            &["id".into()],
            None,
            &["id".into()],
            ZeroDates::Null,
        )
        .unwrap();
        assert_eq!(t.key, vec![0]);
        let err = TableSchema::resolve(
            "t",
            cols.clone(),
            &["nope".into()],
            None,
            &["id".into()],
            ZeroDates::Null,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"nope\""));
        let err = TableSchema::resolve("t", cols, &["at".into()], None, &[], ZeroDates::Null)
            .unwrap_err();
        assert!(err.to_string().contains("no primary key"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_mysql("we`ird; x"), "`we``ird; x`");
        assert_eq!(quote_pg("Mi\"xed"), "\"Mi\"\"xed\"");
    }
}
