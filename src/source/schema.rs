//! Table shapes and the MySQL → PostgreSQL type mapping.
//!
//! | MySQL / MariaDB                       | PostgreSQL          | read as                 |
//! |---------------------------------------|---------------------|-------------------------|
//! | TINYINT(1)                            | boolean             | integer, 0 = false      |
//! | TINYINT, SMALLINT                     | smallint            | integer                 |
//! | MEDIUMINT, INT                        | integer             | integer                 |
//! | BIGINT                                | bigint              | integer                 |
//! | TINYINT UNSIGNED                      | smallint            | unsigned integer        |
//! | SMALLINT/MEDIUMINT UNSIGNED           | integer             | unsigned integer        |
//! | INT UNSIGNED                          | bigint              | unsigned integer        |
//! | BIGINT UNSIGNED                       | numeric(20)         | unsigned integer        |
//! | DECIMAL(p,s)                          | numeric(p,s)        | exact digits as text    |
//! | FLOAT / DOUBLE                        | real / double precision | float               |
//! | CHAR, VARCHAR, *TEXT, ENUM, SET       | text                | text                    |
//! | JSON                                  | jsonb               | text                    |
//! | BINARY, VARBINARY, *BLOB              | bytea               | bytes                   |
//! | DATE                                  | date                | date                    |
//! | DATETIME(n)                           | timestamp(n)        | date-time               |
//! | TIMESTAMP(n)                          | timestamptz(n)      | UTC instant             |
//! | TIME(n)                               | interval            | text (`-838:59:59`)     |
//! | YEAR                                  | smallint            | integer                 |
//! | BIT(n)                                | bit(n)              | text of 0s and 1s       |
//!
//! Anything else (spatial types, for instance) is refused at start naming the table and
//! column: a column is never silently dropped.

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
    /// Selected as `CAST(col AS CHAR)`, kept as text: DECIMAL, ENUM, SET, TIME.
    CastText,
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
}

impl TableSchema {
    /// The keyset values of a row: its watermark.
    pub fn key_of(&self, row: &Row) -> Vec<Value> {
        self.key.iter().map(|&i| row[i].clone()).collect()
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
    ) -> Result<TableSchema> {
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
        let mut key = cursor.clone();
        for &i in &primary_key {
            if !key.contains(&i) {
                key.push(i);
            }
        }
        Ok(TableSchema {
            name: name.to_string(),
            columns,
            cursor,
            primary_key,
            key,
        })
    }
}

/// Maps one `information_schema.COLUMNS` row to a [`Column`], or refuses it.
pub fn map_column(
    table: &str,
    name: &str,
    data_type: &str,
    column_type: &str,
    nullable: bool,
    numeric_precision: Option<u64>,
    numeric_scale: Option<u64>,
    datetime_precision: Option<u64>,
) -> Result<Column> {
    let data_type = data_type.to_ascii_lowercase();
    let ct = column_type.to_ascii_lowercase();
    let unsigned = ct.contains("unsigned");
    let fsp = datetime_precision.unwrap_or(0).min(6);
    let (kind, pg_type): (Kind, String) = match data_type.as_str() {
        "tinyint" if ct.starts_with("tinyint(1)") && !unsigned => (Kind::Bool, "boolean".into()),
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" if unsigned => (
            Kind::UInt,
            match data_type.as_str() {
                "tinyint" => "smallint",
                "smallint" | "mediumint" => "integer",
                "int" | "integer" => "bigint",
                _ => "numeric(20)",
            }
            .into(),
        ),
        "tinyint" | "smallint" => (Kind::Int, "smallint".into()),
        "mediumint" | "int" | "integer" => (Kind::Int, "integer".into()),
        "bigint" => (Kind::Int, "bigint".into()),
        "decimal" | "numeric" => (
            Kind::CastText,
            format!(
                "numeric({},{})",
                numeric_precision.unwrap_or(10),
                numeric_scale.unwrap_or(0)
            ),
        ),
        "float" => (Kind::Float32, "real".into()),
        "double" | "real" => (Kind::Float64, "double precision".into()),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
            (Kind::Text, "text".into())
        }
        "enum" | "set" => (Kind::CastText, "text".into()),
        "json" => (Kind::Text, "jsonb".into()),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            (Kind::Bytes, "bytea".into())
        }
        "date" => (Kind::Date, "date".into()),
        "datetime" => (Kind::DateTime, format!("timestamp({fsp})")),
        "timestamp" => (Kind::Timestamp, format!("timestamptz({fsp})")),
        "time" => (Kind::CastText, "interval".into()),
        "year" => (Kind::CastInt, "smallint".into()),
        "bit" => {
            let n = numeric_precision.unwrap_or(1).clamp(1, 64) as u32;
            (Kind::Bits(n), format!("bit({n})"))
        }
        other => {
            return Err(Error::Schema(format!(
                "table {table:?}, column {name:?}: MySQL type {other:?} ({column_type}) has no lossless PostgreSQL mapping in sluice; leave the table out, or replicate a view that casts the column to a supported type"
            )))
        }
    };
    Ok(Column {
        name: name.to_string(),
        column_type: column_type.to_string(),
        nullable,
        kind,
        pg_type,
    })
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

    fn col(name: &str, dt: &str, ct: &str) -> Column {
        map_column("t", name, dt, ct, false, Some(20), Some(0), Some(6)).unwrap()
    }

    #[test]
    fn unsigned_bigint_widens_to_numeric() {
        let c = col("u", "bigint", "bigint(20) unsigned");
        assert_eq!((c.kind, c.pg_type.as_str()), (Kind::UInt, "numeric(20)"));
        let c = col("b", "tinyint", "tinyint(1)");
        assert_eq!(c.kind, Kind::Bool);
    }

    #[test]
    fn spatial_types_are_refused_by_name() {
        let err = map_column(
            "shapes", "area", "geometry", "geometry", true, None, None, None,
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
        let t =
            TableSchema::resolve("t", cols.clone(), &["at".into()], None, &["id".into()]).unwrap();
        assert_eq!(t.key, vec![1, 0]);
        let t =
            TableSchema::resolve("t", cols.clone(), &["id".into()], None, &["id".into()]).unwrap();
        assert_eq!(t.key, vec![0]);
        let err = TableSchema::resolve("t", cols.clone(), &["nope".into()], None, &["id".into()])
            .unwrap_err();
        assert!(err.to_string().contains("\"nope\""));
        let err = TableSchema::resolve("t", cols, &["at".into()], None, &[]).unwrap_err();
        assert!(err.to_string().contains("no primary key"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_mysql("we`ird; x"), "`we``ird; x`");
        assert_eq!(quote_pg("Mi\"xed"), "\"Mi\"\"xed\"");
    }
}
