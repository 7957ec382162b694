//! The book (`docs/`) against the code, without a database:
//! - the type-mapping table of `docs/src/type-mapping.md`, row by row, against the mapping
//!   the code applies (`map_column`, then `pg_type`);
//! - every relative link in `docs/src` (and in `README.md`) points at a file that exists, and
//!   every `#anchor` at a heading of that file (mdBook's heading ids).

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use sluice::model::{Column, Kind};
use sluice::sink::postgres::types::pg_type;
use sluice::source::mysql::introspect::{map_column, ColumnInfo, MapOptions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The type-mapping table
// ---------------------------------------------------------------------------------------------

const TABLE_HEADER: &str = "| MySQL / MariaDB | PostgreSQL | notes |";

/// The rows of the book's type-mapping table: (line number, MySQL cell, PostgreSQL cell).
fn mapping_rows(text: &str) -> Vec<(usize, String, String)> {
    let mut lines = text.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, l)| l.trim() == TABLE_HEADER)
        .unwrap_or_else(|| panic!("docs/src/type-mapping.md has no table headed {TABLE_HEADER}"));
    let (_, rule) = lines.next().expect("the table's header rule");
    assert!(rule.starts_with("|---"), "the table's second line: {rule}");
    lines
        .take_while(|(_, l)| l.trim_start().starts_with('|'))
        .map(|(i, l)| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            assert!(cells.len() >= 2, "line {}: {l}", i + 1);
            (i + 1, cells[0].to_string(), cells[1].to_string())
        })
        .collect()
}

/// Splits on `sep` outside parentheses.
fn split_top(s: &str, sep: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut i) = (0i32, 0, 0);
    let b = s.as_bytes();
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ if depth == 0 && s[i..].starts_with(sep) => {
                out.push(s[start..i].trim().to_string());
                i += sep.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(s[start..].trim().to_string());
    out
}

