//! `[[tables]] where`: which source rows reach the target, in a small expression language
//! evaluated the same way on rows ([`Filter::keeps`], three-valued as SQL) and by MySQL
//! ([`Filter::mysql`], for `verify`):
//!
//! ```text
//! expr  := or
//! or    := and ("OR" and)*
//! and   := not ("AND" not)*
//! not   := "NOT" not | "(" expr ")" | pred
//! pred  := column ( ("=" | "<>" | "!=" | "<" | "<=" | ">" | ">=") literal
//!                 | "IS" ["NOT"] "NULL"
//!                 | ["NOT"] "IN" "(" literal ("," literal)* ")"
//!                 | ["NOT"] "LIKE" string )
//! literal := number | 'string' ('' for a quote) | TRUE | FALSE
//! column  := a name, or `a quoted name`
//! ```
//!
//! Text compares byte for byte (case matters, whatever the column's collation), numbers as
//! numbers, dates and times by their `YYYY-MM-DD[ HH:MM:SS[.ffffff]]` text; `LIKE` takes `%`
//! and `_`, `\` escaping either.

use bigdecimal::BigDecimal;

use crate::error::{Error, Result};
use crate::model::{Kind, TableModel};
use crate::value::Value;

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Num(String),
    Str(String),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(String, Cmp, Lit),
    IsNull(String, bool),
    In(String, Vec<Lit>, bool),
    Like(String, String, bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

/// A token as the expression has it, for messages; `None` is the end of the expression.
fn shown(t: Option<&Tok>) -> String {
    match t {
        None => "the end of the expression".into(),
        Some(Tok::Word(w)) => format!("`{w}`"),
        Some(Tok::Quoted(w)) => format!("`{w}`"),
        Some(Tok::Str(s)) => format!("'{s}'"),
        Some(Tok::Num(n)) => n.clone(),
        Some(Tok::Sym(s)) => format!("`{s}`"),
    }
}

fn lex(s: &str) -> std::result::Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '\'' || ch == '`' {
            let mut v = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return Err(format!("a {ch} is not closed")),
                    Some(&q) if q == ch && c.get(i + 1) == Some(&ch) => {
                        v.push(ch);
                        i += 2;
                    }
                    Some(&q) if q == ch => {
                        i += 1;
                        break;
                    }
                    Some(&o) => {
                        v.push(o);
                        i += 1;
                    }
                }
            }
            out.push(if ch == '\'' {
                Tok::Str(v)
            } else {
                Tok::Quoted(v)
            });
        } else if ch.is_ascii_digit()
            || (ch == '-' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            i += 1;
            while c.get(i).is_some_and(|d| d.is_ascii_digit() || *d == '.') {
                i += 1;
            }
            out.push(Tok::Num(c[start..i].iter().collect()));
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while c
                .get(i)
                .is_some_and(|d| d.is_alphanumeric() || *d == '_' || *d == '$')
            {
                i += 1;
            }
            out.push(Tok::Word(c[start..i].iter().collect()));
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            let sym = ["<=", ">=", "<>", "!="]
                .into_iter()
                .find(|s| *s == two)
                .or_else(|| {
                    ["=", "<", ">", "(", ")", ","]
                        .into_iter()
                        .find(|s| s.starts_with(ch))
                });
            match sym {
                Some(s) => {
                    out.push(Tok::Sym(s));
                    i += s.len();
                }
                None => return Err(format!("unexpected {ch:?}")),
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.at), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn word(&mut self, w: &str) -> bool {
        let yes = self.peek_word(w);
        self.at += usize::from(yes);
        yes
    }

    fn sym(&mut self, s: &str) -> bool {
        let yes = matches!(self.toks.get(self.at), Some(Tok::Sym(x)) if *x == s);
        self.at += usize::from(yes);
        yes
    }

    fn expect(&mut self, s: &str) -> std::result::Result<(), String> {
        if self.sym(s) {
            Ok(())
        } else {
            Err(format!("expected {s:?}"))
        }
    }

    fn or(&mut self) -> std::result::Result<Expr, String> {
        let mut e = self.and()?;
        while self.word("OR") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> std::result::Result<Expr, String> {
        let mut e = self.not()?;
        while self.word("AND") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> std::result::Result<Expr, String> {
        if self.word("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        if self.sym("(") {
            let e = self.or()?;
            self.expect(")")?;
            return Ok(e);
        }
        self.pred()
    }

    fn literal(&mut self) -> std::result::Result<Lit, String> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        match t {
            Some(Tok::Num(n)) if n.parse::<f64>().is_ok() => Ok(Lit::Num(n)),
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("TRUE") => Ok(Lit::Bool(true)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("FALSE") => Ok(Lit::Bool(false)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("NULL") => {
                Err("compare with NULL by IS NULL or IS NOT NULL".into())
            }
            other => Err(format!(
                "expected a literal, found {}",
                shown(other.as_ref())
            )),
        }
    }

    fn pred(&mut self) -> std::result::Result<Expr, String> {
        let col = match self.toks.get(self.at).cloned() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => w,
            other => {
                return Err(format!(
                    "expected a column, found {}",
                    shown(other.as_ref())
                ))
            }
        };
        self.at += 1;
        if self.word("IS") {
            let not = self.word("NOT");
            if !self.word("NULL") {
                return Err("expected NULL after IS".into());
            }
            return Ok(Expr::IsNull(col, !not));
        }
        let not = self.word("NOT");
        if self.word("IN") {
            self.expect("(")?;
            let mut list = vec![self.literal()?];
            while self.sym(",") {
                list.push(self.literal()?);
            }
            self.expect(")")?;
            return Ok(Expr::In(col, list, !not));
        }
        if self.word("LIKE") {
            return match self.literal()? {
                Lit::Str(p) => Ok(Expr::Like(col, p, !not)),
                _ => Err("LIKE takes a 'string'".into()),
            };
        }
        if not {
            return Err("expected IN or LIKE after NOT".into());
        }
        let op = [
            ("=", Cmp::Eq),
            ("<>", Cmp::Ne),
            ("!=", Cmp::Ne),
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ]
        .into_iter()
        .find(|(s, _)| self.sym(s))
        .map(|(_, c)| c)
        .ok_or_else(|| format!("expected a comparison after {col}"))?;
        Ok(Expr::Cmp(col, op, self.literal()?))
    }
}

/// A parsed `where`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    text: String,
    expr: Expr,
}

/// A [`Filter`] resolved against one table model ([`Filter::bind`]).
pub struct Bound {
    expr: BoundExpr,
}

/// A literal's value for its column, and as an integer when it is one (compared with
/// integer columns without conversion).
struct BoundLit {
    key: Key,
    int: Option<i128>,
}

/// [`Expr`] with each column's place and kind (`None`: the model has no such column, which
/// is unknown) and each literal's value (`None`: not a value of its column, unknown).
enum BoundExpr {
    And(Box<BoundExpr>, Box<BoundExpr>),
    Or(Box<BoundExpr>, Box<BoundExpr>),
    Not(Box<BoundExpr>),
    Cmp(Option<(usize, Kind)>, Cmp, Option<BoundLit>),
    IsNull(Option<(usize, Kind)>, bool),
    In(Option<(usize, Kind)>, Vec<Option<BoundLit>>, bool),
    Like(Option<(usize, Kind)>, Vec<char>, bool),
}

impl Bound {
    /// Whether `row` passes: SQL's three-valued logic, NULL (unknown) not passing.
    pub fn keeps(&self, row: &[Value]) -> bool {
        Self::eval(&self.expr, row) == Some(true)
    }

    fn eval(e: &BoundExpr, row: &[Value]) -> Option<bool> {
        let value = |c: &Option<(usize, Kind)>| {
            let (i, kind) = (*c)?;
            Some((kind, row.get(i)?))
        };
        match e {
            BoundExpr::And(a, b) => match (Self::eval(a, row), Self::eval(b, row)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            BoundExpr::Or(a, b) => match (Self::eval(a, row), Self::eval(b, row)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            BoundExpr::Not(a) => Self::eval(a, row).map(|b| !b),
            BoundExpr::IsNull(c, is) => {
                let (_, v) = value(c)?;
                Some((*v == Value::Null) == *is)
            }
            BoundExpr::Cmp(c, op, l) => {
                let (kind, v) = value(c)?;
                let o = compare(kind, v, l.as_ref()?)?;
                Some(match op {
                    Cmp::Eq => o.is_eq(),
                    Cmp::Ne => o.is_ne(),
                    Cmp::Lt => o.is_lt(),
                    Cmp::Le => o.is_le(),
                    Cmp::Gt => o.is_gt(),
                    Cmp::Ge => o.is_ge(),
                })
            }
            BoundExpr::In(c, list, is) => {
                let (kind, v) = value(c)?;
                if *v == Value::Null {
                    return None;
                }
                let found = list
                    .iter()
                    .flatten()
                    .any(|l| compare(kind, v, l).is_some_and(|o| o.is_eq()));
                Some(found == *is)
            }
            BoundExpr::Like(c, p, is) => {
                let (kind, v) = value(c)?;
                // `check` lets LIKE take text columns only.
                match v {
                    Value::Null => None,
                    Value::Text(t) => Some(like(t, p) == *is),
                    v => match column_key(kind, v)? {
                        Key::Text(t) => Some(like(&t, p) == *is),
                        Key::Num(_) | Key::Float(_) => None,
                    },
                }
            }
        }
    }
}

/// How value `v` of a column of `kind` orders against literal `l`; `None` for NULL. Text
/// and integers are compared in place; the rest through [`column_key`].
fn compare(kind: Kind, v: &Value, l: &BoundLit) -> Option<std::cmp::Ordering> {
    match (v, &l.key, l.int) {
        (Value::Null, ..) => None,
        (Value::Int(i), Key::Num(_), Some(n)) => Some(i128::from(*i).cmp(&n)),
        (Value::UInt(u), Key::Num(_), Some(n)) => Some(i128::from(*u).cmp(&n)),
        (Value::Text(s), Key::Text(t), _) if !matches!(kind, Kind::Decimal { .. }) => {
            Some(s.as_str().cmp(t.as_str()))
        }
        _ => column_key(kind, v)?.partial_cmp(&l.key),
    }
}

/// What a value compares as: integers and DECIMALs exactly (as MySQL compares them with a
/// number literal), FLOAT and DOUBLE as doubles.
#[derive(Debug, PartialEq, PartialOrd)]
enum Key {
    Num(BigDecimal),
    Float(f64),
    Text(String),
}

fn float(kind: Kind) -> bool {
    matches!(kind, Kind::Float32 | Kind::Float64)
}

fn column_key(kind: Kind, v: &Value) -> Option<Key> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => Key::Num(BigDecimal::from(u8::from(*b))),
        Value::Int(i) => Key::Num(BigDecimal::from(*i)),
        Value::UInt(u) => Key::Num(BigDecimal::from(*u)),
        Value::Float(f) => Key::Float(*f),
        Value::Text(s) if matches!(kind, Kind::Decimal { .. }) => Key::Num(s.parse().ok()?),
        Value::Text(s) => Key::Text(s.clone()),
        Value::Bytes(b) => Key::Text(String::from_utf8_lossy(b).into_owned()),
        Value::Date(d) => Key::Text(d.format("%Y-%m-%d").to_string()),
        Value::DateTime(t) => Key::Text(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
        Value::Timestamp(t) => Key::Text(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()),
    })
}

fn numeric(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Bool
            | Kind::Int { .. }
            | Kind::UInt { .. }
            | Kind::Decimal { .. }
            | Kind::Float32
            | Kind::Float64
            | Kind::Year
    )
}

fn dated(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Date | Kind::DateTime { .. } | Kind::Timestamp { .. }
    )
}

