//! What a table becomes on the target (`[[tables]] target`, `rename_columns`,
//! `mask_columns`, `column_types`): a pure mapping from the source's model to the target's, and of rows.
//!
//! Everything before the sink (reads, row images, positions, `sluice.schema_history`)
//! stays in the source's names and shapes; the sink, `verify` and the table's preparation
//! write and read the target through [`TableMap::model`]. The mapping keeps the columns'
//! order and count (excluded columns are left out before, when the source is read), so a
//! row maps by masking values in place.

use std::collections::BTreeMap;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::config::TableSettings;
use crate::error::{Error, Result};
use crate::model::{Change, Kind, Op, TableModel};
use crate::value::Value;

pub use crate::config::Mask;

/// One table's mapping. The identity when the table sets none of the options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableMap {
    /// The target schema.
    pub schema: String,
    /// The target table's name; `None`: the source's.
    table: Option<String>,
    /// Source column → target column.
    renames: BTreeMap<String, String>,
    /// Source column → its mask.
    masks: BTreeMap<String, Mask>,
    /// Source column → its target type, as configured.
    types: BTreeMap<String, String>,
    /// `where`: the rows that reach the target.
    filter: Option<crate::filter::Filter>,
    /// `exclude_columns` (a filter may not read them).
    excluded: Vec<String>,
    salt: Option<Arc<Vec<u8>>>,
    /// [`Self::describe`]'s text, recorded with each shape in `sluice.schema_history`.
    described: Option<String>,
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The kinds a `sha256` mask takes: those whose hashed text both sides agree on (a text's
/// characters as UTF-8, an integer's or a DECIMAL's digits, binary bytes as they are).
fn hashable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Text
            | Kind::Json
            | Kind::Enum
            | Kind::Set
            | Kind::Decimal { .. }
            | Kind::Int { .. }
            | Kind::UInt { .. }
            | Kind::Year
            | Kind::Bytes
    )
}

