//! Key order and each key's final state in a part: what the writer sorts and reduces
//! changes by.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::model::{Change, Op, TableModel};
use crate::value::{Row, Value};

/// The rows of a part in primary-key order. Order inside a batch does not matter for
/// correctness (it commits as a whole), but PostgreSQL inserts into the primary-key index
/// far faster in key order than in cursor order, where keys (random UUIDs, say) are spread
/// over the whole index.
pub(super) fn sorted_by_key<'a>(t: &TableModel, changes: &'a [Change]) -> Vec<&'a Row> {
    let by_key = |a: &&Row, b: &&Row| {
        t.primary_key
            .iter()
            .map(|&i| key_order(&a[i], &b[i]))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    };
    let mut rows: Vec<&Row> = changes.iter().map(|c| &c.row).collect();
    // An ascending key (AUTO_INCREMENT, a sequence) arrives in order: nothing to sort.
    if !rows.is_sorted_by(|a, b| by_key(a, b).is_le()) {
        rows.sort_unstable_by(by_key);
    }
    rows
}

/// The order of two values of one key column as PostgreSQL's index has them: numbers by
/// value, dates and times by time, text and bytes byte by byte (the order of a `C`
/// collation; other collations differ little on the keys that matter here: UUIDs, codes).
/// Values of different kinds (never in one column) by kind.
fn key_order(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::UInt(x), Value::UInt(y)) => x.cmp(y),
        (Value::Int(x), Value::UInt(y)) => i128::from(*x).cmp(&i128::from(*y)),
        (Value::UInt(x), Value::Int(y)) => i128::from(*x).cmp(&i128::from(*y)),
        (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::DateTime(x), Value::DateTime(y)) => x.cmp(y),
        (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => kind_rank(a).cmp(&kind_rank(b)),
    }
}

fn kind_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) | Value::UInt(_) => 2,
        Value::Float(_) => 3,
        Value::Text(_) => 4,
        Value::Bytes(_) => 5,
        Value::Date(_) => 6,
        Value::DateTime(_) => 7,
        Value::Timestamp(_) => 8,
    }
}

/// A primary key inside a part, borrowed: the key columns of a row, or an update's old key.
#[derive(Clone, Copy)]
pub(super) struct Key<'a> {
    values: &'a [Value],
    /// The key columns' places in `values`; `None`: `values` is the key itself.
    cols: Option<&'a [usize]>,
}

impl<'a> Key<'a> {
    pub(super) fn of(primary_key: &'a [usize], row: &'a Row) -> Self {
        Key {
            values: row,
            cols: Some(primary_key),
        }
    }

    pub(super) fn old(key: &'a [Value]) -> Self {
        Key {
            values: key,
            cols: None,
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &'a Value> + '_ {
        let n = self.cols.map_or(self.values.len(), <[usize]>::len);
        (0..n).map(move |i| &self.values[self.cols.map_or(i, |c| c[i])])
    }

    pub(super) fn to_row(self) -> Row {
        self.iter().cloned().collect()
    }
}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

// Key values come from primary keys, which hold no NaN.
impl Eq for Key<'_> {}

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for v in self.iter() {
            std::mem::discriminant(v).hash(h);
            match v {
                Value::Null => {}
                Value::Bool(b) => b.hash(h),
                Value::Int(i) => i.hash(h),
                Value::UInt(u) => u.hash(h),
                Value::Float(f) => f.to_bits().hash(h),
                Value::Text(s) => s.hash(h),
                Value::Bytes(b) => b.hash(h),
                Value::Date(d) => d.hash(h),
                Value::DateTime(d) => d.hash(h),
                Value::Timestamp(d) => d.hash(h),
            }
        }
    }
}