/// A date literal in the column's text form (`2024-01-05` for a DATETIME is its midnight).
fn date_text(kind: Kind, s: &str) -> Option<String> {
    use chrono::{NaiveDate, NaiveDateTime};
    if kind == Kind::Date {
        return NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(|d| d.format("%Y-%m-%d").to_string());
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .ok()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
}

fn lit_key(kind: Kind, l: &Lit) -> Option<Key> {
    match l {
        Lit::Num(n) if float(kind) => n.parse().ok().map(Key::Float),
        Lit::Num(n) if numeric(kind) => n.parse().ok().map(Key::Num),
        Lit::Bool(b) if float(kind) => Some(Key::Float(f64::from(u8::from(*b)))),
        Lit::Bool(b) if numeric(kind) => Some(Key::Num(BigDecimal::from(u8::from(*b)))),
        Lit::Str(s) if dated(kind) => date_text(kind, s).map(Key::Text),
        Lit::Str(s) if !numeric(kind) => Some(Key::Text(s.clone())),
        _ => None,
    }
}

/// `text` LIKE `pattern` (`%`, `_`, `\` escapes), byte for byte.
fn like(text: &str, pattern: &[char]) -> bool {
    fn go(t: &[char], p: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|i| go(&t[i..], &p[1..])),
            Some('_') => !t.is_empty() && go(&t[1..], &p[1..]),
            Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && go(&t[1..], &p[2..]),
            Some(c) => t.first() == Some(c) && go(&t[1..], &p[1..]),
        }
    }
    let t: Vec<char> = text.chars().collect();
    go(&t, pattern)
}