/// One MySQL type of the table's first column, as `information_schema.COLUMNS` describes a
/// column of that type, with the options it is mapped under; the parameters (`n`, `p`, `s`)
/// given values.
struct Case {
    written: String,
    info: ColumnInfo,
    opts: MapOptions,
    /// Parameter values, to put into the PostgreSQL side.
    params: Vec<(&'static str, u64)>,
}

/// The display width MariaDB gives an integer type in `COLUMN_TYPE` when none is written.
fn int_width(name: &str, unsigned: bool) -> Option<u64> {
    let (signed, uns) = match name {
        "tinyint" => (4, 3),
        "smallint" => (6, 5),
        "mediumint" => (9, 8),
        "int" | "integer" => (11, 10),
        "bigint" => (20, 20),
        _ => return None,
    };
    Some(if unsigned { uns } else { signed })
}

/// The cases one MySQL type as written in the table stands for.
fn cases(item: &str) -> Vec<Case> {
    let mut opts = MapOptions::default();
    let mut rest = item.trim();
    if let Some(r) = rest.strip_suffix("with `tinyint1_as_boolean = false`") {
        opts.tinyint1_as_boolean = false;
        rest = r.trim();
    }
    let mut json_check = false;
    if let Some(at) = rest.find(" CHECK (json_valid(") {
        json_check = true;
        rest = rest[..at].trim();
    }
    let mut unsigned = false;
    if let Some(r) = rest.strip_suffix(" UNSIGNED") {
        unsigned = true;
        rest = r.trim();
    }
    let (name, args) = match rest.find('(') {
        Some(open) => {
            assert!(rest.ends_with(')'), "type {item:?}: cannot read {rest:?}");
            (&rest[..open], Some(&rest[open + 1..rest.len() - 1]))
        }
        None => (rest, None),
    };
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
        "type {item:?}: cannot read the type name {name:?}"
    );
    let mut name = name.to_ascii_lowercase();
    let mut args = args.map(str::to_string);
    if name == "bool" || name == "boolean" {
        name = "tinyint".into();
        args = Some("1".into());
    }
    // Parameter sets: `n` and `(p,s)` take several values, a literal stays as written.
    let param_sets: Vec<Vec<(&'static str, u64)>> = match args.as_deref() {
        None => vec![vec![]],
        Some("n") => [1, 3, 6].iter().map(|&n| vec![("n", n)]).collect(),
        Some("p,s") => [(1, 0), (10, 2), (65, 30)]
            .iter()
            .map(|&(p, s)| vec![("p", p), ("s", s)])
            .collect(),
        Some(lit) if lit.split(',').all(|a| a.trim().parse::<u64>().is_ok()) => vec![vec![]],
        Some(other) => panic!("type {item:?}: unknown parameters ({other})"),
    };
    param_sets
        .into_iter()
        .map(|params| {
            let get = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
            let lits: Vec<u64> = match args.as_deref() {
                Some(a) if params.is_empty() => {
                    a.split(',').map(|x| x.trim().parse().unwrap()).collect()
                }
                _ => Vec::new(),
            };
            let n = get("n").or(lits.first().copied());
            let column_type = {
                let base = match (&args, int_width(&name, unsigned)) {
                    (None, Some(w)) => format!("{name}({w})"),
                    (None, None) if name == "enum" || name == "set" => format!("{name}('a','b')"),
                    (None, None) => name.clone(),
                    (Some(_), _) if get("p").is_some() => {
                        format!("{name}({},{})", get("p").unwrap(), get("s").unwrap())
                    }
                    (Some(_), _) => {
                        format!("{name}({})", n.map_or(String::new(), |n| n.to_string()))
                    }
                };
                if unsigned {
                    format!("{base} unsigned")
                } else {
                    base
                }
            };
            let temporal = matches!(name.as_str(), "datetime" | "timestamp" | "time");
            let info = ColumnInfo {
                name: "c".into(),
                data_type: name.clone(),
                column_type,
                nullable: false,
                numeric_precision: match name.as_str() {
                    "decimal" | "numeric" => get("p"),
                    "bit" => n,
                    _ => None,
                },
                numeric_scale: get("s"),
                datetime_precision: if temporal { Some(n.unwrap_or(0)) } else { None },
                json_check,
                default: None,
            };
            Case {
                written: item.to_string(),
                info,
                opts,
                params,
            }
        })
        .collect()
}

/// The PostgreSQL type as the table writes it, parameters put in, in `format_type`'s words.
fn expected_pg(written: &str, params: &[(&'static str, u64)]) -> String {
    let mut t = written.trim().to_string();
    for (k, v) in params {
        // Only parameters inside parentheses: `(n)`, `(p,s)`.
        if let Some(open) = t.find('(') {
            let close = t[open..].find(')').map(|c| open + c).unwrap_or(t.len());
            let inner: Vec<String> = t[open + 1..close]
                .split(',')
                .map(|a| {
                    if a.trim() == *k {
                        v.to_string()
                    } else {
                        a.trim().to_string()
                    }
                })
                .collect();
            t = format!("{}({}){}", &t[..open], inner.join(","), &t[close + 1..]);
        }
    }
    if let Some(r) = t.strip_prefix("timestamptz") {
        format!("timestamp{r} with time zone")
    } else if t.starts_with("timestamp(") && !t.contains(" time zone") {
        format!("{t} without time zone")
    } else {
        t
    }
}

/// A name for each kind of the model, so the table must show every one (a new kind fails to
/// compile here until it is named, and then fails the test until the book maps it).
fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Bool => "Bool".into(),
        Kind::Int { bytes } => format!("Int{bytes}"),
        Kind::UInt { bytes } => format!("UInt{bytes}"),
        Kind::Float32 => "Float32".into(),
        Kind::Float64 => "Float64".into(),
        Kind::Decimal { .. } => "Decimal".into(),
        Kind::Text => "Text".into(),
        Kind::Json => "Json".into(),
        Kind::Enum => "Enum".into(),
        Kind::Set => "Set".into(),
        Kind::Bytes => "Bytes".into(),
        Kind::Date => "Date".into(),
        Kind::DateTime { .. } => "DateTime".into(),
        Kind::Timestamp { .. } => "Timestamp".into(),
        Kind::Time { .. } => "Time".into(),
        Kind::Year => "Year".into(),
        Kind::Bits(_) => "Bits".into(),
    }
}

