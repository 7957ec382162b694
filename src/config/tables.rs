//! `[[tables]]`: one entry per table or pattern, and how an entry checks itself.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Capture, OnDropColumn};
use crate::error::{Error, Result};

/// How a masked column's values are replaced (`mask_columns`; applied by the sink's
/// column mapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    /// Always NULL.
    Null,
    /// `***`.
    Redact,
    /// The SHA-256 of the value's text, in hex; an HMAC keyed by `[pipeline]
    /// mask_salt_file` when one is given.
    Sha256,
    /// This text.
    Constant(String),
}

impl Mask {
    /// `"null"`, `"redact"`, `"sha256"`, `"constant:TEXT"`.
    pub fn parse(s: &str) -> Option<Mask> {
        match s {
            "null" => Some(Mask::Null),
            "redact" => Some(Mask::Redact),
            "sha256" => Some(Mask::Sha256),
            _ => s
                .strip_prefix("constant:")
                .map(|c| Mask::Constant(c.into())),
        }
    }
}

/// One `[[tables]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    /// Source table name (in the source URL's database).
    pub name: String,
    /// Column, or list of columns, that grows whenever a row is inserted or updated.
    /// Required with `capture = "poll"`; not used by binlog capture.
    #[serde(default)]
    pub cursor: Option<OneOrMany>,
    /// Primary-key columns; introspected from the source when absent.
    #[serde(default)]
    pub primary_key: Option<OneOrMany>,
    /// TINYINT(1) columns become `boolean` (true), or `smallint` (false). As booleans, a
    /// value other than 0 or 1 stops the table rather than turning into `true`.
    #[serde(default = "yes")]
    pub tinyint1_as_boolean: bool,
    /// Overrides `[pipeline] on_drop_column` for this table.
    #[serde(default)]
    pub on_drop_column: Option<OnDropColumn>,
    /// With a pattern in `name` (`*` any run of characters, `?` one): tables it does not
    /// take, as patterns too.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Columns never read and never written: left out of every query of the source and of
    /// the target table (binlog capture skips them in row images without decoding them).
    /// Not a key or cursor column. A pattern's entry applies them to every table it takes
    /// that has them.
    #[serde(default)]
    pub exclude_columns: Vec<String>,
    /// Where the table lands: `"table"` or `"schema.table"`, or `"schema.*"` (the source's
    /// name in another schema; the only form a pattern takes). Default: `[target] schema`,
    /// the source's name.
    #[serde(default)]
    pub target: Option<String>,
    /// Source column → target column name.
    #[serde(default)]
    pub rename_columns: BTreeMap<String, String>,
    /// Source column → `"sha256"`, `"null"`, `"redact"` or `"constant:TEXT"`: what the
    /// target holds instead of its values (see the column mapping: `crate::sink::postgres::map`).
    #[serde(default)]
    pub mask_columns: BTreeMap<String, String>,
    /// Source column → the target's type, overriding the type mapping: one that holds every
    /// value (refused at start otherwise), or a parse of text (`jsonb`, `uuid`).
    #[serde(default)]
    pub column_types: BTreeMap<String, String>,
    /// `where`: the rows that reach the target ([`crate::filter`]); the others never do,
    /// and a row an update moves out of it is deleted there.
    #[serde(default, rename = "where")]
    pub filter: Option<String>,
    /// Taken by a pattern (set when patterns are expanded): the table going away is not a
    /// failure.
    #[serde(skip)]
    pub from_pattern: bool,
}

fn yes() -> bool {
    true
}

/// A column name or a list of them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Whether `name` matches glob `pattern` (`*`: any run of characters, `?`: one; case
/// sensitive, as table names are on most servers).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with backtracking to the last star.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

impl TableSettings {
    /// Whether `name` is a pattern (holds `*` or `?`) rather than one table.
    pub fn is_pattern(&self) -> bool {
        self.name.contains(['*', '?'])
    }

    /// Whether this entry takes source table `table`.
    pub fn takes(&self, table: &str) -> bool {
        if self.is_pattern() {
            glob_match(&self.name, table) && !self.exclude.iter().any(|x| glob_match(x, table))
        } else {
            self.name == table
        }
    }

    /// The demo table, used when the configuration names no table.
    pub fn demo_orders() -> Self {
        TableSettings {
            name: "orders".into(),
            cursor: Some(OneOrMany::One("created".into())),
            primary_key: None,
            tinyint1_as_boolean: true,
            on_drop_column: None,
            exclude: Vec::new(),
            exclude_columns: Vec::new(),
            target: None,
            rename_columns: BTreeMap::new(),
            mask_columns: BTreeMap::new(),
            column_types: BTreeMap::new(),
            filter: None,
            from_pattern: false,
        }
    }

    /// Whether source column `column` is left out (`exclude_columns`; MySQL's column names
    /// are case-insensitive).
    pub fn excludes(&self, column: &str) -> bool {
        self.exclude_columns
            .iter()
            .any(|c| c.eq_ignore_ascii_case(column))
    }
}

impl TableSettings {
    /// `at` names the entry (`tables[2]`) in messages.
    pub fn validate(&self, at: &str, capture: Capture) -> Result<()> {
        let problems = self.problems(at, capture);
        match problems.len() {
            0 => Ok(()),
            _ => Err(Error::Config(problems.join("\n  - "))),
        }
    }

