//! The keyset a polled table is read by: its cursor columns, then the primary-key columns
//! not already among them. Rows are read in keyset order, and a polling position is the
//! keyset of the last row handed out.
//!
//! A position is stored as `{"keyset": {"columns": [...], "values": [...]}}`: the column
//! names say what the values mean, so a position stored for another cursor is refused
//! rather than misread.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Kind, Position, TableModel};
use crate::source::mysql::SourceTable;
use crate::value::{Row, Value};

/// Which columns a table is polled by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyset {
    /// Indexes of the cursor columns.
    pub cursor: Vec<usize>,
    /// Indexes of the keyset: the cursor columns, then the primary-key columns not already
    /// among them.
    pub columns: Vec<usize>,
}

impl Keyset {
    /// Resolves the configured cursor against the table and its primary key (`key`).
    /// Refuses unknown or nullable cursor columns, and keyset columns whose order sluice
    /// cannot reproduce.
    pub fn resolve(source: &SourceTable, cursor: &[String], key: &[usize]) -> Result<Keyset> {
        let name = &source.name;
        let cursor: Vec<usize> = cursor
            .iter()
            .map(|c| source.find(c, "cursor", "cursor"))
            .collect::<Result<_>>()?;
        for &i in &cursor {
            if source.columns[i].nullable {
                return Err(Error::Schema(format!(
                    "table {name:?}: cursor column {:?} allows NULL, and rows with a NULL cursor would never be read; make it NOT NULL or choose another cursor",
                    source.columns[i].name
                )));
            }
        }
        let mut columns = cursor.clone();
        for &i in key {
            if !columns.contains(&i) {
                columns.push(i);
            }
        }
        // Keyset reads compare bound values with `>`; these kinds order (ENUM and SET by
        // position) or compare with bound text (BIT, TIME, JSON) differently from their values.
        for &i in &columns {
            let c = &source.columns[i];
            if matches!(
                c.kind,
                Kind::Enum | Kind::Set | Kind::Time { .. } | Kind::Bits(_) | Kind::Json
            ) {
                return Err(Error::Schema(format!(
                    "table {name:?}: column {:?} ({}) cannot be in the keyset (the cursor and primary-key columns): sluice cannot reproduce how MySQL orders and compares it; choose another `cursor`, or set `primary_key` to other unique NOT NULL columns in the table's [[tables]] entry",
                    c.name, c.column_type
                )));
            }
        }
        Ok(Keyset { cursor, columns })
    }

    /// The keyset values of a row.
    pub fn of(&self, row: &Row) -> Vec<Value> {
        self.columns.iter().map(|&i| row[i].clone()).collect()
    }

    /// Names of the keyset columns.
    pub fn names(&self, t: &TableModel) -> Vec<String> {
        self.columns
            .iter()
            .map(|&i| t.columns[i].name.clone())
            .collect()
    }

    /// Whether the first cursor column is a point in time (DATETIME or TIMESTAMP).
    pub fn time_cursor(&self, t: &TableModel) -> bool {
        matches!(
            t.columns[self.cursor[0]].kind,
            Kind::DateTime { .. } | Kind::Timestamp { .. }
        )
    }

    /// The position after a row with keyset `values`.
    pub fn position(&self, t: &TableModel, values: Vec<Value>) -> Position {
        Position(
            serde_json::to_value(Stored {
                keyset: StoredKeyset {
                    columns: self.names(t),
                    values,
                },
                load: None,
            })
            .expect("keyset values serialise"),
        )
    }

    /// The position of a load in primary-key order: `values` is where the cursor takes
    /// over, `after` the key of the last row read, `until` the horizon it started at.
    pub fn load_position(
        &self,
        t: &TableModel,
        values: Vec<Value>,
        after: Vec<Value>,
        until: Value,
    ) -> Position {
        Position(
            serde_json::to_value(Stored {
                keyset: StoredKeyset {
                    columns: self.names(t),
                    values,
                },
                load: Some(StoredLoad { after, until }),
            })
            .expect("keyset values serialise"),
        )
    }

    /// The load in primary-key order a stored position is in the middle of: the key of the
    /// last row read and the horizon it started at.
    pub fn decode_load(p: &Position) -> Option<(Vec<Value>, Value)> {
        serde_json::from_value::<Stored>(p.0.clone())
            .ok()
            .and_then(|s| s.load)
            .map(|l| (l.after, l.until))
    }

