//! The house's layers point down: no import circle between modules.
//!
//! Reads `src/` as text and builds, for every folder module (the crate root included), the
//! graph of which of its direct children use which (`crate::…`, `super::…` paths, `use`
//! groups included). A child's use of its own folder's `mod.rs` (the folder's contract) or of
//! its own descendants is not an edge. Each graph must be acyclic: a circle is reported with
//! the files and paths that make it. Needs no server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/a/b.rs` → `["a", "b"]`; `src/a/mod.rs` → `["a"]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text without comments and string literals (so that prose naming a path is no use).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if b[i] == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == '\'' && b.get(i + 2) == Some(&'\'') {
            // A char literal such as '"' (a lifetime has no closing quote there).
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_') {
        i += 1;
    }
    (s[start..i].iter().collect(), i)
}

/// Every path that starts with `crate::` or `super::`, as segments (`crate`/`super` kept),
/// with `use x::{a, b::c}` groups expanded.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let s: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary =
            i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == '_' || s[i - 1] == ':');
        let (word, end) = ident_at(&s, i);
        if word.is_empty() {
            i += 1;
            continue;
        }
        if boundary && (word == "crate" || word == "super") && s.get(end) == Some(&':') {
            let mut found = Vec::new();
            read_path(&s, i, Vec::new(), &mut found);
            out.extend(found);
        }
        i = end;
    }
    out
}

/// Reads the path at `i` (after `prefix`), expanding one `{…}` group level by level.
fn read_path(s: &[char], mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    loop {
        let (word, end) = ident_at(s, i);
        if word.is_empty() {
            break;
        }
        prefix.push(word);
        i = end;
        if s.get(i) == Some(&':') && s.get(i + 1) == Some(&':') {
            i += 2;
            if s.get(i) == Some(&'{') {
                // A group: each element at depth 0 is a path of its own.
                let mut depth = 0;
                let mut j = i + 1;
                let mut start = j;
                while j < s.len() {
                    match s[j] {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            read_path(s, skip_ws(s, start), prefix.clone(), out);
                            return;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            read_path(s, skip_ws(s, start), prefix.clone(), out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                return;
            }
            continue;
        }
        break;
    }
    out.push(prefix);
}

fn skip_ws(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The module a path names: `crate`/`super` resolved from `from`, then the longest prefix
/// that is a module of the crate.
fn resolve(
    path: &[String],
    from: &[String],
    is_dir_module: bool,
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let mut at: Vec<String> = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("super") => {
            // `super` of a file module is its folder; of a folder's mod.rs, the folder's
            // parent.
            at = from.to_vec();
            let _ = is_dir_module;
            while rest.first().map(String::as_str) == Some("super") {
                at.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let mut best = at.clone();
    for seg in rest {
        at.push(seg.clone());
        if modules.contains(&at) {
            best = at.clone();
        } else {
            break;
        }
    }
    Some(best)
}

#[test]
fn no_import_circle_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    // folder → child → (used child → an example "file: path").
    type Graph = BTreeMap<String, BTreeMap<String, String>>;
    let mut graphs: BTreeMap<Vec<String>, Graph> = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        let is_dir_module = f.ends_with("mod.rs") || f.ends_with("lib.rs");
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for path in paths_in(&code) {
            let Some(to) = resolve(&path, &from, is_dir_module, &modules) else {
                continue;
            };
            // Where the two diverge: both strictly below a common folder.
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common >= from.len() || common >= to.len() {
                // One is the other's ancestor (a folder's contract, or its own children).
                continue;
            }
            let folder = from[..common].to_vec();
            let shown = format!(
                "{}: {}",
                f.strip_prefix(&src).unwrap().display(),
                path.join("::")
            );
            graphs
                .entry(folder)
                .or_default()
                .entry(from[common].clone())
                .or_default()
                .entry(to[common].clone())
                .or_insert(shown);
        }
    }
    let mut circles = Vec::new();
    for (folder, graph) in &graphs {
        // Depth-first search for a back edge.
        fn visit(
            n: &str,
            g: &Graph,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
            found: &mut Vec<Vec<String>>,
        ) {
            if let Some(pos) = stack.iter().position(|s| s == n) {
                let mut c = stack[pos..].to_vec();
                c.push(n.to_string());
                found.push(c);
                return;
            }
            if !done.insert(n.to_string()) {
                return;
            }
            stack.push(n.to_string());
            if let Some(next) = g.get(n) {
                for m in next.keys() {
                    visit(m, g, stack, done, found);
                }
            }
            stack.pop();
        }
        let mut done = BTreeSet::new();
        let mut found = Vec::new();
        for n in graph.keys() {
            let mut stack = Vec::new();
            visit(n, graph, &mut stack, &mut done, &mut found);
        }
        for c in found {
            let why: Vec<String> = c
                .windows(2)
                .map(|w| format!("    {} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            circles.push(format!(
                "in `crate{}{}`: {}\n{}",
                if folder.is_empty() { "" } else { "::" },
                folder.join("::"),
                c.join(" -> "),
                why.join("\n")
            ));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between modules (a lower layer must not use a higher one: move the \
         shared item down, or pass it in):\n{}",
        circles.join("\n")
    );
    // The test sees the imports it is about (it would pass on a misread tree otherwise).
    let root = &graphs[&Vec::new()];
    assert!(root["sink"].contains_key("state"), "sink uses state");
    assert!(root["commands"].contains_key("round"), "commands use round");
}

#[test]
fn paths_are_read_from_use_groups_and_code() {
    let code = code_only(
        "use crate::{a::b, c::{d, e::f}};\n// crate::x::y in a comment\nlet s = \"crate::z\";\nsuper::super::g::h();",
    );
    let p: Vec<String> = paths_in(&code).iter().map(|p| p.join("::")).collect();
    assert_eq!(
        p,
        [
            "crate::a::b",
            "crate::c::d",
            "crate::c::e::f",
            "super::super::g::h"
        ]
    );
}
