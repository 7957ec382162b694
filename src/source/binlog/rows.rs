//! Row images into changes: where a table's model columns sit in the binlog's row image
//! (matched by name, `binlog_row_metadata = FULL`), and its rows decoded into model rows.

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_async::binlog::row::{BinlogRow, RowImageLayout};
use mysql_async::binlog::value::BinlogValue;
use mysql_common::io::ParseBuf;

use super::charset::Charsets;
use super::decode::ImageColumn;
use super::table::BTable;
use crate::error::{Error, Result};
use crate::model::{Change, ColumnSet};
use crate::value::Row;

/// A table's columns in the binlog's row image: model column `i` is image column `cols[i]`.
pub(super) struct Mapping {
    /// Index into the source's tables.
    pub(super) table: usize,
    /// Empty until the table's first rows event after its table map.
    pub(super) cols: Vec<usize>,
    /// How each model column's values are read (its character set, its ENUM or SET labels
    /// as this table map has them), beside `cols`.
    pub(super) image: Vec<ImageColumn>,
}

/// The changes a rows event holds for table `t`, and their size. `Err`: a row that cannot
/// be read, for which the table stops.
pub(super) fn changes(
    t: &BTable,
    mapping: &mut Mapping,
    ev: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
    charsets: &Charsets,
) -> Result<(Vec<Change>, usize)> {
    // A row image without every column (a session with binlog_row_image = MINIMAL or NOBLOB)
    // is never applied: the missing columns would be taken for NULLs.
    let before = ev.columns_before_image().is_none_or(|b| b.all());
    let after = ev.columns_after_image().is_none_or(|b| b.all());
    if !before || !after {
        return Err(Error::Schema(format!(
            "table {:?}: a binlog row image without every column (written by a session with binlog_row_image = MINIMAL or NOBLOB); sluice never applies part of a row, so the table stops here, the others go on. Set binlog_row_image = FULL for every session (SET GLOBAL binlog_row_image = 'FULL', and in my.cnf; sessions that set it themselves must stop), then copy the table again: `sluice snapshot --table {}` (while sluice runs; the others go on meanwhile)",
            t.spec.model.name, t.spec.model.name
        )));
    }
    let unreadable = |e: std::io::Error| Error::BadRow {
        table: t.spec.model.name.clone(),
        key: "?".into(),
        reason: format!("its binlog row image cannot be read: {e}"),
    };
    if mapping.cols.is_empty() {
        // The columns' names and character sets, from the event's first row.
        let Some(first) = ev.rows(tme).next() else {
            return Ok((Vec::new(), 0));
        };
        let (before, after) = first.map_err(unreadable)?;
        let image = after
            .as_ref()
            .or(before.as_ref())
            .expect("a row has an image");
        mapping.cols = map_columns(t, image)?;
        let cols = image.columns_ref();
        let mut labels = labels(tme);
        mapping.image = mapping
            .cols
            .iter()
            .map(|&j| {
                let codec = charsets.codec(cols[j].character_set());
                let labels = labels.remove(&j).map(|raw| {
                    raw.iter()
                        .map(|l| {
                            codec
                                .decode(l)
                                .unwrap_or_else(|_| String::from_utf8_lossy(l).into_owned())
                        })
                        .collect()
                });
                ImageColumn { codec, labels }
            })
            .collect();
    }
    // The values read straight from the event (the table map's layout worked out once for
    // the event, not once per row).
    let layout = RowImageLayout::new(tme).map_err(unreadable)?;
    let partial = matches!(ev, RowsEventData::PartialUpdateRowsEvent(_));
    let (before_cols, after_cols) = (ev.columns_before_image(), ev.columns_after_image());
    if before_cols.is_none() && after_cols.is_none() {
        return Ok((Vec::new(), 0));
    }
    let images = Images {
        t,
        cols: &mapping.cols,
        how: &mapping.image,
    };
    let mut buf = ParseBuf(ev.rows_data());
    let mut changes = Vec::new();
    let mut bytes = 0;
    while !buf.is_empty() {
        let before = before_cols
            .map(|c| layout.values(&mut buf, c, false))
            .transpose()
            .map_err(unreadable)?;
        let after = after_cols
            .map(|c| layout.values(&mut buf, c, partial))
            .transpose()
            .map_err(unreadable)?;
        let change = match (before, after) {
            (None, Some(a)) => Change::insert(images.row(a)?),
            (Some(b), Some(a)) => {
                // Of the row before, only its key is read (to see the key change), and which
                // values differ from the row after (so that only those are written).
                let changed = images.changed(&b, &a);
                let old_key = images.key(b)?;
                let new = images.row(a)?;
                let moved = t
                    .spec
                    .model
                    .primary_key
                    .iter()
                    .zip(&old_key)
                    .any(|(&k, old)| new[k] != *old);
                Change::update(new, moved.then_some(old_key)).changing(changed)
            }
            (Some(b), None) => Change::delete(images.row(b)?),
            (None, None) => continue,
        };
        bytes += change.bytes();
        changes.push(change);
    }
    Ok((changes, bytes))
}

