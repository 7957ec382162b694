//! Recognizing the DDL statements binlog capture acts on, from their SQL text: pure functions
//! on strings (no server, no state).
//!
//! A statement outside a transaction reaches the stream as text (a `QUERY_EVENT`). Only a few
//! forms matter to it: a table emptied (`TRUNCATE`), taken away (`DROP TABLE`, `RENAME
//! TABLE`, `ALTER TABLE … RENAME`), its columns renamed (`RENAME COLUMN`, `CHANGE`) or its
//! indexes changed (`ALTER TABLE`, `CREATE INDEX`, `DROP INDEX`). The rest passes by.

/// A table's name in a statement, with its database when the statement names one.
pub(super) type QualifiedName = (Option<String>, String);

/// A table's database and name.
pub(super) type FullName = (String, String);

/// The tables a `DROP TABLE [IF EXISTS] a, b`, `RENAME TABLE a TO b, …` or `ALTER TABLE a
/// … RENAME [TO|AS] b` statement takes away, each with its database (`schema`, the session's,
/// where the statement names none). A table renamed away and another renamed to its name in
/// the same statement (a swap) is not gone; one moved to another database is.
pub(super) fn tables_gone(sql: &str, schema: &str) -> Vec<(String, String)> {
    let sql = &without_comments(sql);
    let mut gone = Vec::new();
    let mut arrived = Vec::new();
    if let Some(rest) = strip_word(sql, "DROP")
        .and_then(|r| strip_word(r, "TEMPORARY").or(Some(r)))
        .and_then(|r| strip_word(r, "TABLE"))
    {
        let mut rest = if_exists(rest);
        while let Some((n, r)) = qualified(rest) {
            gone.push(n);
            match r.trim_start().strip_prefix(',') {
                Some(r) => rest = r,
                None => break,
            }
        }
    } else {
        for (from, to) in renames(sql) {
            gone.push(from);
            arrived.push(to);
        }
    }
    let full = |(db, name): QualifiedName| (db.unwrap_or_else(|| schema.to_string()), name);
    let arrived: Vec<_> = arrived.into_iter().map(full).collect();
    let mut gone: Vec<_> = gone.into_iter().map(full).collect();
    gone.retain(|g| !arrived.contains(g));
    gone
}

/// The renames of a `RENAME TABLE a TO b, …` or `ALTER TABLE a … RENAME [TO|AS] b`
/// statement, in order (`sql` without comments).
fn renames(sql: &str) -> Vec<(QualifiedName, QualifiedName)> {
    let mut out = Vec::new();
    if let Some(mut rest) = strip_word(sql, "RENAME").and_then(|r| strip_word(r, "TABLE")) {
        while let Some((from, r)) = qualified(rest) {
            let Some(r) = strip_word(r, "TO") else { break };
            let Some((to, r)) = qualified(r) else { break };
            out.push((from, to));
            match r.trim_start().strip_prefix(',') {
                Some(r) => rest = r,
                None => break,
            }
        }
    } else if let Some((from, clauses)) = alter_table(sql) {
        for clause in clauses {
            let renamed = strip_word(clause, "RENAME").filter(|r| {
                strip_word(r, "COLUMN").is_none()
                    && strip_word(r, "INDEX").is_none()
                    && strip_word(r, "KEY").is_none()
            });
            if let Some(r) = renamed {
                let r = strip_word(r, "TO")
                    .or_else(|| strip_word(r, "AS"))
                    .unwrap_or(r);
                if let Some((to, _)) = qualified(r) {
                    out.push((from.clone(), to));
                }
            }
        }
    }
    out
}

/// Tables whose rows a statement replaces wholesale, each `(db, name)` (`schema` where it
/// names none) with where the new rows come from: `Some(table)` for a table renamed onto the
/// name (`RENAME TABLE t TO t_old, t_new TO t`, chains and swaps followed), `None` for
/// `CREATE OR REPLACE TABLE t` (empty, or filled by the row events that follow).
pub(super) fn tables_replaced(sql: &str, schema: &str) -> Vec<(FullName, Option<FullName>)> {
    let sql = &without_comments(sql);
    let full = |(db, name): QualifiedName| (db.unwrap_or_else(|| schema.to_string()), name);
    if let Some(rest) = strip_word(sql, "CREATE")
        .and_then(|r| strip_word(r, "OR"))
        .and_then(|r| strip_word(r, "REPLACE"))
    {
        let rest = strip_word(rest, "TEMPORARY").map_or(rest, |_| "");
        return strip_word(rest, "TABLE")
            .and_then(qualified)
            .map(|(n, _)| vec![(full(n), None)])
            .unwrap_or_default();
    }
    // Where each name's rows come from after the renames, in order.
    let mut origin: Vec<(FullName, FullName)> = Vec::new();
    for (from, to) in renames(sql) {
        let (from, to) = (full(from), full(to));
        let source = match origin.iter().position(|(n, _)| *n == from) {
            Some(i) => origin.remove(i).1,
            None => from,
        };
        origin.push((to, source));
    }
    origin
        .into_iter()
        .filter(|(name, source)| name != source)
        .map(|(name, source)| (name, Some(source)))
        .collect()
}