/// Each key's final state after the changes, in order: the row it ends with, or `None`
/// when it ends deleted. Keys are borrowed from the changes: a batch's keys are never
/// copied (a batch of updates would otherwise take twice its memory here).
/// `primary_key`: the key columns' places in a row.
pub(super) fn final_states<'a>(
    primary_key: &'a [usize],
    changes: &'a [Change],
) -> Vec<(Key<'a>, Option<&'a Row>)> {
    let mut index: HashMap<Key<'a>, usize> = HashMap::with_capacity(changes.len());
    let mut out: Vec<(Key<'a>, Option<&'a Row>)> = Vec::with_capacity(changes.len());
    let mut set = |key: Key<'a>, state: Option<&'a Row>| match index.get(&key) {
        Some(&i) => out[i].1 = state,
        None => {
            index.insert(key, out.len());
            out.push((key, state));
        }
    };
    for c in changes {
        match c.op {
            // Handled before: a part's changes start after its last TRUNCATE.
            Op::Truncate => {}
            Op::Delete => set(Key::of(primary_key, &c.row), None),
            Op::Insert | Op::Upsert | Op::Update => {
                let key = Key::of(primary_key, &c.row);
                if let Some(old) = &c.old_key {
                    let old = Key::old(old);
                    if old != key {
                        set(old, None);
                    }
                }
                set(key, Some(&c.row));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Column, Kind};

    fn model() -> TableModel {
        let col = |n: &str| Column {
            name: n.into(),
            source_type: "int".into(),
            kind: Kind::Int { bytes: 4 },
            nullable: false,
            null_on_zero_date: false,
            default: None,
            renamed_from: None,
            target_type: None,
        };
        TableModel {
            name: "t".into(),
            columns: vec![col("id"), col("v")],
            primary_key: vec![0],
            indexes: vec![],
            version: 1,
        }
    }

    fn row(id: i64, v: i64) -> Row {
        vec![Value::Int(id), Value::Int(v)]
    }

    #[test]
    fn the_last_change_of_each_key_wins() {
        let t = model();
        let changes = vec![
            Change::insert(row(1, 1)),
            Change::insert(row(2, 1)),
            Change::update(row(1, 2), None),
            Change::delete(row(2, 0)),
            // Key 3 becomes key 4.
            Change::insert(row(3, 1)),
            Change::update(row(4, 1), Some(vec![Value::Int(3)])),
            // Deleted, then inserted again.
            Change::delete(row(5, 0)),
            Change::insert(row(5, 9)),
        ];
        let got: Vec<(Row, Option<Row>)> = final_states(&t.primary_key, &changes)
            .into_iter()
            .map(|(k, r)| (k.to_row(), r.cloned()))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![Value::Int(1)], Some(row(1, 2))),
                (vec![Value::Int(2)], None),
                (vec![Value::Int(3)], None),
                (vec![Value::Int(4)], Some(row(4, 1))),
                (vec![Value::Int(5)], Some(row(5, 9))),
            ]
        );
    }

    #[test]
    fn rows_go_in_the_order_of_the_key_values_not_of_their_text() {
        let t = model();
        let ids = [10, 9, -1, 100, 2];
        let changes: Vec<Change> = ids.iter().map(|&i| Change::insert(row(i, 0))).collect();
        let got: Vec<&Value> = sorted_by_key(&t, &changes).iter().map(|r| &r[0]).collect();
        let want: Vec<Value> = [-1, 2, 9, 10, 100].into_iter().map(Value::Int).collect();
        assert_eq!(got, want.iter().collect::<Vec<_>>());
        // Text keys byte by byte.
        let mut texts = model();
        texts.primary_key = vec![1];
        let changes: Vec<Change> = ["b", "a", "ab"]
            .iter()
            .map(|s| Change::insert(vec![Value::Int(0), Value::Text(s.to_string())]))
            .collect();
        let got: Vec<&Value> = sorted_by_key(&texts, &changes)
            .iter()
            .map(|r| &r[1])
            .collect();
        assert_eq!(
            got,
            [
                &Value::Text("a".into()),
                &Value::Text("ab".into()),
                &Value::Text("b".into())
            ]
        );
    }
}