/// The ENUM and SET labels the table map carries (`binlog_row_metadata = FULL`), by column
/// index, in definition order: the labels at this place in the stream (an ALTER that adds or
/// reorders them comes with a new table map), raw in the column's character set.
fn labels(tme: &TableMapEvent<'_>) -> std::collections::HashMap<usize, Vec<Vec<u8>>> {
    use mysql_async::binlog::events::OptionalMetadataField as F;
    use mysql_async::consts::ColumnType as T;
    let (mut enums, mut sets) = (Vec::new(), Vec::new());
    for field in tme.iter_optional_meta().flatten() {
        match field {
            F::EnumStrValue(v) => {
                for e in v.iter_values().flatten() {
                    enums.push(e.values().iter().map(|x| x.value_raw().to_vec()).collect());
                }
            }
            F::SetStrValue(v) => {
                for e in v.iter_values().flatten() {
                    sets.push(e.values().iter().map(|x| x.value_raw().to_vec()).collect());
                }
            }
            _ => {}
        }
    }
    let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
    let mut out = std::collections::HashMap::new();
    for i in 0..tme.columns_count() as usize {
        let found = match tme.get_column_type(i).ok().flatten() {
            Some(T::MYSQL_TYPE_ENUM) => enums.next(),
            Some(T::MYSQL_TYPE_SET) => sets.next(),
            _ => None,
        };
        if let Some(l) = found {
            out.insert(i, l);
        }
    }
    out
}

/// Where each model column sits in the row image, by name; refuses an image that lacks one.
fn map_columns(t: &BTable, image: &BinlogRow) -> Result<Vec<usize>> {
    let names: Vec<String> = image
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    t.spec
        .model
        .columns
        .iter()
        .map(|c| {
            names.iter().position(|n| *n == c.name).ok_or_else(|| {
                let unnamed = names.first().is_some_and(|n| n.starts_with('@'));
                Error::Schema(format!(
                    "table {:?}: column {:?} is not in the binlog's row image ({}); {}",
                    t.spec.model.name,
                    c.name,
                    names.join(", "),
                    if unnamed {
                        "the binlog carries no column names: SET GLOBAL binlog_row_metadata = 'FULL' (and in my.cnf), then restart sluice"
                    } else {
                        "the table's columns here differ from the shape sluice followed to this point; restart sluice: it resumes from the shape recorded in sluice.schema_history and follows the changes since in order"
                    }
                ))
            })
        })
        .collect()
}

/// Image column `j`'s value, moved out (a NULL left in its place).
fn take<'e>(image: &mut [BinlogValue<'e>], j: usize) -> Option<BinlogValue<'e>> {
    image
        .get_mut(j)
        .map(|v| std::mem::replace(v, BinlogValue::Value(mysql_async::Value::NULL)))
}

/// Whether two values of a column are the same. Floats compare by their bits: `-0.0` and
/// `0.0` are equal numbers but not the same value (MySQL keeps the sign; MariaDB stores
/// `0`), so an update from one to the other is written.
fn same(a: Option<&BinlogValue<'_>>, b: Option<&BinlogValue<'_>>) -> bool {
    use mysql_async::Value as V;
    match (a, b) {
        (Some(BinlogValue::Value(V::Float(x))), Some(BinlogValue::Value(V::Float(y)))) => {
            x.to_bits() == y.to_bits()
        }
        (Some(BinlogValue::Value(V::Double(x))), Some(BinlogValue::Value(V::Double(y)))) => {
            x.to_bits() == y.to_bits()
        }
        _ => a == b,
    }
}

