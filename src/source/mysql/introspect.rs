//! What a source table looks like, from `information_schema`, mapped to the neutral
//! [`Kind`]s of the model.
//!
//! The mapping, from MySQL type to [`Kind`] and on to the PostgreSQL type, is one table in the
//! book, `docs/src/type-mapping.md`; `tests/docs.rs` checks every row of it against
//! [`map_column`] and `sink::postgres::types::pg_type`.
//!
//! Anything else (spatial types, MariaDB's UUID and INET types, for instance) is refused at
//! start naming the table and column: a column is never silently dropped.

use sea_orm::sqlx::{self, MySqlConnection, Row as _};

use super::quote;
use crate::error::{Error, Result, Side};
use crate::model::Kind;

/// One source column as introspected.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceColumn {
    pub name: String,
    /// MySQL's full column type, e.g. `int(10) unsigned`.
    pub column_type: String,
    pub kind: Kind,
    /// The source column allows NULL.
    pub nullable: bool,
    /// Its default, as MariaDB writes it in `COLUMN_DEFAULT` (a literal quoted, an expression
    /// bare; see [`crate::model::Column::default`]).
    pub default: Option<String>,
}

/// A source table as introspected.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTable {
    pub name: String,
    pub columns: Vec<SourceColumn>,
    /// The primary key's column names, in key order (empty without one).
    pub primary_key: Vec<String>,
    /// Secondary indexes a PostgreSQL btree can mirror (full columns, BTREE/HASH).
    pub indexes: Vec<crate::model::Index>,
    /// The columns `exclude_columns` left out that the table has.
    pub excluded: Vec<String>,
}

/// A foreign key of a source table, as `information_schema` has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKeyInfo {
    pub name: String,
    pub columns: Vec<String>,
    pub parent: String,
    pub parent_columns: Vec<String>,
    /// `CASCADE`, `SET NULL`, `RESTRICT`, `NO ACTION`.
    pub on_delete: String,
    pub on_update: String,
}

/// The foreign keys of `table` (as the child), in the source database.
pub async fn foreign_keys(conn: &mut MySqlConnection, table: &str) -> Result<Vec<ForeignKeyInfo>> {
    let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
        "SELECT CAST(k.CONSTRAINT_NAME AS CHAR), CAST(k.COLUMN_NAME AS CHAR), \
                CAST(IF(k.REFERENCED_TABLE_SCHEMA = DATABASE(), k.REFERENCED_TABLE_NAME, \
                  CONCAT(k.REFERENCED_TABLE_SCHEMA, '.', k.REFERENCED_TABLE_NAME)) AS CHAR), \
                CAST(k.REFERENCED_COLUMN_NAME AS CHAR), \
                CAST(r.DELETE_RULE AS CHAR), CAST(r.UPDATE_RULE AS CHAR) \
         FROM information_schema.KEY_COLUMN_USAGE k \
         JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
           ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
          AND r.TABLE_NAME = k.TABLE_NAME \
         WHERE k.TABLE_SCHEMA = DATABASE() AND k.TABLE_NAME = ? \
           AND k.REFERENCED_TABLE_NAME IS NOT NULL \
         ORDER BY k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| {
        Error::db(
            Side::Source,
            format!("reading the foreign keys of {table:?}"),
            &e,
        )
    })?;
    let mut out: Vec<ForeignKeyInfo> = Vec::new();
    for (name, col, parent, parent_col, on_delete, on_update) in rows {
        match out.last_mut() {
            Some(fk) if fk.name == name => {
                fk.columns.push(col);
                fk.parent_columns.push(parent_col);
            }
            _ => out.push(ForeignKeyInfo {
                name,
                columns: vec![col],
                parent,
                parent_columns: vec![parent_col],
                on_delete,
                on_update,
            }),
        }
    }
    Ok(out)
}

/// Per-table choices that change the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapOptions {
    /// TINYINT(1) becomes Bool (true) or a 1-byte integer (false).
    pub tinyint1_as_boolean: bool,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            tinyint1_as_boolean: true,
        }
    }
}

/// Columns left out of a table (`exclude_columns`): never selected, never mapped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exclude<'a> {
    pub columns: &'a [String],
    /// A name the table lacks is an error (a table named on its own); a pattern's tables
    /// need not all have every name.
    pub strict: bool,
}

impl Exclude<'_> {
    /// MySQL's column names are case-insensitive.
    pub fn has(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.eq_ignore_ascii_case(column))
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
    /// `COLUMN_DEFAULT`, normalised to MariaDB's form.
    pub default: Option<String>,
}