/// HMAC-SHA256's inner and outer keys of `salt` (RFC 2104: the key hashed when longer than
/// a block, padded with zeros to one, XORed with the pads).
fn hmac_pads(salt: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut key = if salt.len() > 64 {
        Sha256::digest(salt).to_vec()
    } else {
        salt.to_vec()
    };
    key.resize(64, 0);
    (
        key.iter().map(|b| b ^ 0x36).collect(),
        key.iter().map(|b| b ^ 0x5c).collect(),
    )
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

impl TableMap {
    /// The table's mapping into `schema` (the `[target] schema`) unless its `target` names
    /// another. The options were checked when the configuration was read.
    pub fn of(t: &TableSettings, schema: &str, salt: Option<Arc<Vec<u8>>>) -> TableMap {
        let (schema, table) = match t.target.as_deref().map(|s| s.split_once('.')) {
            Some(Some((s, "*"))) => (s.to_string(), None),
            Some(Some((s, n))) => (s.to_string(), Some(n.to_string())),
            Some(None) => (schema.to_string(), t.target.clone()),
            None => (schema.to_string(), None),
        };
        let mut map = TableMap {
            schema,
            table,
            renames: t.rename_columns.clone(),
            masks: t
                .mask_columns
                .iter()
                .filter_map(|(c, m)| Some((c.clone(), Mask::parse(m)?)))
                .collect(),
            types: t.column_types.clone(),
            filter: t
                .filter
                .as_deref()
                .and_then(|f| crate::filter::Filter::parse(f).ok()),
            excluded: t.exclude_columns.clone(),
            salt,
            described: None,
        };
        map.described = map.description_of(t);
        map
    }

    /// The mapping as [`Self::describe`] gives it; `None` without one.
    pub fn description(&self) -> Option<&str> {
        self.described.as_deref()
    }

    /// The mapping of the run's table `id` (its entry in the expanded `settings.tables`).
    pub fn for_table(settings: &crate::config::Settings, id: usize) -> TableMap {
        match settings.tables.get(id) {
            Some(t) => TableMap::of(t, &settings.target.schema, settings.mask_salt.clone()),
            None => TableMap::plain(&settings.target.schema),
        }
    }

    /// The qualified target table of source table `source`.
    pub fn qualified(&self, source: &str) -> String {
        super::types::qualified(&self.schema, &self.table(source))
    }

    /// The table's mapping as people read it (`status`): `lands in crm.people; excludes
    /// password_hash; renames fname → first_name; masks email (sha256)`; `None` without one.
    pub fn describe(t: &TableSettings, schema: &str) -> Option<String> {
        TableMap::of(t, schema, None).described
    }

    fn description_of(&self, t: &TableSettings) -> Option<String> {
        let mut parts = Vec::new();
        if t.target.is_some() {
            parts.push(format!("lands in {}.{}", self.schema, self.table(&t.name)));
        }
        if !t.exclude_columns.is_empty() {
            parts.push(format!("excludes {}", t.exclude_columns.join(", ")));
        }
        if !t.rename_columns.is_empty() {
            let r: Vec<String> = t
                .rename_columns
                .iter()
                .map(|(s, d)| format!("{s} → {d}"))
                .collect();
            parts.push(format!("renames {}", r.join(", ")));
        }
        if !t.mask_columns.is_empty() {
            let m: Vec<String> = t
                .mask_columns
                .iter()
                .map(|(c, m)| format!("{c} ({})", m.split(':').next().unwrap_or(m)))
                .collect();
            parts.push(format!("masks {}", m.join(", ")));
        }
        if let Some(f) = &t.filter {
            parts.push(format!("keeps rows where {f}"));
        }
        if !t.column_types.is_empty() {
            let m: Vec<String> = t
                .column_types
                .iter()
                .map(|(c, ty)| format!("{c} as {ty}"))
                .collect();
            parts.push(format!("types {}", m.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// No mapping but the schema.
    pub fn plain(schema: &str) -> TableMap {
        TableMap {
            schema: schema.to_string(),
            ..TableMap::default()
        }
    }

    /// The target table's name for source table `source`.
    pub fn table(&self, source: &str) -> String {
        self.table.clone().unwrap_or_else(|| source.to_string())
    }

    /// The target's name for source column `column`.
    pub fn column(&self, column: &str) -> String {
        self.renames
            .iter()
            .find(|(s, _)| same(s, column))
            .map_or_else(|| column.to_string(), |(_, t)| t.clone())
    }

    /// The target type `column_types` gives `column`, normalised (`None` too for a type
    /// [`TableMap::check`] refuses).
    fn target_type(&self, column: &str) -> Option<String> {
        self.types
            .iter()
            .find(|(s, _)| same(s, column))
            .and_then(|(_, t)| super::types::normal_type(t))
    }

    /// Indexes (in `model`) of the columns whose type `column_types` sets: `verify` leaves
    /// them out (their text forms differ between the sides: `jsonb` normalises, a wider
    /// `numeric` adds fraction digits).
    pub fn retyped(&self, model: &TableModel) -> Vec<usize> {
        (0..model.columns.len())
            .filter(|&i| self.target_type(&model.columns[i].name).is_some())
            .collect()
    }

    fn mask(&self, column: &str) -> Option<&Mask> {
        self.masks
            .iter()
            .find(|(s, _)| same(s, column))
            .map(|(_, m)| m)
    }

    /// Whether the rows need masking.
    pub fn masks_rows(&self) -> bool {
        !self.masks.is_empty()
    }

    /// Indexes (in `model`) of the masked columns: `verify` leaves them out.
    pub fn masked(&self, model: &TableModel) -> Vec<usize> {
        (0..model.columns.len())
            .filter(|&i| self.mask(&model.columns[i].name).is_some())
            .collect()
    }

    /// The target's model of source model `m`: the target table's name, renamed columns,
    /// masked ones as text (nullable, no default; `null` keeps the kind), the indexes
    /// without those on masked columns (a mask can make equal values of distinct ones).
    pub fn model(&self, m: &TableModel) -> TableModel {
        let mut out = m.clone();
        out.name = self.table(&m.name);
        for c in &mut out.columns {
            if let Some(mask) = self.mask(&c.name) {
                if *mask != Mask::Null {
                    c.kind = Kind::Text;
                    c.source_type = format!("{} (masked)", c.source_type);
                }
                c.nullable = true;
                c.default = None;
            }
            if let Some(ty) = self.target_type(&c.name) {
                c.target_type = Some(ty);
            }
            c.name = self.column(&c.name);
            c.renamed_from = c.renamed_from.as_deref().map(|r| self.column(r));
        }
        out.indexes
            .retain(|i| !i.columns.iter().any(|c| self.mask(c).is_some()));
        for i in &mut out.indexes {
            for c in &mut i.columns {
                *c = self.column(c);
            }
        }
        out
    }

    /// Checks the options against the source's table: every renamed or masked column there
    /// (unless `lenient`: a pattern's tables need not all have them), none of them a key
    /// column when masked, no two target columns of one name. Every problem at once, joined
    /// (see [`Self::problems`]).
    pub fn check(&self, m: &TableModel, lenient: bool) -> Result<()> {
        let problems = self.problems(m, lenient);
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::Schema(
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  - "),
        ))
    }

    /// What stops a table whose source changed shape to `new` while this mapping names its
    /// columns: a column the mapping names renamed on the source (the mapping, naming the old
    /// name, would no longer apply to it: a masked column would land unmasked), or a column
    /// the filter reads gone (no row would pass it any more). The configuration must change
    /// first; `None` when the mapping still holds.
    pub fn shape_problem(&self, new: &TableModel) -> Option<Error> {
        let options = |c: &str| -> Vec<&'static str> {
            let mut out = Vec::new();
            if self.renames.keys().any(|k| same(k, c)) {
                out.push("rename_columns");
            }
            if self.masks.keys().any(|k| same(k, c)) {
                out.push("mask_columns");
            }
            if self.types.keys().any(|k| same(k, c)) {
                out.push("column_types");
            }
            if let Some(f) = &self.filter {
                if f.reads(c) {
                    out.push("where");
                }
            }
            out
        };
        for c in &new.columns {
            let Some(from) = c.renamed_from.as_deref() else {
                continue;
            };
            let named = options(from);
            if !named.is_empty() {
                return Some(Error::Schema(format!(
                    "table {:?}: the source renamed column {from:?} to {:?}, and {} names {from:?}: the mapping would no longer apply to it{}. The table stops here (the others go on), before any of its rows in the new shape is written. To go on: name {:?} instead of {from:?} there (rename_columns = {{ {} = \"…\" }} keeps the target column's name), then restart sluice; the table resumes where it stopped",
                    new.name,
                    c.name,
                    named.join(" and "),
                    if named.contains(&"mask_columns") { " and its values would land unmasked" } else { "" },
                    c.name,
                    c.name
                )));
            }
        }
        if let Some(f) = &self.filter {
            if let Some(c) = f.columns().into_iter().find(|c| new.column(c).is_none()) {
                return Some(Error::Schema(format!(
                    "table {:?}: the source dropped column {c:?}, which `where` reads: no row would pass the filter any more. The table stops here (the others go on). To go on: change `where` so that it reads columns the table has, then restart sluice",
                    new.name
                )));
            }
        }
        None
    }

    /// Why foreign key `fk` of `child` (the table this maps) to the table `parent` maps
    /// cannot be mirrored on the target through the mappings, if it cannot: the parent keeps
    /// some rows off (their children would break the key), or a column of the key is masked
    /// or retyped on either side (the values or types no longer match).
    pub fn blocks_foreign_key(
        &self,
        child: &TableModel,
        fk: &crate::model::ForeignKey,
        parent: &TableMap,
    ) -> Option<String> {
        if parent.filter.is_some() {
            return Some(
                "its parent has a `where` filter: the children of the rows it keeps off would break the target's copy of the key"
                    .into(),
            );
        }
        for c in fk.columns.iter().filter_map(|&i| child.columns.get(i)) {
            if self.mask(&c.name).is_some() {
                return Some(format!(
                    "its column {:?} is masked: masked values match no parent key",
                    c.name
                ));
            }
            if self.target_type(&c.name).is_some() {
                return Some(format!(
                    "its column {:?} has a column_types type: the key's types must match",
                    c.name
                ));
            }
        }
        if let Some(c) = fk
            .parent_columns
            .iter()
            .find(|c| parent.target_type(c).is_some())
        {
            return Some(format!(
                "its parent's column {c:?} has a column_types type: the key's types must match"
            ));
        }
        None
    }

    /// Every problem [`Self::check`] finds, each with its fix.
    pub fn problems(&self, m: &TableModel, lenient: bool) -> Vec<Error> {
        let mut out = Vec::new();
        if let Some(Err(e)) = self.filter.as_ref().map(|f| f.check(m, &self.excluded)) {
            out.push(e);
        }
        let mut bad = |text: String| out.push(Error::Schema(text));
        let has = |c: &str| m.columns.iter().any(|x| same(&x.name, c));
        for (c, ty) in &self.types {
            if super::types::normal_type(ty).is_none() {
                bad(format!(
                    "table {:?}: column_types gives {c:?} the type {ty:?}, which column_types does not take: text, character varying[(n)], jsonb, json, uuid, boolean, smallint, integer, bigint, numeric[(p[,s])], real, double precision, date, timestamp[(n)] [with time zone]",
                    m.name
                ));
            }
        }
        for c in &m.columns {
            if let Some(ty) = self.target_type(&c.name) {
                if !super::types::override_allowed(c, &ty) {
                    bad(format!(
                        "table {:?}: column_types gives {:?} ({}) the type {ty}, which cannot hold all of its values (sluice's mapping: {}); choose a type that can, or text",
                        m.name,
                        c.name,
                        c.source_type,
                        super::types::pg_type(c)
                    ));
                }
            }
        }
        for (what, c) in self
            .renames
            .keys()
            .map(|c| ("rename_columns", c))
            .chain(self.masks.keys().map(|c| ("mask_columns", c)))
            .chain(self.types.keys().map(|c| ("column_types", c)))
        {
            if !lenient && !has(c) {
                bad(format!(
                    "table {:?}: {what} names {c:?}, which the table does not have (its columns: {}); correct the name or remove it",
                    m.name,
                    m.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for c in &m.columns {
            if self.mask(&c.name) == Some(&Mask::Sha256) && !hashable(c.kind) {
                bad(format!(
                    "table {:?}: mask_columns gives {:?} ({}) a sha256 mask, which takes text, integer, DECIMAL and binary columns only; use \"redact\", \"null\" or \"constant:…\" for it",
                    m.name, c.name, c.source_type
                ));
            }
        }
        for &k in &m.primary_key {
            if self.mask(&m.columns[k].name).is_some() {
                bad(format!(
                    "table {:?}: mask_columns names {:?}, which is in the table's primary key: the target needs the key's own values to apply updates and deletes; remove it from mask_columns (rename_columns can rename it)",
                    m.name, m.columns[k].name
                ));
            }
        }
        let target = self.model(m);
        for (i, c) in target.columns.iter().enumerate() {
            if target.columns[..i].iter().any(|o| o.name == c.name) {
                bad(format!(
                    "table {:?}: two columns would be named {:?} on the target; change rename_columns",
                    m.name, c.name
                ));
            }
        }
        out
    }

    fn masked_value(&self, mask: &Mask, v: &Value) -> Value {
        match (mask, v) {
            (_, Value::Null) | (Mask::Null, _) => Value::Null,
            (Mask::Redact, _) => Value::Text("***".into()),
            (Mask::Constant(c), _) => Value::Text(c.clone()),
            (Mask::Sha256, v) => {
                let bytes: Vec<u8> = match v {
                    Value::Text(s) => s.as_bytes().to_vec(),
                    Value::Bytes(b) => b.clone(),
                    Value::Int(i) => i.to_string().into_bytes(),
                    Value::UInt(u) => u.to_string().into_bytes(),
                    // Not a kind `check` lets a sha256 mask take.
                    other => other.display().into_bytes(),
                };
                let digest: Vec<u8> = match &self.salt {
                    Some(salt) => {
                        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(salt)
                            .expect("HMAC takes a key of any length");
                        mac.update(&bytes);
                        mac.finalize().into_bytes().to_vec()
                    }
                    None => Sha256::digest(&bytes).to_vec(),
                };
                Value::Text(hex(&digest))
            }
        }
    }

    /// For `verify`: a MySQL expression of the masked text of `column` (NULL stays NULL),
    /// `text` being its canonical text ([`crate::verify`]'s) and `quoted` its quoted name;
    /// `None` when the column is not masked. Equal to what [`Self::mask_row`] writes.
    pub fn mysql_masked(
        &self,
        column: &crate::model::Column,
        text: &str,
        quoted: &str,
    ) -> Option<String> {
        let when = |v: &str| format!("IF({quoted} IS NULL, NULL, {v})");
        Some(match self.mask(&column.name)? {
            Mask::Null => "NULL".to_string(),
            Mask::Redact => when("'***'"),
            Mask::Constant(c) => when(&format!("_utf8mb4 X'{}'", hex(c.as_bytes()))),
            Mask::Sha256 => {
                let input = if column.kind == Kind::Bytes {
                    quoted.to_string()
                } else {
                    text.to_string()
                };
                match &self.salt {
                    None => format!("SHA2({input}, 256)"),
                    Some(salt) => {
                        let (inner, outer) = hmac_pads(salt);
                        format!(
                            "SHA2(CONCAT(UNHEX('{}'), UNHEX(SHA2(CONCAT(UNHEX('{}'), {input}), 256))), 256)",
                            hex(&outer),
                            hex(&inner)
                        )
                    }
                }
            }
        })
    }

    /// `row` (of source model `m`) with its masked columns masked.
    pub fn mask_row(&self, m: &TableModel, row: &mut [Value]) {
        for (i, c) in m.columns.iter().enumerate() {
            if let (Some(mask), Some(v)) = (self.mask(&c.name), row.get_mut(i)) {
                *v = self.masked_value(mask, v);
            }
        }
    }

    /// The filter (`where`), when there is one.
    pub fn filter(&self) -> Option<&crate::filter::Filter> {
        self.filter.as_ref()
    }

    /// `changes` (of source model `m`) as the target takes them: a row the filter does not
    /// keep is left out when it is new (an insert), deleted when it may be there (an upsert,
    /// an update: moved out of the filter, under its old key too when that changed); then
    /// masked. `first_reads`: every row is read for the first time into a target that held
    /// none of them (a load in key order into an empty table), so a row the filter does not
    /// keep cannot be there and is left out too. `None` when there is no filter nor mask;
    /// else the changes and how many rows the filter kept off.
    pub fn map_changes(
        &self,
        m: &TableModel,
        changes: &[Change],
        first_reads: bool,
    ) -> Option<(Vec<Change>, usize)> {
        if !self.masks_rows() && self.filter.is_none() {
            return None;
        }
        let filter = self.filter.as_ref().map(|f| f.bind(m));
        let masks: Vec<(usize, &Mask)> = m
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, self.mask(&c.name)?)))
            .collect();
        let mut filtered = 0;
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            let kept = match (&filter, c.op) {
                (Some(f), Op::Insert | Op::Update | Op::Upsert) => f.keeps(&c.row),
                _ => true,
            };
            if kept {
                let mut c = c.clone();
                for &(i, mask) in &masks {
                    if let Some(v) = c.row.get_mut(i) {
                        *v = self.masked_value(mask, v);
                    }
                }
                out.push(c);
                continue;
            }
            filtered += 1;
            match c.op {
                Op::Insert => {}
                _ if first_reads => {}
                _ => {
                    // A delete needs the key only: the other values go as they are, unmasked
                    // values never reach a target column.
                    let mut gone = c.row.clone();
                    if let Some(old) = &c.old_key {
                        for (&k, v) in m.primary_key.iter().zip(old.iter()) {
                            gone[k] = v.clone();
                        }
                    }
                    for (i, v) in gone.iter_mut().enumerate() {
                        if !m.primary_key.contains(&i) {
                            *v = Value::Null;
                        }
                    }
                    out.push(Change::delete(gone));
                }
            }
        }
        Some((out, filtered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Column;

    fn model() -> TableModel {
        TableModel {
            name: "customers".into(),
            columns: vec![
                Column::new("id", "int", Kind::Int { bytes: 4 }),
                Column::new("fname", "varchar(20)", Kind::Text),
                Column::new("email", "varchar(80)", Kind::Text),
                Column::new("age", "int", Kind::Int { bytes: 4 }),
            ],
            primary_key: vec![0],
            indexes: vec![
                crate::model::Index {
                    name: "by_email".into(),
                    unique: true,
                    columns: vec!["email".into()],
                },
                crate::model::Index {
                    name: "by_fname".into(),
                    unique: false,
                    columns: vec!["fname".into()],
                },
            ],
            version: 1,
        }
    }

    fn settings(text: &str) -> TableSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn maps_names_types_indexes_and_rows() {
        let t = settings(
            "name = \"customers\"\ntarget = \"crm.people\"\nrename_columns = { fname = \"first_name\" }\n\
             mask_columns = { email = \"sha256\", age = \"null\" }\n",
        );
        let map = TableMap::of(&t, "public", None);
        let m = model();
        map.check(&m, false).unwrap();
        let out = map.model(&m);
        assert_eq!((map.schema.as_str(), out.name.as_str()), ("crm", "people"));
        let names: Vec<&str> = out.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "first_name", "email", "age"]);
        assert_eq!(out.columns[2].kind, Kind::Text);
        assert_eq!(out.columns[3].kind, Kind::Int { bytes: 4 });
        assert_eq!(out.indexes.len(), 1);
        assert_eq!(out.indexes[0].columns, ["first_name"]);
        let mut row = vec![
            Value::Int(1),
            Value::Text("Ann".into()),
            Value::Text("a@x".into()),
            Value::Int(30),
        ];
        map.mask_row(&m, &mut row);
        assert_eq!(row[1], Value::Text("Ann".into()));
        assert_eq!(row[3], Value::Null);
        // sha256("a@x")
        let Value::Text(h) = &row[2] else { panic!() };
        assert_eq!(h.len(), 64);
        let salted = TableMap::of(&t, "public", Some(Arc::new(b"salt".to_vec())));
        let mut row2 = vec![
            Value::Int(1),
            Value::Null,
            Value::Text("a@x".into()),
            Value::Null,
        ];
        salted.mask_row(&m, &mut row2);
        assert_ne!(row2[2], row[2], "a salt changes the hash");
    }

    #[test]
    fn refuses_a_masked_key_an_unknown_column_and_a_clash() {
        let m = model();
        let key = TableMap::of(
            &settings("name = \"customers\"\nmask_columns = { id = \"redact\" }\n"),
            "public",
            None,
        );
        assert!(key
            .check(&m, false)
            .unwrap_err()
            .to_string()
            .contains("primary key"));
        let unknown = TableMap::of(
            &settings("name = \"customers\"\nrename_columns = { nope = \"x\" }\n"),
            "public",
            None,
        );
        assert!(unknown.check(&m, false).is_err());
        assert!(
            unknown.check(&m, true).is_ok(),
            "a pattern's tables need not have it"
        );
        let clash = TableMap::of(
            &settings("name = \"customers\"\nrename_columns = { fname = \"email\" }\n"),
            "public",
            None,
        );
        assert!(clash
            .check(&m, false)
            .unwrap_err()
            .to_string()
            .contains("two columns"));
        let plain = TableMap::plain("public");
        assert_eq!(plain.model(&m), m, "no option: the same model");
    }
}