    /// Every problem [`Self::validate`] finds in the entry, each with its fix.
    pub fn problems(&self, at: &str, capture: Capture) -> Vec<String> {
        let t = self;
        let mut problems = Vec::new();
        if t.name.is_empty() {
            problems.push(format!("{at}.name must not be empty"));
        }
        if !t.exclude.is_empty() && !t.is_pattern() {
            problems.push(format!(
                "{at}.exclude (table {:?}) only applies to a pattern: give `name` a `*` or `?` (e.g. name = \"*\"), or remove `exclude`",
                t.name
            ));
        }
        match (&t.cursor, capture) {
            (None, Capture::Poll) => {
                problems.push(format!(
                    "{at}.cursor (table {:?}) is missing: polling reads rows in the order of a column that grows on every insert and update (e.g. cursor = \"updated_at\"); name one, or use [source] capture = \"binlog\", which needs none",
                    t.name
                ));
            }
            (Some(c), _) if c.to_vec().is_empty() || c.to_vec().iter().any(|c| c.is_empty()) => {
                problems.push(format!(
                    "{at}.cursor (table {:?}) must name at least one column",
                    t.name
                ));
            }
            _ => {}
        }
        if let Some(pk) = &t.primary_key {
            let pk = pk.to_vec();
            if pk.is_empty() || pk.iter().any(|c| c.is_empty()) {
                problems.push(format!(
                    "{at}.primary_key (table {:?}) must name at least one column, or be left out to introspect it",
                    t.name
                ));
            }
        }
        for (role, cols) in [("primary_key", &t.primary_key), ("cursor", &t.cursor)] {
            if let Some(c) = cols.iter().flat_map(|c| c.to_vec()).find(|c| t.excludes(c)) {
                problems.push(format!(
                    "{at}.exclude_columns (table {:?}) names {c:?}, which is in its {role}: a {role} column is needed to replicate the table; remove it from exclude_columns",
                    t.name
                ));
            }
        }
        for (c, m) in &t.mask_columns {
            if Mask::parse(m).is_none() {
                problems.push(format!(
                    "{at}.mask_columns.{c} (table {:?}) = {m:?} is not a mask: use \"sha256\", \"null\", \"redact\" or \"constant:TEXT\"",
                    t.name
                ));
            }
        }
        if let Some(f) = &t.filter {
            if let Err(why) = crate::filter::Filter::parse(f) {
                problems.push(format!(
                    "{at}.where (table {:?}) = {f:?}: {why}; see the column mapping page for the expressions it takes",
                    t.name
                ));
            }
        }
        for c in t.column_types.keys() {
            if t.mask_columns.keys().any(|m| m.eq_ignore_ascii_case(c)) {
                problems.push(format!(
                    "{at}.column_types.{c} (table {:?}): the column is masked, and a masked column's type is the mask's; remove one of them",
                    t.name
                ));
            }
        }
        for (what, c) in t
            .rename_columns
            .keys()
            .map(|c| ("rename_columns", c))
            .chain(t.mask_columns.keys().map(|c| ("mask_columns", c)))
            .chain(t.column_types.keys().map(|c| ("column_types", c)))
        {
            if t.excludes(c) {
                problems.push(format!(
                    "{at}.{what} (table {:?}) names {c:?}, which exclude_columns leaves out; remove it from one of them",
                    t.name
                ));
            }
        }
        if let Some(c) = t
            .cursor
            .iter()
            .flat_map(|c| c.to_vec())
            .chain(t.primary_key.iter().flat_map(|c| c.to_vec()))
            .find(|c| t.mask_columns.keys().any(|m| m.eq_ignore_ascii_case(c)))
        {
            problems.push(format!(
                "{at}.mask_columns (table {:?}) names {c:?}, a key or cursor column: its own values are needed to replicate the table; remove it from mask_columns",
                t.name
            ));
        }
        if let Some((c, n)) = t.rename_columns.iter().find(|(_, n)| n.is_empty()) {
            problems.push(format!(
                "{at}.rename_columns.{c} (table {:?}) = {n:?}: give the target column a name",
                t.name
            ));
        }
        if let Some(target) = &t.target {
            let ok = match target.split_once('.') {
                Some((s, n)) => {
                    !s.is_empty()
                        && !n.is_empty()
                        && !n.contains('.')
                        && (n == "*" || !t.is_pattern())
                }
                None => !target.is_empty() && target != "*" && !t.is_pattern(),
            };
            if !ok {
                problems.push(format!(
                    "{at}.target (table {:?}) = {target:?}: use \"table\" or \"schema.table\"{}, or \"schema.*\" for the source's name in another schema",
                    t.name,
                    if t.is_pattern() { " (not with a pattern, whose tables need names of their own)" } else { "" }
                ));
            }
        }
        if let Some(c) = t.exclude_columns.iter().find(|c| c.is_empty()) {
            problems.push(format!(
                "{at}.exclude_columns (table {:?}) holds an empty name {c:?}",
                t.name
            ));
        }
        problems
    }
}
