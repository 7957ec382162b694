//! Following a table's definition changes: the binlog's table map tells when a replicated
//! table changed shape; its new model is built from the map and the source's definition, for
//! the target to follow before the first change in it.

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use sea_orm::sqlx::MySqlConnection;

use super::table::BTable;
use crate::error::{Error, Result};

/// Reads changed tables' definitions over a connection of its own.
pub(super) struct ShapeFollower {
    /// A connection to read a changed table's definition.
    meta: Option<MySqlConnection>,
    zero_dates: crate::config::ZeroDates,
}

impl ShapeFollower {
    pub(super) fn new(zero_dates: crate::config::ZeroDates) -> Self {
        ShapeFollower {
            meta: None,
            zero_dates,
        }
    }

    /// Drops the connection (the stream's was dropped).
    pub(super) fn reset(&mut self) {
        self.meta = None;
    }

    async fn conn(&mut self, url: &str) -> Result<&mut MySqlConnection> {
        if self.meta.is_none() {
            self.meta = Some(crate::source::mysql::connect(url).await?);
        }
        Ok(self.meta.as_mut().expect("connected above"))
    }

    /// At the first rows event after a table map: when the map differs from the one the
    /// table's model was matched against (or, for the first map, names other columns), the
    /// table changed shape at this point of the binlog. Its new model is built from the map
    /// (names, types, order) with each column's definition taken from the source's
    /// `information_schema` when it matches the map, else from the model so far; the changes
    /// from here on are decoded in it and carry it, so the target follows in the same
    /// transaction as the first of them. A column whose type here neither matches stops the
    /// table (it changed again since this point, and its type here is unknown).
    ///
    /// `tme`, `ev`: the table map and the rows event of `t`; `at`: the binlog file and
    /// position there. Returns the error for which the table stops, if it must; `Err`: the
    /// source's definition could not be read (the stream's error).
    pub(super) async fn follow(
        &mut self,
        url: &str,
        t: &mut BTable,
        tme: &TableMapEvent<'_>,
        ev: &RowsEventData<'_>,
        at: (&str, u64),
    ) -> Result<Option<Error>> {
        let mut sig = Vec::new();
        mysql_common::proto::MySerialize::serialize(tme, &mut sig);
        // Past the table id (6 bytes) and flags (2): a table reopened gets a new id.
        let sig = sig.split_off(8.min(sig.len()));
        if t.table_map.as_ref() == Some(&sig) {
            if t.indexes_stale {
                t.indexes_stale = false;
                let conn = self.conn(url).await?;
                let now =
                    crate::source::mysql::introspect::indexes(conn, &t.spec.model.name).await?;
                let names: Vec<&str> = t
                    .spec
                    .model
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                let now: Vec<crate::model::Index> = now
                    .into_iter()
                    .filter(|i| i.columns.iter().all(|c| names.contains(&c.as_str())))
                    .collect();
                if now != t.spec.model.indexes {
                    let model = std::sync::Arc::make_mut(&mut t.spec.model);
                    model.indexes = now;
                    model.version += 1;
                    tracing::info!(table = %model.name, "the source table's indexes changed; the target's follow");
                    t.pending_shape = Some(t.spec.model.clone());
                }
            }
            return Ok(None);
        }
        let Some(first) = ev.rows(tme).next() else {
            return Ok(None);
        };
        let image = match first {
            Ok((b, a)) => a.or(b),
            Err(_) => None,
        };
        let Some(image) = image else {
            return Ok(None);
        };
        let cols = image.columns_ref();
        let names: Vec<String> = cols.iter().map(|c| c.name_str().into_owned()).collect();
        if names.first().is_some_and(|n| n.starts_with('@')) {
            // No column names (binlog_row_metadata is not FULL): map_columns says so.
            return Ok(None);
        }
        let model = t.spec.model.clone();
        // The image's columns the model can have (`exclude_columns` left out), by place.
        let kept: Vec<usize> = (0..names.len())
            .filter(|&i| !t.config.excludes(&names[i]))
            .collect();
        let excluded_here: Vec<String> = names
            .iter()
            .filter(|n| t.config.excludes(n))
            .cloned()
            .collect();
        let fits = |kind: crate::model::Kind, i: usize| {
            let c = &cols[i];
            let ty = tme
                .get_column_type(i)
                .ok()
                .flatten()
                .unwrap_or_else(|| c.column_type());
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            super::decode::fits(
                kind,
                ty,
                meta,
                c.flags()
                    .contains(mysql_async::consts::ColumnFlags::UNSIGNED_FLAG),
                c.character_set(),
            )
        };
        let same = kept.len() == model.columns.len()
            && model
                .columns
                .iter()
                .zip(&kept)
                .all(|(c, &i)| names[i] == c.name && fits(c.kind, i));
        if same {
            t.table_map = Some(sig);
            return Ok(None);
        }
        // The table changed: its definition now, matched against the map.
        let conn = self.conn(url).await?;
        if crate::source::mysql::shape_fingerprint(conn, &model.name)
            .await?
            .is_none()
        {
            return Ok(Some(crate::source::mysql::table_gone(&model.name)));
        }
        let (now, key) = match crate::source::mysql::introspect_keyed(conn, &t.config, false).await
        {
            Ok(x) => x,
            Err(e) if e.is_retryable() => return Err(e),
            Err(error) => return Ok(Some(error)),
        };
        let mut columns = Vec::with_capacity(kept.len());
        for &i in &kept {
            let name = &names[i];
            let current = now
                .columns
                .iter()
                .find(|c| &c.name == name && fits(c.kind, i));
            let before = model
                .columns
                .iter()
                .find(|c| &c.name == name && fits(c.kind, i))
                .map(|c| crate::source::mysql::introspect::SourceColumn {
                    name: c.name.clone(),
                    column_type: c.source_type.clone(),
                    kind: c.kind,
                    nullable: c.nullable,
                    default: c.default.clone(),
                });
            match current.cloned().or(before) {
                Some(c) => columns.push(c),
                None => {
                    return Ok(Some(Error::Schema(format!(
                        "table {:?} changed shape at binlog position {}:{} and again since: column {name:?} there matches neither its definition now nor the one sluice had, so its values there cannot be read. Restart sluice once the table's definition no longer changes; if this repeats, copy the table again: `sluice snapshot --table {}`",
                        model.name, at.0, at.1, model.name
                    ))))
                }
            }
        }
        // Positions among the kept columns from here on.
        let names: Vec<String> = kept.iter().map(|&i| names[i].clone()).collect();
        let key_names: Vec<String> = key.iter().map(|&i| now.columns[i].name.clone()).collect();
        let key: Vec<usize> = if key_names.iter().all(|k| names.contains(k)) {
            key_names
                .iter()
                .filter_map(|k| names.iter().position(|n| n == k))
                .collect()
        } else {
            model
                .primary_key
                .iter()
                .filter_map(|&i| names.iter().position(|n| *n == model.columns[i].name))
                .collect()
        };
        let source = crate::source::mysql::introspect::SourceTable {
            name: model.name.clone(),
            columns,
            primary_key: key.iter().map(|&i| names[i].clone()).collect(),
            // The indexes now whose columns the table has at this point.
            indexes: now
                .indexes
                .iter()
                .filter(|i| i.columns.iter().all(|c| names.contains(c)))
                .cloned()
                .collect(),
            excluded: excluded_here,
        };
        let (mut spec, keyset, decoders) =
            match super::shape(&source, key, self.zero_dates, model.version + 1) {
                Ok(x) => x,
                Err(error) => return Ok(Some(error)),
            };
        t.table_map = Some(sig);
        if spec.model.same_shape(&model) {
            return Ok(None);
        }
        // The excluded columns the table had: those of the shape so far, and those its ALTER
        // statements renamed (a shape started from the recorded one knows none of its own).
        let mut before = t.spec.excluded.clone();
        before.extend(
            t.renames
                .iter()
                .filter(|(from, _)| t.config.excludes(from) && !before.contains(from))
                .map(|(from, _)| from.clone())
                .collect::<Vec<_>>(),
        );
        if let Some(error) = crate::source::mysql::excluded_renamed(
            &before,
            &spec.excluded,
            &model,
            &spec.model,
            &t.renames,
        ) {
            return Ok(Some(error));
        }
        let new = std::sync::Arc::make_mut(&mut spec.model);
        // Renames the ALTER statements named, then those their places tell.
        for (from, to) in std::mem::take(&mut t.renames) {
            let had = model.column(&from).is_some() && new.column(&from).is_none();
            if let Some(c) = new.columns.iter_mut().find(|c| c.name == to) {
                if had && model.column(&to).is_none() {
                    c.renamed_from = Some(from);
                }
            }
        }
        new.infer_renames(&model);
        tracing::info!(
            table = %model.name,
            version = new.version,
            at = %format!("{}:{}", at.0, at.1),
            columns = %new.columns.iter().map(|c| format!("{} {}", c.name, c.source_type)).collect::<Vec<_>>().join(", "),
            "the source table changed shape at this point of the binlog; its changes from here on are in the new shape"
        );
        t.pending_shape = Some(spec.model.clone());
        t.spec = spec;
        t.keyset = keyset;
        t.decoders = decoders;
        Ok(None)
    }
}
