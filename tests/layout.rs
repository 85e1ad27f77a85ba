//! The layout's bounds, checked on the source itself: no file over 1,000
//! lines; the wire protocol (`src/api/`) imports nothing of the server,
//! the agent or the CLI, and the agent nothing of the server or the CLI;
//! no import circle between files other than a module and its own
//! ancestors or descendants.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path (`["server", "service", "tasks"]`) and its file.
type Modules = BTreeMap<Vec<String>, PathBuf>;

/// The tree checked: this crate's `src/`, or `LOTE_LAYOUT_SRC` (to see
/// the checks fail on a tree that breaks them, e.g. an older commit's).
fn src() -> PathBuf {
    match std::env::var_os("LOTE_LAYOUT_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every module with its file. The CLI (`cli/`) belongs to the binary but
/// names its siblings with `super::` only, so it is checked here too;
/// `main.rs` is the binary's root and imports everything.
fn modules() -> Modules {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut out = Modules::new();
    for file in files {
        let rel = file.strip_prefix(&root).unwrap().with_extension("");
        let mut parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts == ["main"] {
            continue;
        }
        if parts == ["lib"] || parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        out.insert(parts, file);
    }
    out
}

/// The text without comments and string literals, so that words in them
/// are not taken for paths.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        let after_word = prev.is_ascii_alphanumeric() || prev == '_';
        prev = c;
        match c {
            // A raw string: r"..." or r#"..."#.
            'r' if !after_word && matches!(chars.peek(), Some('#') | Some('"')) => {
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.peek() != Some(&'"') {
                    out.push('r');
                    continue;
                }
                chars.next();
                let closing: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut body = String::new();
                for c in chars.by_ref() {
                    body.push(c);
                    if body.ends_with(&closing) {
                        break;
                    }
                }
                out.push_str("\"\"");
                out.extend(body.chars().filter(|c| *c == '\n'));
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            // A char literal ('"', '\'', 'x'); a lifetime has no closing quote.
            '\'' => {
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next()) {
                    (Some('\\'), _) => {
                        chars.next();
                        chars.next();
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// The module paths a file names: `crate::a::b`, `super::c`, and the
/// items of `crate::a::{b, c}`.
fn named_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let rest = &code[at + start.len()..];
            let path_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..path_len].trim_end_matches(':');
            // `super` is the parent module, for `a/b.rs` and `a/b/mod.rs` alike.
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            };
            base.extend(path.split("::").filter(|s| !s.is_empty()).map(String::from));
            out.push(base.clone());
            if rest[path_len..].starts_with('{') {
                let group = &rest[path_len + 1..];
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let first = item.trim().split("::").next().unwrap_or("").trim();
                    if !first.is_empty() && first != "self" && first != "*" {
                        let mut p = base.clone();
                        p.push(first.to_string());
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

/// The module a path lands in: its longest prefix that is a module.
fn resolve<'a>(modules: &'a Modules, path: &[String]) -> Option<&'a Vec<String>> {
    (1..=path.len())
        .rev()
        .find_map(|k| modules.get_key_value(&path[..k]).map(|(m, _)| m))
}

fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[test]
fn no_source_file_is_over_a_thousand_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > 1000).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "{long:?}");
}

#[test]
fn the_wire_and_the_node_import_nothing_of_the_control_plane() {
    let rules: [(&str, &[&str]); 2] = [
        ("api", &["crate::server", "crate::agent", "crate::cli"]),
        ("agent", &["crate::server", "crate::cli"]),
    ];
    let mut broken = Vec::new();
    for (folder, banned) in rules {
        let mut files = Vec::new();
        rust_files(&src().join(folder), &mut files);
        assert!(!files.is_empty(), "src/{folder} has no files");
        for file in files {
            let code = code_of(&std::fs::read_to_string(&file).unwrap());
            for b in banned {
                // `crate::cli` but not `crate::client`.
                let uses = code.match_indices(b).any(|(at, _)| {
                    !code[at + b.len()..]
                        .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                });
                if uses {
                    broken.push(format!("{} uses {b}", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{broken:?}");
}

#[test]
fn no_import_circles_between_files() {
    let modules = modules();
    let mut edges: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere.
        let text = match text.find("#[cfg(test)]\nmod tests {") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        let own = edges.entry(module).or_default();
        for path in named_paths(module, &code_of(text)) {
            if let Some(target) = resolve(&modules, &path) {
                if !related(module, target) {
                    own.insert(target);
                }
            }
        }
    }
    // A circle is a module reachable from itself.
    let mut circles = Vec::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&Vec<String>> = edges[start].iter().copied().collect();
        while let Some(m) = stack.pop() {
            if m == *start {
                circles.push(start.join("::"));
                break;
            }
            if seen.insert(m) {
                stack.extend(edges.get(m).into_iter().flatten().copied());
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules in an import circle: {circles:?}"
    );
    // The check sees imports at all (a parser that saw none would pass).
    let api = vec!["api".to_string(), "call".to_string()];
    assert!(!edges[&api].is_empty(), "no import found in api/call.rs");
}

/// The design card's supervisors are actors that talk by messages: each
/// supervisor's file defines an actix actor fed by placement's `Feed`
/// messages, and no supervisor holds another (an `Rc<Placement>`, a
/// borrowed scheduler) to read its state behind its mailbox.
#[test]
fn supervisors_are_actors_that_share_no_state() {
    let dir = src().join("server/supervisors");
    let read = |file: &str| {
        let path = dir.join(file);
        code_of(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
    };
    let placement = read("placement.rs");
    assert!(
        placement.contains("impl Actor for Placement"),
        "placement is not an actor"
    );
    let mut wrong = Vec::new();
    for (file, actor) in [
        ("sagas/mod.rs", "SagaSupervisor"),
        ("autoscale.rs", "Autoscaler"),
        ("liveness.rs", "Liveness"),
        ("waits.rs", "WaitRecorder"),
    ] {
        let code = read(file);
        if !code.contains(&format!("impl Actor for {actor}")) {
            wrong.push(format!("{file}: {actor} is not an actix actor"));
        }
        if !code.contains(&format!("impl Handler<Feed> for {actor}")) {
            wrong.push(format!("{file}: {actor} does not take placement's feed"));
        }
    }
    let mut files = Vec::new();
    rust_files(&src().join("server"), &mut files);
    for path in files {
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        for shared in [
            "Rc<Placement>",
            "Rc<Autoscaler>",
            "Rc<Liveness>",
            ".scheduler()",
        ] {
            if code.contains(shared) {
                wrong.push(format!("{}: holds {shared}", path.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