/// Whether `copy` is named as an online schema change tool names the copy of `table` it
/// fills from it and swaps in: gh-ost `_t_gho`, pt-online-schema-change `_t_new` (and
/// `__t_new`), Facebook's OSC `__osc_new_t`, LHM `lhmn_t`, Spirit `_t_new`.
pub(super) fn schema_tool_copy(table: &str, copy: &str) -> bool {
    [
        format!("_{table}_gho"),
        format!("_{table}_new"),
        format!("__{table}_new"),
        format!("__osc_new_{table}"),
        format!("lhmn_{table}"),
    ]
    .iter()
    .any(|n| n == copy)
}

/// The table a `CREATE [UNIQUE] INDEX … ON t` or `DROP INDEX … ON t` statement changes.
pub(super) fn index_statement(sql: &str) -> Option<QualifiedName> {
    let sql = &without_comments(sql);
    let rest = strip_word(sql, "CREATE")
        .map(|r| {
            let r = strip_word(r, "OR")
                .and_then(|r| strip_word(r, "REPLACE"))
                .unwrap_or(r);
            strip_word(r, "UNIQUE").unwrap_or(r)
        })
        .or_else(|| strip_word(sql, "DROP"))?;
    let rest = strip_word(rest, "INDEX")?;
    // The index name, then ON and the table.
    let (_, mut rest) = ident(
        strip_word(rest, "IF")
            .map(|r| strip_word(r, "NOT").unwrap_or(r))
            .and_then(|r| strip_word(r, "EXISTS"))
            .unwrap_or(rest)
            .trim_start(),
    )?;
    loop {
        if let Some(r) = strip_word(rest, "ON") {
            return Some(qualified(r)?.0);
        }
        // Skip a word (USING BTREE, ALGORITHM=…) until ON.
        let r = rest.trim_start();
        let next = r.find(char::is_whitespace)?;
        rest = &r[next..];
    }
}

/// The table an `ALTER TABLE` statement changes and the columns it renames (`RENAME COLUMN
/// a TO b`, `CHANGE [COLUMN] a b …`).
pub(super) fn column_renames(sql: &str) -> Option<(QualifiedName, Vec<(String, String)>)> {
    let sql = &without_comments(sql);
    let (table, clauses) = alter_table(sql)?;
    let mut renames = Vec::new();
    for clause in clauses {
        if let Some(r) = strip_word(clause, "RENAME").and_then(|r| strip_word(r, "COLUMN")) {
            let r = if_exists(r);
            let Some((from, r)) = ident(r.trim_start()) else {
                continue;
            };
            let Some(r) = strip_word(r, "TO") else {
                continue;
            };
            if let Some((to, _)) = ident(r.trim_start()) {
                renames.push((from, to));
            }
        } else if let Some(r) = strip_word(clause, "CHANGE") {
            let r = strip_word(r, "COLUMN").unwrap_or(r);
            let r = if_exists(r);
            let Some((from, r)) = ident(r.trim_start()) else {
                continue;
            };
            if let Some((to, _)) = ident(r.trim_start()) {
                if from != to {
                    renames.push((from, to));
                }
            }
        }
    }
    Some((table, renames))
}

/// The table a `TRUNCATE [TABLE] [db.]name` statement empties.
pub(super) fn truncated_table(sql: &str) -> Option<QualifiedName> {
    let sql = &without_comments(sql);
    let rest = strip_word(sql, "TRUNCATE")?;
    let rest = strip_word(rest, "TABLE").unwrap_or(rest);
    Some(qualified(rest)?.0)
}