fn quote_mysql(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A string as a MySQL literal in utf8mb4, compared byte for byte.
fn mysql_str(s: &str) -> String {
    let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() {
        "_utf8mb4'' COLLATE utf8mb4_bin".into()
    } else {
        format!("_utf8mb4 X'{hex}' COLLATE utf8mb4_bin")
    }
}

impl Filter {
    /// Parses `text`; the error says where it went wrong.
    pub fn parse(text: &str) -> std::result::Result<Filter, String> {
        let toks = lex(text)?;
        let mut p = Parser { toks, at: 0 };
        let expr = p.or()?;
        if p.at < p.toks.len() {
            return Err(format!("unexpected {}", shown(p.toks.get(p.at))));
        }
        Ok(Filter {
            text: text.to_string(),
            expr,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether it reads column `c`.
    pub fn reads(&self, c: &str) -> bool {
        self.columns().iter().any(|x| x.eq_ignore_ascii_case(c))
    }

    /// The columns it reads.
    pub fn columns(&self) -> Vec<&str> {
        fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
            match e {
                Expr::And(a, b) | Expr::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::Not(a) => walk(a, out),
                Expr::Cmp(c, ..) | Expr::IsNull(c, _) | Expr::In(c, ..) | Expr::Like(c, ..) => {
                    out.push(c)
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.expr, &mut out);
        out
    }

    /// Checks the filter against the table: every column there, every literal of its
    /// column's type.
    pub fn check(&self, m: &TableModel, excluded: &[String]) -> Result<()> {
        let bad = |why: String| {
            Err(Error::Schema(format!(
                "table {:?}: where = {:?}: {why}",
                m.name, self.text
            )))
        };
        for c in self.columns() {
            if excluded.iter().any(|x| x.eq_ignore_ascii_case(c)) {
                return bad(format!(
                    "column {c:?} is in exclude_columns; a filter's columns must be read"
                ));
            }
            let Some(i) = m.column(c) else {
                return bad(format!(
                    "the table has no column {c:?} (its columns: {})",
                    m.columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            };
            // Kinds whose text differs between sluice and MySQL: a filter could not be
            // evaluated alike.
            let col = &m.columns[i];
            if matches!(col.kind, Kind::Bytes | Kind::Bits(_) | Kind::Time { .. }) {
                return bad(format!(
                    "column {c:?} ({}) cannot be filtered on: binary, BIT and TIME columns are not compared alike on both sides",
                    col.source_type
                ));
            }
        }
        fn lits(e: &Expr, out: &mut Vec<(String, Lit)>) {
            match e {
                Expr::And(a, b) | Expr::Or(a, b) => {
                    lits(a, out);
                    lits(b, out);
                }
                Expr::Not(a) => lits(a, out),
                Expr::Cmp(c, _, l) => out.push((c.clone(), l.clone())),
                Expr::In(c, l, _) => out.extend(l.iter().map(|l| (c.clone(), l.clone()))),
                Expr::Like(c, p, _) => out.push((c.clone(), Lit::Str(p.clone()))),
                Expr::IsNull(..) => {}
            }
        }
        let mut all = Vec::new();
        lits(&self.expr, &mut all);
        for (c, l) in all {
            let col = &m.columns[m.column(&c).expect("checked above")];
            if lit_key(col.kind, &l).is_none() {
                return bad(format!(
                    "{l:?} is not a value of column {c:?} ({}): numbers for numbers, 'YYYY-MM-DD[ HH:MM:SS]' for dates and times, 'text' for text",
                    col.source_type
                ));
            }
        }
        Ok(())
    }

    /// Whether `row` (of `m`) passes: SQL's three-valued logic, NULL (unknown) not passing.
    /// For many rows, [`Self::bind`] once and ask the [`Bound`].
    pub fn keeps(&self, m: &TableModel, row: &[Value]) -> bool {
        self.bind(m).keeps(row)
    }

    /// The filter resolved against model `m`: its columns' places and its literals' values
    /// found once, for the rows of one batch.
    pub fn bind(&self, m: &TableModel) -> Bound {
        fn column(m: &TableModel, c: &str) -> Option<(usize, Kind)> {
            m.column(c).map(|i| (i, m.columns[i].kind))
        }
        fn lit(col: Option<(usize, Kind)>, l: &Lit) -> Option<BoundLit> {
            let key = lit_key(col?.1, l)?;
            let int = match &key {
                Key::Num(n) if n.is_integer() => n.to_string().parse::<i128>().ok(),
                _ => None,
            };
            Some(BoundLit { key, int })
        }
        fn go(e: &Expr, m: &TableModel) -> BoundExpr {
            match e {
                Expr::And(a, b) => BoundExpr::And(Box::new(go(a, m)), Box::new(go(b, m))),
                Expr::Or(a, b) => BoundExpr::Or(Box::new(go(a, m)), Box::new(go(b, m))),
                Expr::Not(a) => BoundExpr::Not(Box::new(go(a, m))),
                Expr::IsNull(c, is) => BoundExpr::IsNull(column(m, c), *is),
                Expr::Cmp(c, op, l) => {
                    let col = column(m, c);
                    BoundExpr::Cmp(col, *op, lit(col, l))
                }
                Expr::In(c, list, is) => {
                    let col = column(m, c);
                    BoundExpr::In(col, list.iter().map(|l| lit(col, l)).collect(), *is)
                }
                Expr::Like(c, p, is) => BoundExpr::Like(column(m, c), p.chars().collect(), *is),
            }
        }
        Bound {
            expr: go(&self.expr, m),
        }
    }
    /// The filter as a MySQL condition on table `m`'s columns, giving what [`Self::keeps`]
    /// gives (text compared byte for byte in utf8mb4).
    pub fn mysql(&self, m: &TableModel) -> String {
        fn col(m: &TableModel, c: &str) -> (Kind, String) {
            let kind = m.column(c).map_or(Kind::Text, |i| m.columns[i].kind);
            let q = quote_mysql(c);
            let expr = if numeric(kind) {
                q
            } else if dated(kind) {
                let fmt = if kind == Kind::Date {
                    "'%Y-%m-%d'"
                } else {
                    "'%Y-%m-%d %H:%i:%s.%f'"
                };
                format!("DATE_FORMAT({q}, {fmt}) COLLATE utf8mb4_bin")
            } else {
                format!("CONVERT({q} USING utf8mb4) COLLATE utf8mb4_bin")
            };
            (kind, expr)
        }
        fn lit(kind: Kind, l: &Lit) -> String {
            match (lit_key(kind, l), l) {
                (Some(Key::Num(_) | Key::Float(_)), Lit::Num(n)) => n.clone(),
                (Some(Key::Num(_) | Key::Float(_)), Lit::Bool(b)) => u8::from(*b).to_string(),
                (Some(Key::Num(n)), _) => n.to_string(),
                (Some(Key::Float(n)), _) => n.to_string(),
                (Some(Key::Text(t)), _) => mysql_str(&t),
                (None, _) => "NULL".into(),
            }
        }
        fn go(e: &Expr, m: &TableModel) -> String {
            match e {
                Expr::And(a, b) => format!("({} AND {})", go(a, m), go(b, m)),
                Expr::Or(a, b) => format!("({} OR {})", go(a, m), go(b, m)),
                Expr::Not(a) => format!("(NOT {})", go(a, m)),
                Expr::IsNull(c, is) => format!(
                    "({} IS {}NULL)",
                    quote_mysql(c),
                    if *is { "" } else { "NOT " }
                ),
                Expr::Cmp(c, op, l) => {
                    let (kind, e) = col(m, c);
                    let op = match op {
                        Cmp::Eq => "=",
                        Cmp::Ne => "<>",
                        Cmp::Lt => "<",
                        Cmp::Le => "<=",
                        Cmp::Gt => ">",
                        Cmp::Ge => ">=",
                    };
                    format!("({e} {op} {})", lit(kind, l))
                }
                Expr::In(c, list, is) => {
                    let (kind, e) = col(m, c);
                    let l: Vec<String> = list.iter().map(|x| lit(kind, x)).collect();
                    format!(
                        "({e} {}IN ({}))",
                        if *is { "" } else { "NOT " },
                        l.join(", ")
                    )
                }
                Expr::Like(c, p, is) => {
                    let (_, e) = col(m, c);
                    format!(
                        "(CAST({e} AS CHAR) COLLATE utf8mb4_bin {}LIKE {})",
                        if *is { "" } else { "NOT " },
                        mysql_str(p)
                    )
                }
            }
        }
        go(&self.expr, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Column;

    fn model() -> TableModel {
        TableModel {
            name: "t".into(),
            columns: vec![
                Column::new("id", "int", Kind::Int { bytes: 4 }),
                Column::new("region", "varchar(4)", Kind::Text),
                Column::new("deleted_at", "datetime", Kind::DateTime { fsp: 0 }),
                Column::new(
                    "amount",
                    "decimal(10,2)",
                    Kind::Decimal {
                        precision: 10,
                        scale: 2,
                    },
                ),
                Column::new("blob", "blob", Kind::Bytes),
            ],
            primary_key: vec![0],
            indexes: vec![],
            version: 1,
        }
    }

    fn row(region: Option<&str>, deleted: bool, amount: &str) -> Vec<Value> {
        vec![
            Value::Int(1),
            region.map_or(Value::Null, |r| Value::Text(r.into())),
            if deleted {
                Value::DateTime(
                    chrono::NaiveDate::from_ymd_opt(2024, 1, 5)
                        .unwrap()
                        .and_hms_opt(10, 0, 0)
                        .unwrap(),
                )
            } else {
                Value::Null
            },
            Value::Text(amount.into()),
            Value::Null,
        ]
    }

    #[test]
    fn evaluates_as_sql_does() {
        let m = model();
        let f = Filter::parse("region = 'EU' AND deleted_at IS NULL").unwrap();
        f.check(&m, &[]).unwrap();
        assert!(f.keeps(&m, &row(Some("EU"), false, "1.00")));
        assert!(
            !f.keeps(&m, &row(Some("eu"), false, "1.00")),
            "case matters"
        );
        assert!(!f.keeps(&m, &row(Some("EU"), true, "1.00")));
        assert!(
            !f.keeps(&m, &row(None, false, "1.00")),
            "unknown is not kept"
        );
        let f = Filter::parse("NOT (region IN ('US', 'CA')) OR amount >= 10.5").unwrap();
        assert!(f.keeps(&m, &row(Some("EU"), false, "1.00")));
        assert!(!f.keeps(&m, &row(Some("US"), false, "1.00")));
        assert!(f.keeps(&m, &row(Some("US"), false, "10.50")));
        assert!(
            !f.keeps(&m, &row(None, false, "1.00")),
            "NULL NOT IN: unknown"
        );
        let f = Filter::parse("region LIKE 'E\\_%' AND deleted_at < '2024-01-06'").unwrap();
        assert!(f.keeps(&m, &row(Some("E_x"), true, "0")));
        assert!(!f.keeps(&m, &row(Some("EUx"), true, "0")));
        assert_eq!(
            Filter::parse("region = 'it''s'").unwrap().mysql(&m),
            "(CONVERT(`region` USING utf8mb4) COLLATE utf8mb4_bin = _utf8mb4 X'69742773' COLLATE utf8mb4_bin)"
        );
    }

    #[test]
    fn refuses_what_it_cannot_evaluate() {
        let m = model();
        for (text, why) in [
            ("region = ", "expected a literal"),
            ("region == 'x'", "expected a literal"),
            ("region = NULL", "IS NULL"),
            ("(region = 'x'", "expected \")\""),
        ] {
            assert!(Filter::parse(text).unwrap_err().contains(why), "{text}");
        }
        let e = |t: &str, ex: &[String]| {
            Filter::parse(t)
                .unwrap()
                .check(&m, ex)
                .unwrap_err()
                .to_string()
        };
        assert!(e("nope = 1", &[]).contains("no column \"nope\""));
        assert!(e("amount = 'x'", &[]).contains("is not a value of column"));
        assert!(e("deleted_at > 'soon'", &[]).contains("is not a value"));
        assert!(e("region = 'x'", &["region".into()]).contains("exclude_columns"));
        assert!(e("blob IS NULL", &[]).contains("cannot be filtered on"));
        assert!(e("amount LIKE '1%'", &[]).contains("is not a value"));
    }

    #[test]
    fn numbers_compare_exactly_as_mysql_does() {
        let mut m = model();
        m.columns
            .push(Column::new("big", "bigint", Kind::Int { bytes: 8 }));
        m.columns.push(Column::new(
            "wide",
            "decimal(30,2)",
            Kind::Decimal {
                precision: 30,
                scale: 2,
            },
        ));
        m.columns.push(Column::new("d", "double", Kind::Float64));
        let mut r = row(Some("EU"), false, "1.00");
        r.extend([
            Value::Int(9_007_199_254_740_993),
            Value::Text("12345678901234567890.01".into()),
            Value::Float(0.5),
        ]);
        for (text, keeps) in [
            // 2^53 + 1: a double cannot tell it from 2^53.
            ("big = 9007199254740993", true),
            ("big = 9007199254740992", false),
            ("big > 9007199254740992", true),
            ("wide > 12345678901234567890.00", true),
            ("wide = 12345678901234567890.010", true),
            (
                "wide IN (12345678901234567890, 12345678901234567890.01)",
                true,
            ),
            ("amount = 1", true),
            ("d > 0.25 AND d < 1", true),
            ("d = 0.5", true),
        ] {
            let f = Filter::parse(text).unwrap();
            f.check(&m, &[]).unwrap();
            assert_eq!(f.keeps(&m, &r), keeps, "{text}");
        }
    }
}