/// Checks the table in `text`; returns the problems found, one line each.
fn check_type_mapping(text: &str) -> Vec<String> {
    let rows = mapping_rows(text);
    assert!(
        rows.len() >= 10,
        "the type-mapping table has {} rows",
        rows.len()
    );
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (line, mysql, pg) in rows {
        let left = split_top(&mysql, " / ");
        let right = split_top(&pg, " / ");
        if right.len() != 1 && right.len() != left.len() {
            problems.push(format!(
                "line {line}: {} groups of MySQL types but {} PostgreSQL types",
                left.len(),
                right.len()
            ));
            continue;
        }
        for (g, group) in left.iter().enumerate() {
            let want = if right.len() == 1 {
                &right[0]
            } else {
                &right[g]
            };
            for item in split_top(group, ", ") {
                for case in cases(&item) {
                    let got = map_column("t", &case.info, case.opts);
                    let what = format!(
                        "line {line}: {} (COLUMN_TYPE {:?}{})",
                        case.written,
                        case.info.column_type,
                        if case.params.is_empty() {
                            String::new()
                        } else {
                            format!(", {:?}", case.params)
                        }
                    );
                    match (want.as_str(), got) {
                        ("refused", Err(_)) => {}
                        ("refused", Ok(k)) => problems.push(format!(
                            "{what}: the book says refused, the code maps it to {k:?}"
                        )),
                        (_, Err(e)) => problems.push(format!(
                            "{what}: the book says {want}, the code refuses it: {e}"
                        )),
                        (_, Ok(kind)) => {
                            seen.insert(kind_name(&kind));
                            let col = Column::new("c", &case.info.column_type, kind);
                            let code = pg_type(&col);
                            let book = expected_pg(want, &case.params);
                            if code != book {
                                problems.push(format!(
                                    "{what}: the book says {want} ({book}), the code gives {code}"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    let every: BTreeSet<String> = [
        Kind::Bool,
        Kind::Int { bytes: 1 },
        Kind::Int { bytes: 2 },
        Kind::Int { bytes: 3 },
        Kind::Int { bytes: 4 },
        Kind::Int { bytes: 8 },
        Kind::UInt { bytes: 1 },
        Kind::UInt { bytes: 2 },
        Kind::UInt { bytes: 3 },
        Kind::UInt { bytes: 4 },
        Kind::UInt { bytes: 8 },
        Kind::Float32,
        Kind::Float64,
        Kind::Decimal {
            precision: 10,
            scale: 2,
        },
        Kind::Text,
        Kind::Json,
        Kind::Enum,
        Kind::Set,
        Kind::Bytes,
        Kind::Date,
        Kind::DateTime { fsp: 6 },
        Kind::Timestamp { fsp: 6 },
        Kind::Time { fsp: 6 },
        Kind::Year,
        Kind::Bits(1),
    ]
    .iter()
    .map(kind_name)
    .collect();
    for missing in every.difference(&seen) {
        problems.push(format!(
            "no row of the table maps to the model's kind {missing}"
        ));
    }
    problems
}

#[test]
fn the_type_mapping_table_is_the_codes_mapping() {
    let text = read(&root().join("docs/src/type-mapping.md"));
    let problems = check_type_mapping(&text);
    assert!(
        problems.is_empty(),
        "docs/src/type-mapping.md disagrees with the code:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_wrong_row_of_the_type_mapping_table_is_found() {
    let text = read(&root().join("docs/src/type-mapping.md"));
    for (from, to) in [
        ("/ bigint / numeric(20,0) |", "/ bigint / bigint |"),
        (
            "| FLOAT / DOUBLE | real / double precision |",
            "| FLOAT / DOUBLE | double precision / real |",
        ),
        (
            "| TIMESTAMP(n) | timestamptz(n) |",
            "| TIMESTAMP(n) | timestamp(n) |",
        ),
        ("| YEAR | smallint |", "| YEAR | integer |"),
    ] {
        assert!(
            text.contains(from),
            "the table no longer holds {from:?}: update this test"
        );
        let problems = check_type_mapping(&text.replacen(from, to, 1));
        assert!(!problems.is_empty(), "a table with {to:?} passed");
    }
}

// ---------------------------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------------------------

/// Markdown text without fenced code blocks and inline code spans.
fn without_code(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if fenced {
            out.push('\n');
            continue;
        }
        let mut in_code = false;
        for ch in line.chars() {
            if ch == '`' {
                in_code = !in_code;
            } else if !in_code {
                out.push(ch);
            }
        }
        out.push('\n');
    }
    out
}

/// mdBook's heading id (`id_from_content` in mdbook-html): lowercase, alphanumerics, `_` and
/// `-` kept, whitespace made `-`, anything else dropped; a repeated id gets `-1`, `-2`, ….
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The text a heading shows: links reduced to their text, code marks and emphasis dropped.
fn heading_text(raw: &str) -> String {
    let mut s = String::new();
    let mut rest = raw;
    while let Some(open) = rest.find('[') {
        s.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(close), Some(end)) if close < end => {
                s.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            _ => {
                s.push('[');
                rest = after;
            }
        }
    }
    s.push_str(rest);
    s.replace(['`', '*'], "")
}

/// The ids of a Markdown file's headings.
fn anchors(text: &str) -> HashSet<String> {
    let mut used = HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let id = slug(&heading_text(title));
        if !used.insert(id.clone()) {
            let mut n = 1;
            while !used.insert(format!("{id}-{n}")) {
                n += 1;
            }
        }
    }
    used
}

/// `](target)` links of a Markdown text, outside code.
fn links(text: &str) -> Vec<String> {
    let text = without_code(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        out.push(after[..end].trim().to_string());
        rest = &after[end.min(after.len())..];
    }
    out
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            markdown_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

#[test]
fn every_link_in_the_book_and_the_readme_leads_somewhere() {
    let mut files = Vec::new();
    markdown_files(&root().join("docs/src"), &mut files);
    assert!(files.len() > 10, "docs/src holds {} pages", files.len());
    files.push(root().join("README.md"));
    let mut broken = Vec::new();
    for file in &files {
        let text = read(file);
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match link.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let name = format!("{}: ({link})", file.strip_prefix(root()).unwrap().display());
            if !target.exists() {
                broken.push(format!("{name}: no file {}", target.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                if target.extension().is_none_or(|e| e != "md") {
                    broken.push(format!(
                        "{name}: an anchor into a file that is not Markdown"
                    ));
                } else if !anchors(&read(&target)).contains(anchor) {
                    broken.push(format!("{name}: no heading with the id #{anchor}"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_page_is_in_the_summary() {
    let src = root().join("docs/src");
    let summary = read(&src.join("SUMMARY.md"));
    let listed: HashSet<PathBuf> = links(&summary).iter().map(|l| src.join(l)).collect();
    let mut files = Vec::new();
    markdown_files(&src, &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "SUMMARY.md") && !listed.contains(*f))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "pages not in docs/src/SUMMARY.md: {missing:?}"
    );
}

#[test]
fn heading_ids_follow_mdbook() {
    assert_eq!(
        slug(&heading_text("`verify [--table T] [--repair] [--json]`")),
        "verify---table-t---repair---json"
    );
    assert_eq!(
        slug(&heading_text("Continuous verification (`[verify]`)")),
        "continuous-verification-verify"
    );
    assert_eq!(
        slug(&heading_text("Initial load, key deferred")),
        "initial-load-key-deferred"
    );
    let ids = anchors("# A\n## B b\n## B b\n```\n# not a heading\n```\n");
    assert!(ids.contains("b-b") && ids.contains("b-b-1") && !ids.contains("not-a-heading"));
}