/// Reads a table's columns and primary key from `information_schema`.
/// `exclude`: columns left out, as if the table had none of them.
pub async fn introspect(
    conn: &mut MySqlConnection,
    table: &str,
    opts: MapOptions,
    exclude: Exclude<'_>,
) -> Result<SourceTable> {
    let ctx = |what: &str| format!("introspecting table {table:?} ({what})");
    let rows = sqlx::query(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
                IS_NULLABLE = 'YES', CAST(NUMERIC_PRECISION AS UNSIGNED), \
                CAST(NUMERIC_SCALE AS UNSIGNED), CAST(DATETIME_PRECISION AS UNSIGNED), \
                CAST(COLUMN_DEFAULT AS CHAR), CAST(EXTRA AS CHAR) \
         FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Source, ctx("columns"), &e))?;
    if rows.is_empty() {
        let db: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::db(Side::Source, ctx("database"), &e))?;
        return Err(Error::Schema(format!(
            "table {table:?} does not exist in source database {:?}; check the name in [[tables]] (names are case-sensitive on most servers)",
            db.unwrap_or_default()
        )));
    }
    // MariaDB (10.2.7 on) writes COLUMN_DEFAULT as SQL: literals quoted, NULL as `NULL`,
    // expressions bare. MySQL writes the bare value and marks expressions DEFAULT_GENERATED
    // in EXTRA: its literals are quoted here, so both read the same.
    let mariadb = super::Flavor::detect(conn).await?.mariadb;
    let mut infos: Vec<ColumnInfo> = Vec::with_capacity(rows.len());
    for r in &rows {
        let get_s = |i: usize| -> Result<String> {
            r.try_get::<String, _>(i)
                .map_err(|e| Error::db(Side::Source, ctx("decode"), &e))
        };
        let get_u = |i: usize| -> Result<Option<u64>> {
            r.try_get::<Option<u64>, _>(i)
                .map_err(|e| Error::db(Side::Source, ctx("decode"), &e))
        };
        let nullable: i64 = r
            .try_get(3)
            .map_err(|e| Error::db(Side::Source, ctx("decode"), &e))?;
        infos.push(ColumnInfo {
            name: get_s(0)?,
            data_type: get_s(1)?,
            column_type: get_s(2)?,
            nullable: nullable != 0,
            numeric_precision: get_u(4)?,
            numeric_scale: get_u(5)?,
            datetime_precision: get_u(6)?,
            json_check: false,
            default: {
                let raw: Option<String> = r
                    .try_get(7)
                    .map_err(|e| Error::db(Side::Source, ctx("decode"), &e))?;
                let extra: String = r
                    .try_get::<Option<String>, _>(8)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                match raw {
                    Some(d) if mariadb => Some(d),
                    Some(d) if extra.to_ascii_uppercase().contains("DEFAULT_GENERATED") => Some(d),
                    Some(d) => Some(format!("'{}'", d.replace('\'', "''"))),
                    None => None,
                }
            },
        });
    }
    if exclude.strict {
        let missing: Vec<&String> = exclude
            .columns
            .iter()
            .filter(|c| !infos.iter().any(|i| i.name.eq_ignore_ascii_case(c)))
            .collect();
        if !missing.is_empty() {
            let names = missing
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::Schema(format!(
                "table {table:?}: exclude_columns names {names}, which the table does not have (its columns: {}); correct the name or remove it",
                infos.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    // Left out before mapping: an excluded column may be of a type sluice cannot carry.
    let excluded: Vec<String> = infos
        .iter()
        .filter(|i| exclude.has(&i.name))
        .map(|i| i.name.clone())
        .collect();
    infos.retain(|i| !exclude.has(&i.name));
    // MariaDB's JSON is an alias of LONGTEXT plus a `json_valid(`col`)` CHECK constraint
    // (DATA_TYPE says `longtext`); MySQL reports `json` itself and has no TABLE_NAME in
    // CHECK_CONSTRAINTS, so only MariaDB is asked.
    if infos
        .iter()
        .any(|c| c.data_type.eq_ignore_ascii_case("longtext"))
        && mariadb
    {
        let checks: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::db(Side::Source, ctx("check constraints"), &e))?;
        for c in &mut infos {
            let clause = format!("json_valid({})", quote(&c.name));
            c.json_check = checks.iter().any(|k| k.trim() == clause);
        }
    }
    let columns = infos
        .iter()
        .map(|i| {
            Ok(SourceColumn {
                name: i.name.clone(),
                column_type: i.column_type.clone(),
                kind: map_column(table, i, opts)?,
                nullable: i.nullable,
                default: i.default.clone(),
            })
        })
        .collect::<Result<_>>()?;
    let primary_key: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(COLUMN_NAME AS CHAR) FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::db(Side::Source, ctx("primary key"), &e))?;
    let mut indexes = indexes(conn, table).await?;
    // An index on an excluded column has no counterpart on the target.
    indexes.retain(|i| !i.columns.iter().any(|c| exclude.has(c)));
    Ok(SourceTable {
        name: table.to_string(),
        columns,
        primary_key,
        indexes,
        excluded,
    })
}

/// A table's secondary indexes that a PostgreSQL btree index can mirror: FULLTEXT and
/// SPATIAL indexes, and indexes on a prefix of a column, are left out (logged once, at debug).
pub async fn indexes(conn: &mut MySqlConnection, table: &str) -> Result<Vec<crate::model::Index>> {
    let rows: Vec<(String, i64, String, Option<i64>, String)> = sqlx::query_as(
        "SELECT CAST(INDEX_NAME AS CHAR), CAST(NON_UNIQUE AS SIGNED), CAST(COLUMN_NAME AS CHAR), \
                CAST(SUB_PART AS SIGNED), CAST(INDEX_TYPE AS CHAR) \
         FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME <> 'PRIMARY' \
         ORDER BY INDEX_NAME, SEQ_IN_INDEX",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| {
        Error::db(
            Side::Source,
            format!("reading the indexes of {table:?}"),
            &e,
        )
    })?;
    let mut out: Vec<crate::model::Index> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for (name, non_unique, column, sub_part, kind) in rows {
        let mirrorable =
            sub_part.is_none() && matches!(kind.to_ascii_uppercase().as_str(), "BTREE" | "HASH");
        if !mirrorable || skipped.contains(&name) {
            if !skipped.contains(&name) {
                tracing::debug!(table, index = %name, "a source index a btree on the target cannot mirror (FULLTEXT, SPATIAL or on a column prefix) is left out");
                skipped.push(name.clone());
            }
            out.retain(|i| i.name != name);
            continue;
        }
        match out.last_mut() {
            Some(i) if i.name == name => i.columns.push(column),
            _ => out.push(crate::model::Index {
                name,
                unique: non_unique == 0,
                columns: vec![column],
            }),
        }
    }
    Ok(out)
}

impl SourceTable {
    /// A table of `model`'s shape, as if introspected.
    pub fn from_model(model: &crate::model::TableModel) -> SourceTable {
        SourceTable {
            name: model.name.clone(),
            columns: model
                .columns
                .iter()
                .map(|c| SourceColumn {
                    name: c.name.clone(),
                    column_type: c.source_type.clone(),
                    kind: c.kind,
                    nullable: c.nullable,
                    default: c.default.clone(),
                })
                .collect(),
            primary_key: model
                .primary_key
                .iter()
                .map(|&i| model.columns[i].name.clone())
                .collect(),
            indexes: model.indexes.clone(),
            excluded: Vec::new(),
        }
    }

    /// The index of the column named `name`, or an error naming the table's columns and
    /// the configuration key to fix (`role`: "cursor", "primary-key").
    pub fn find(&self, col: &str, role: &str, key: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c.name == col)
            .ok_or_else(|| {
                Error::Schema(format!(
                    "table {:?}: {role} column {col:?} does not exist; its columns are {}. Fix `{key}` in the table's [[tables]] entry",
                    self.name,
                    self.columns
                        .iter()
                        .map(|c| format!("{:?}", c.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The primary key: `configured` (from `[[tables]] primary_key`) or the table's own.
    /// Refuses a table without one, and configured key columns that allow NULL.
    pub fn resolve_key(&self, configured: Option<&[String]>) -> Result<Vec<usize>> {
        let name = &self.name;
        let names: &[String] = configured.unwrap_or(&self.primary_key);
        if names.is_empty() {
            return Err(Error::Schema(format!(
                "table {name:?} has no primary key, so rows cannot be told apart; add a PRIMARY KEY on the source, or set `primary_key = [\"col\", …]` (unique, NOT NULL columns) in its [[tables]] entry"
            )));
        }
        let key: Vec<usize> = names
            .iter()
            .map(|c| self.find(c, "primary-key", "primary_key"))
            .collect::<Result<_>>()?;
        if configured.is_some() {
            for &i in &key {
                if self.columns[i].nullable {
                    return Err(Error::Schema(format!(
                        "table {name:?}: primary-key column {:?} allows NULL, so it cannot tell rows apart; choose unique NOT NULL columns in `primary_key` of the table's [[tables]] entry",
                        self.columns[i].name
                    )));
                }
            }
        }
        Ok(key)
    }
}

/// Maps one source column to its [`Kind`], or refuses it naming the table and column.
pub fn map_column(table: &str, info: &ColumnInfo, opts: MapOptions) -> Result<Kind> {
    let data_type = info.data_type.to_ascii_lowercase();
    let ct = info.column_type.to_ascii_lowercase();
    let unsigned = ct.contains("unsigned");
    let fsp = info.datetime_precision.unwrap_or(0).min(6) as u8;
    let int_bytes = |t: &str| match t {
        "tinyint" => 1,
        "smallint" => 2,
        "mediumint" => 3,
        "int" | "integer" => 4,
        _ => 8,
    };
    Ok(match data_type.as_str() {
        "tinyint" if ct.starts_with("tinyint(1)") && !unsigned && opts.tinyint1_as_boolean => {
            Kind::Bool
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" if unsigned => {
            Kind::UInt {
                bytes: int_bytes(&data_type),
            }
        }
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => Kind::Int {
            bytes: int_bytes(&data_type),
        },
        "decimal" | "numeric" => Kind::Decimal {
            precision: info.numeric_precision.unwrap_or(10) as u32,
            scale: info.numeric_scale.unwrap_or(0) as u32,
        },
        "float" => Kind::Float32,
        "double" | "real" => Kind::Float64,
        "longtext" if info.json_check => Kind::Json,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text,
        "enum" => Kind::Enum,
        "set" => Kind::Set,
        "json" => Kind::Json,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Bytes,
        "date" => Kind::Date,
        "datetime" => Kind::DateTime { fsp },
        "timestamp" => Kind::Timestamp { fsp },
        "time" => Kind::Time { fsp },
        "year" => Kind::Year,
        "bit" => Kind::Bits(info.numeric_precision.unwrap_or(1).clamp(1, 64) as u32),
        other => {
            return Err(Error::Schema(format!(
                "table {table:?}, column {:?}: MySQL type {other:?} ({}) has no lossless PostgreSQL mapping in sluice; leave the table out, or replicate a view that casts the column to a supported type",
                info.name, info.column_type
            )))
        }
    })
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
            default: None,
        }
    }

    fn kind(dt: &str, ct: &str) -> Kind {
        map_column("t", &info("c", dt, ct), MapOptions::default()).unwrap()
    }

    #[test]
    fn integers_keep_width_and_sign() {
        assert_eq!(
            kind("bigint", "bigint(20) unsigned"),
            Kind::UInt { bytes: 8 }
        );
        assert_eq!(kind("mediumint", "mediumint(9)"), Kind::Int { bytes: 3 });
        assert_eq!(kind("tinyint", "tinyint(1)"), Kind::Bool);
        let opts = MapOptions {
            tinyint1_as_boolean: false,
        };
        assert_eq!(
            map_column("t", &info("b", "tinyint", "tinyint(1)"), opts).unwrap(),
            Kind::Int { bytes: 1 }
        );
    }

    #[test]
    fn mariadb_json_is_longtext_with_a_check() {
        let mut i = info("j", "longtext", "longtext");
        assert_eq!(
            map_column("t", &i, MapOptions::default()).unwrap(),
            Kind::Text
        );
        i.json_check = true;
        assert_eq!(
            map_column("t", &i, MapOptions::default()).unwrap(),
            Kind::Json
        );
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

    fn table(cols: &[(&str, bool)], pk: &[&str]) -> SourceTable {
        SourceTable {
            name: "t".into(),
            columns: cols
                .iter()
                .map(|(n, nullable)| SourceColumn {
                    name: n.to_string(),
                    column_type: "int(11)".into(),
                    kind: Kind::Int { bytes: 4 },
                    nullable: *nullable,
                    default: None,
                })
                .collect(),
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            indexes: Vec::new(),
            excluded: Vec::new(),
        }
    }

    #[test]
    fn keys_are_introspected_or_configured_and_checked() {
        let t = table(&[("id", false), ("x", true)], &["id"]);
        assert_eq!(t.resolve_key(None).unwrap(), vec![0]);
        let err = table(&[("id", false)], &[]).resolve_key(None).unwrap_err();
        assert!(err.to_string().contains("no primary key"));
        let err = t.resolve_key(Some(&["x".to_string()])).unwrap_err();
        assert!(err.to_string().contains("allows NULL"));
        let err = t.resolve_key(Some(&["nope".to_string()])).unwrap_err();
        assert!(err.to_string().contains("\"nope\""));
    }
}