/// How a table's row images are read: where its model columns sit in the image (`cols`), and
/// how each is read (`how`).
struct Images<'a> {
    t: &'a BTable,
    cols: &'a [usize],
    how: &'a [ImageColumn],
}

impl Images<'_> {
    /// The model columns whose value differs between two images of a row, compared as the
    /// binlog holds them.
    fn changed(&self, before: &[BinlogValue<'_>], after: &[BinlogValue<'_>]) -> ColumnSet {
        let mut set = ColumnSet::NONE;
        for (i, &j) in self.cols.iter().enumerate() {
            if !same(before.get(j), after.get(j)) {
                set.insert(i);
            }
        }
        set
    }

    /// The primary key of a row image, its values in key order (the other columns are not read).
    fn key(&self, mut image: Vec<BinlogValue<'_>>) -> Result<Row> {
        let (t, cols, how) = (self.t, self.cols, self.how);
        let model = &t.spec.model;
        model
            .primary_key
            .iter()
            .map(|&k| {
                t.decoders[k]
                    .decode_with(take(&mut image, cols[k]), &how[k])
                    .map_err(|reason| Error::BadRow {
                        table: model.name.clone(),
                        key: "?".into(),
                        reason: format!(
                            "column {:?} ({}) of the key, in the row before an update: {reason}",
                            model.columns[k].name, model.columns[k].source_type
                        ),
                    })
            })
            .collect()
    }

    /// One row image (its values, in column order) as a model row; the image's values move into
    /// the row.
    fn row(&self, mut image: Vec<BinlogValue<'_>>) -> Result<Row> {
        let (t, cols, how) = (self.t, self.cols, self.how);
        let model = &t.spec.model;
        let mut row: Row = Vec::with_capacity(cols.len());
        for (i, &j) in cols.iter().enumerate() {
            match t.decoders[i].decode_with(take(&mut image, j), &how[i]) {
                Ok(v) => row.push(v),
                Err(reason) => {
                    // The key's columns before this one are in the row; those after it are still
                    // in the image.
                    let key = model
                        .primary_key
                        .iter()
                        .map(|&k| {
                            let v = match k.cmp(&i) {
                                std::cmp::Ordering::Less => row[k].display(),
                                std::cmp::Ordering::Equal => "?".into(),
                                std::cmp::Ordering::Greater => t.decoders[k]
                                    .decode_with(image.get(cols[k]).cloned(), &how[k])
                                    .map(|v| v.display())
                                    .unwrap_or_else(|_| "?".into()),
                            };
                            format!("{}={v}", model.columns[k].name)
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(Error::BadRow {
                        table: model.name.clone(),
                        key,
                        reason: format!(
                            "column {:?} ({}): {reason}",
                            model.columns[i].name, model.columns[i].source_type
                        ),
                    });
                }
            }
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::Value as V;

    fn v(x: V) -> BinlogValue<'static> {
        BinlogValue::Value(x)
    }

    #[test]
    fn floats_are_the_same_by_their_bits() {
        let (zero, minus) = (v(V::Double(0.0)), v(V::Double(-0.0)));
        assert!(!same(Some(&zero), Some(&minus)));
        assert!(!same(Some(&v(V::Float(0.0))), Some(&v(V::Float(-0.0)))));
        // The same NaN is the same value (PartialEq would call it changed).
        let nan = v(V::Double(f64::NAN));
        assert!(same(Some(&nan), Some(&nan.clone())));
        assert!(same(
            Some(&v(V::Bytes(b"a".to_vec()))),
            Some(&v(V::Bytes(b"a".to_vec())))
        ));
        assert!(!same(Some(&v(V::Int(1))), Some(&v(V::Int(2)))));
        assert!(!same(Some(&v(V::NULL)), Some(&v(V::Int(0)))));
    }
}