    /// The keyset values of a stored position. Refuses a position stored for other keyset
    /// columns (the cursor or key changed in the config): it would not mean the same rows.
    pub fn decode(&self, t: &TableModel, p: &Position) -> Result<Vec<Value>> {
        let stored = decode(p).map_err(|e| {
            Error::Schema(format!(
                "table {:?}: its stored position is not a polling position ({e}); it was written by another capture mode. Delete the table's row from sluice.replication_state to start over",
                t.name
            ))
        })?;
        let names = self.names(t);
        if stored.columns != names {
            return Err(Error::Schema(format!(
                "table {:?}: its position was stored for keyset ({}) but the configuration now gives ({}); restore the old cursor, or delete the row for this table from sluice.replication_state to start over",
                t.name,
                stored.columns.join(", "),
                names.join(", ")
            )));
        }
        if stored.values.len() != names.len() {
            return Err(Error::Schema(format!(
                "table {:?}: its stored position holds {} values for {} keyset columns; delete the row for this table from sluice.replication_state to start over",
                t.name,
                stored.values.len(),
                names.len()
            )));
        }
        Ok(stored.values)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    keyset: StoredKeyset,
    /// An initial load read in primary-key order, under way: the key of the last row read
    /// and the cursor horizon it started at. `keyset` is then where the cursor takes over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    load: Option<StoredLoad>,
}

#[derive(Serialize, Deserialize)]
struct StoredLoad {
    after: Vec<Value>,
    until: Value,
}

#[derive(Serialize, Deserialize)]
struct StoredKeyset {
    columns: Vec<String>,
    values: Vec<Value>,
}

fn decode(p: &Position) -> std::result::Result<StoredKeyset, serde_json::Error> {
    serde_json::from_value::<Stored>(p.0.clone()).map(|s| s.keyset)
}

/// A polling position as `column → value` pairs in keyset order, for `status`; `None` when
/// the position is not a polling one.
pub fn describe(p: &Position) -> Option<Vec<(String, Value)>> {
    decode(p)
        .ok()
        .map(|s| s.columns.into_iter().zip(s.values).collect())
}

/// `(k1, k2, …) OP (?, ?, …)` in the expanded form MariaDB turns into an index range scan
/// (it scans the whole index for the row-value form). `greater` picks `>`/`>=` over
/// `<`/`<=`, `strict` the strict form for the last column. `phs[i]` is the placeholder of
/// column `i` (`?`, or a cast around it). Returns the SQL and, for each `?`, the index of the
/// keyset value to bind.
pub fn condition(
    cols: &[String],
    phs: &[String],
    greater: bool,
    strict: bool,
) -> (String, Vec<usize>) {
    let (op, op_eq) = if greater { (">", ">=") } else { ("<", "<=") };
    fn rest(
        cols: &[String],
        phs: &[String],
        i: usize,
        op: &str,
        last: &str,
    ) -> (String, Vec<usize>) {
        if i == cols.len() - 1 {
            return (format!("{} {last} {}", cols[i], phs[i]), vec![i]);
        }
        let (inner, mut binds) = rest(cols, phs, i + 1, op, last);
        let mut b = vec![i, i];
        b.append(&mut binds);
        (
            format!(
                "({c} {op} {p} OR ({c} = {p} AND {inner}))",
                c = cols[i],
                p = phs[i]
            ),
            b,
        )
    }
    let last = if strict { op } else { op_eq };
    let (body, binds) = rest(cols, phs, 0, op, last);
    if cols.len() == 1 {
        return (body, binds);
    }
    let mut all = vec![0];
    all.extend(binds);
    (format!("{} {op_eq} {} AND {body}", cols[0], phs[0]), all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::mysql::introspect::SourceColumn;

    #[test]
    fn conditions_use_the_range_friendly_form() {
        let cols = vec!["`a`".to_string(), "`b`".to_string(), "`c`".to_string()];
        let q = vec!["?".to_string(); 3];
        let (sql, binds) = condition(&cols, &q, true, true);
        assert_eq!(
            sql,
            "`a` >= ? AND (`a` > ? OR (`a` = ? AND (`b` > ? OR (`b` = ? AND `c` > ?))))"
        );
        assert_eq!(binds, vec![0, 0, 0, 1, 1, 2]);
        let (sql, binds) = condition(&cols[..1], &q[..1], false, false);
        assert_eq!(sql, "`a` <= ?");
        assert_eq!(binds, vec![0]);
    }

    fn table() -> SourceTable {
        let col = |name: &str, kind, nullable| SourceColumn {
            name: name.into(),
            column_type: "x".into(),
            kind,
            nullable,
            default: None,
        };
        SourceTable {
            name: "t".into(),
            columns: vec![
                col("id", Kind::Int { bytes: 4 }, false),
                col("at", Kind::DateTime { fsp: 6 }, false),
                col("e", Kind::Enum, false),
                col("maybe", Kind::DateTime { fsp: 6 }, true),
            ],
            primary_key: vec!["id".into()],
            indexes: vec![],
            excluded: vec![],
        }
    }

    #[test]
    fn keyset_is_cursor_then_missing_key_columns() {
        let t = table();
        assert_eq!(
            Keyset::resolve(&t, &["at".into()], &[0]).unwrap().columns,
            vec![1, 0]
        );
        assert_eq!(
            Keyset::resolve(&t, &["id".into()], &[0]).unwrap().columns,
            vec![0]
        );
        let err = Keyset::resolve(&t, &["nope".into()], &[0]).unwrap_err();
        assert!(err.to_string().contains("\"nope\""));
        let err = Keyset::resolve(&t, &["e".into()], &[0]).unwrap_err();
        assert!(err.to_string().contains("cannot be in the keyset"));
        let err = Keyset::resolve(&t, &["maybe".into()], &[0]).unwrap_err();
        assert!(err.to_string().contains("allows NULL"));
    }

    #[test]
    fn positions_name_their_columns_and_refuse_others() {
        let t = table();
        let spec = crate::source::mysql::ReadSpec::new(&t, vec![0], Default::default(), &[1, 0]);
        let k = Keyset::resolve(&t, &["at".into()], &[0]).unwrap();
        let p = k.position(&spec.model, vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(
            k.decode(&spec.model, &p).unwrap(),
            vec![Value::Int(1), Value::Int(2)]
        );
        assert_eq!(describe(&p).unwrap()[0].0, "at");
        let other = Keyset::resolve(&t, &["id".into()], &[0]).unwrap();
        let err = other.decode(&spec.model, &p).unwrap_err();
        assert!(err.to_string().contains("stored for keyset (at, id)"));
    }
}