/// `ALTER [ONLINE] [IGNORE] TABLE [IF EXISTS] t clause, clause…`: the table and its
/// clauses, split at commas outside quotes (backslash escapes included) and parentheses.
fn alter_table(sql: &str) -> Option<(QualifiedName, Vec<&str>)> {
    let rest = strip_word(sql, "ALTER")?;
    let rest = strip_word(rest, "ONLINE").unwrap_or(rest);
    let rest = strip_word(rest, "IGNORE").unwrap_or(rest);
    let rest = strip_word(rest, "TABLE")?;
    let rest = if_exists(rest);
    let (table, rest) = qualified(rest)?;
    let mut clauses = Vec::new();
    let (mut depth, mut quote, mut escaped, mut start) = (0i32, None::<char>, false, 0);
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            _ if escaped => escaped = false,
            (Some('\'' | '"'), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '`' | '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                clauses.push(&rest[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    clauses.push(&rest[start..]);
    Some((table, clauses))
}

/// The statement without its comments (`/* … */`, `-- …`, `# …`), quoted text kept as it
/// is. An executable comment (`/*! … */`, `/*M! … */`, with or without a version) keeps its
/// text, as the server runs it.
fn without_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quote = None::<char>;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' && q != '`' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '`' | '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let executable = match chars.peek() {
                    Some('!') => {
                        chars.next();
                        true
                    }
                    Some('M') => {
                        let mut ahead = chars.clone();
                        ahead.next();
                        if ahead.peek() == Some(&'!') {
                            chars.next();
                            chars.next();
                            true
                        } else {
                            false
                        }
                    }
                    _ => false,
                };
                if executable {
                    while chars.peek().is_some_and(char::is_ascii_digit) {
                        chars.next();
                    }
                }
                let mut body = String::new();
                while let Some(c) = chars.next() {
                    if c == '*' && chars.peek() == Some(&'/') {
                        chars.next();
                        break;
                    }
                    body.push(c);
                }
                out.push(' ');
                if executable {
                    out.push_str(&without_comments(&body));
                    out.push(' ');
                }
            }
            '-' if chars.peek() == Some(&'-') && {
                let mut ahead = chars.clone();
                ahead.next();
                ahead.peek().is_none_or(|c| c.is_whitespace())
            } =>
            {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            c => out.push(c),
        }
    }
    out
}

/// A savepoint statement inside a transaction's group, or its end by `ROLLBACK`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Savepoint {
    /// `SAVEPOINT name`.
    Set(String),
    /// `ROLLBACK [WORK] TO [SAVEPOINT] name`.
    RollbackTo(String),
    /// `ROLLBACK [WORK]`: the whole transaction is taken back.
    Rollback,
}

/// What a statement inside a transaction's group does to it, if it is one of these.
pub(super) fn savepoint_statement(sql: &str) -> Option<Savepoint> {
    let sql = without_comments(sql);
    let sql = sql.trim().trim_end_matches(';').trim_end();
    let word = |r: &str| format!("{r} ");
    if let Some(r) = strip_word(&word(sql), "SAVEPOINT") {
        return ident(r.trim_start()).map(|(n, _)| Savepoint::Set(n));
    }
    let r = strip_word(&word(sql), "ROLLBACK").map(str::to_string)?;
    let r = strip_word(&r, "WORK").map(str::to_string).unwrap_or(r);
    if r.trim().is_empty() {
        return Some(Savepoint::Rollback);
    }
    let r = strip_word(&r, "TO")?;
    let r = strip_word(r, "SAVEPOINT").unwrap_or(r);
    ident(r.trim_start()).map(|(n, _)| Savepoint::RollbackTo(n))
}

/// The tables a data-changing statement written as text (a statement-format binlog event,
/// which carries no row images) may change: `INSERT`/`REPLACE … [INTO] t`, `LOAD DATA …
/// INTO TABLE t`, and for `UPDATE` and `DELETE` every name before `SET` / `WHERE` (a
/// multi-table one names there all it may change, and some it only reads: those are taken
/// too, since a table stopped by mistake is named and can be copied again, where a change
/// missed is silent). `None`: not such a statement.
pub(super) fn written_tables(sql: &str) -> Option<Vec<QualifiedName>> {
    let sql = without_comments(sql);
    let s = sql.trim_start();
    let (verb, rest) = ident(s)?;
    let verb = verb.to_ascii_uppercase();
    match verb.as_str() {
        "INSERT" | "REPLACE" => {
            let mut r = rest;
            let words = ["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"];
            while let Some(next) = words.iter().find_map(|w| strip_word(r, w)) {
                r = next;
            }
            qualified(r).map(|(n, _)| vec![n])
        }
        "LOAD" => {
            let upper = rest.to_ascii_uppercase();
            let at = upper.find(" INTO TABLE ")?;
            qualified(&rest[at + " INTO TABLE ".len()..]).map(|(n, _)| vec![n])
        }
        "UPDATE" => Some(names_until(rest, &["SET"])),
        "DELETE" => Some(names_until(rest, &["WHERE", "ORDER", "LIMIT", "RETURNING"])),
        _ => None,
    }
}

