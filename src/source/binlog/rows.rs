//! Row images into changes: where a table's model columns sit in the binlog's row image
//! (matched by name, `binlog_row_metadata = FULL`), and its rows decoded into model rows.

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;

use super::table::BTable;
use crate::error::{Error, Result};
use crate::model::Change;
use crate::value::Row;

/// A table's columns in the binlog's row image: model column `i` is image column `cols[i]`.
pub(super) struct Mapping {
    /// Index into the source's tables.
    pub(super) table: usize,
    /// Empty until the table's first rows event after its table map.
    pub(super) cols: Vec<usize>,
}

/// The changes a rows event holds for table `t`, and their size. `Err`: a row that cannot
/// be read, for which the table stops.
pub(super) fn changes(
    t: &BTable,
    mapping: &mut Mapping,
    ev: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
) -> Result<(Vec<Change>, usize)> {
    let mut changes = Vec::new();
    let mut bytes = 0;
    for r in ev.rows(tme) {
        let (before, after) = match r {
            Ok(x) => x,
            Err(e) => {
                return Err(Error::BadRow {
                    table: t.spec.model.name.clone(),
                    key: "?".into(),
                    reason: format!("its binlog row image cannot be read: {e}"),
                })
            }
        };
        if mapping.cols.is_empty() {
            let image = after
                .as_ref()
                .or(before.as_ref())
                .expect("a row has an image");
            mapping.cols = map_columns(t, image)?;
        }
        let decode = |img: &BinlogRow| -> Result<Row> { decode_row(t, &mapping.cols, img) };
        let change = match (before, after) {
            (None, Some(a)) => Change::insert(decode(&a)?),
            (Some(b), Some(a)) => match (decode(&b), decode(&a)) {
                (Ok(old), Ok(new)) => {
                    let (ok, nk) = (t.spec.model.key_of(&old), t.spec.model.key_of(&new));
                    Change::update(new, (ok != nk).then_some(ok))
                }
                (Err(e), _) | (_, Err(e)) => return Err(e),
            },
            (Some(b), None) => Change::delete(decode(&b)?),
            (None, None) => continue,
        };
        bytes += change.bytes();
        changes.push(change);
    }
    Ok((changes, bytes))
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

/// One row image as a model row.
fn decode_row(t: &BTable, cols: &[usize], image: &BinlogRow) -> Result<Row> {
    let model = &t.spec.model;
    let mut row = Vec::with_capacity(cols.len());
    for (i, &j) in cols.iter().enumerate() {
        match t.decoders[i].decode(image.as_ref(j)) {
            Ok(v) => row.push(v),
            Err(reason) => {
                let key = model
                    .primary_key
                    .iter()
                    .map(|&k| {
                        let v = t.decoders[k]
                            .decode(image.as_ref(cols[k]))
                            .map(|v| v.display())
                            .unwrap_or_else(|_| "?".into());
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