/// Every table-like name in `s` up to the first of the `stop` words outside quotes: names
/// joined by commas and JOINs, keywords, aliases after `AS` and `ON` conditions skipped.
fn names_until(s: &str, stop: &[&str]) -> Vec<QualifiedName> {
    const KEYWORDS: &[&str] = &[
        "LOW_PRIORITY",
        "QUICK",
        "IGNORE",
        "FROM",
        "USING",
        "JOIN",
        "INNER",
        "LEFT",
        "RIGHT",
        "OUTER",
        "CROSS",
        "NATURAL",
        "STRAIGHT_JOIN",
        "USE",
        "FORCE",
        "INDEX",
        "KEY",
        "FOR",
    ];
    let mut names = Vec::new();
    let mut r = s;
    let mut in_condition = false;
    loop {
        r = r.trim_start_matches(|c: char| {
            c.is_whitespace() || c == ',' || c == '(' || c == ')' || c == '*'
        });
        if r.is_empty() {
            break;
        }
        // A quoted string or number in a condition: past it.
        if let Some(q) = r.strip_prefix('\'').or_else(|| r.strip_prefix('"')) {
            let quote = r.as_bytes()[0] as char;
            r = q.find(quote).map_or("", |i| &q[i + 1..]);
            continue;
        }
        let Some((name, after)) = qualified(r) else {
            // An operator or other punctuation.
            let n = r.chars().next().map_or(1, char::len_utf8);
            r = &r[n..];
            continue;
        };
        let word = name.1.to_ascii_uppercase();
        if name.0.is_none() && stop.contains(&word.as_str()) {
            break;
        }
        if name.0.is_none() && word == "ON" {
            in_condition = true;
        } else if name.0.is_none() && (word == "JOIN" || word == "STRAIGHT_JOIN") {
            in_condition = false;
        } else if name.0.is_none() && word == "AS" {
            // The alias that follows.
            r = qualified(after).map_or(after, |(_, a)| a);
            continue;
        } else {
            let keyword = name.0.is_none() && KEYWORDS.contains(&word.as_str());
            if !in_condition && !keyword {
                names.push(name);
            }
        }
        r = after;
    }
    names
}

/// A table's name, `name` or `db.name` (each bare or backquoted, spaces around the dot
/// allowed), and what follows it.
fn qualified(s: &str) -> Option<(QualifiedName, &str)> {
    let (first, rest) = ident(s.trim_start())?;
    match rest.trim_start().strip_prefix('.') {
        Some(r) => {
            let (second, rest) = ident(r.trim_start())?;
            Some(((Some(first), second), rest))
        }
        None => Some(((None, first), rest)),
    }
}

/// `s` past an `IF EXISTS` it starts with.
fn if_exists(s: &str) -> &str {
    strip_word(s, "IF")
        .and_then(|r| strip_word(r, "EXISTS"))
        .unwrap_or(s)
}

/// What follows `word` (any case) at the start of `s` (leading whitespace skipped), when a
/// whitespace follows it.
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let s = s.trim_start();
    // `get`: a byte count may fall inside a character of a non-ASCII name.
    s.get(..word.len())
        .filter(|head| head.eq_ignore_ascii_case(word))
        .and_then(|_| s.get(word.len()..))
        .filter(|r| r.starts_with(|c: char| c.is_whitespace()))
}

/// An identifier, backquoted or bare, and what follows it.
fn ident(s: &str) -> Option<(String, &str)> {
    if let Some(r) = s.strip_prefix('`') {
        let mut out = String::new();
        let mut chars = r.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '`' {
                if r[i + 1..].starts_with('`') {
                    out.push('`');
                    chars.next();
                } else {
                    return Some((out, &r[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_string(), &s[end..]))
    }
}

#[cfg(test)]
mod tests;
