//! The map in `src/lib.rs` stays true: every top-level module may only use modules of
//! lower layers (or of its own layer, without a cycle), so that each layer can be read
//! and tested without the ones above it.
//!
//! Dependencies are read from the source: every `crate::MODULE` path outside comments
//! and outside `#[cfg(test)] mod` blocks (tests may reach across layers to build what
//! they test). A crude reader, on purpose: no parser to keep up to date; string and
//! character literals are blanked first, so that neither a brace nor a `crate::` in
//! one misleads it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, bottom first. A module not listed here fails the test: place it.
const LAYERS: [(&str, &[&str]); 5] = [
    (
        "foundations",
        &[
            "clock",
            "secret",
            "log_throttle",
            "metrics",
            "logging",
            "request_id",
        ],
    ),
    ("settings", &["access", "configuration"]),
    // WeChat's side of the protocol, the sandbox, is a crate of its own (sandbox/).
    ("WeChat protocol", &["wechat"]),
    ("credential cache", &["cache"]),
    (
        "HTTP",
        &[
            "error",
            "limits",
            "routes",
            "access_log",
            "shutdown",
            "startup",
        ],
    ),
];

/// The source of a file without comments, string and character literals, and its
/// `#[cfg(test)] mod ... { }` blocks (found by counting braces, which the literals no
/// longer hide).
fn code_of(source: &str) -> String {
    let mut code = code_only(source);
    while let Some(start) = test_module_start(&code) {
        let open = start + code[start..].find('{').unwrap_or(code.len() - start);
        let mut depth = 0usize;
        let mut end = code.len();
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        code.replace_range(start..end, "");
    }
    code
}

/// `source` without its comments and with its string literals (plain and raw) and
/// character literals emptied, read in one pass, since each can hide the others'
/// markers (`"https://..."` is no comment, `// don't` opens no literal). Lifetimes
/// (`'a`) are told from characters by the closing quote.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let raw_hashes = (c == 'r' && !at(i.wrapping_sub(1)).is_some_and(is_ident))
            .then(|| chars[i + 1..].iter().take_while(|h| **h == '#').count())
            .filter(|&n| at(i + 1 + n) == Some('"'));
        if c == '/' && at(i + 1) == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && at(i + 1) == Some('/')) {
                i += 1;
            }
            i += 2;
        } else if let Some(hashes) = raw_hashes {
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            i += 2 + hashes;
            while i < chars.len() && !chars[i..].starts_with(&closing) {
                i += 1;
            }
            i += closing.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && at(i + 1) == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && at(i + 2) == Some('\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where the first `#[cfg(test)]` that introduces a module starts.
fn test_module_start(code: &str) -> Option<usize> {
    code.match_indices("#[cfg(test)]").find_map(|(at, marker)| {
        let rest = code[at + marker.len()..].trim_start();
        rest.starts_with("mod ").then_some(at)
    })
}

/// The top-level modules `code` names as `crate::MODULE`.
fn uses(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .map(|(at, _)| {
            code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|module| !module.is_empty())
        .collect()
}

/// Every top-level module of `src/` and the modules it uses.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src/");
            let first = relative.components().next().expect("a path");
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("read a source file");
            let used = uses(&code_of(&source));
            let entry = graph.entry(module.clone()).or_default();
            entry.extend(used.into_iter().filter(|m| *m != module));
        }
    }
    graph
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

#[test]
fn every_module_uses_only_lower_layers_and_no_cycle_comes_back() {
    let graph = dependencies();
    let mut problems = Vec::new();
    for (module, used) in &graph {
        let Some(layer) = layer_of(module) else {
            problems.push(format!(
                "`{module}` is in no layer: add it to LAYERS (and lib.rs's map)"
            ));
            continue;
        };
        for other in used {
            match layer_of(other) {
                Some(other_layer) if other_layer > layer => problems.push(format!(
                    "`{module}` ({}) uses `{other}` ({}), a layer above it",
                    LAYERS[layer].0, LAYERS[other_layer].0
                )),
                _ => {}
            }
        }
    }
    // Within a layer modules may use each other, but not in a circle.
    for start in graph.keys() {
        let mut path = vec![start.clone()];
        if let Some(cycle) = find_cycle(&graph, start, &mut path) {
            problems.push(format!("a cycle: {}", cycle.join(" -> ")));
            break;
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// A path from `path`'s last module back to `start`, if there is one.
fn find_cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let last = path.last().cloned().unwrap_or_default();
    for next in graph.get(&last).into_iter().flatten() {
        if next == start {
            let mut cycle = path.clone();
            cycle.push(start.to_string());
            return Some(cycle);
        }
        if path.contains(next) {
            continue;
        }
        path.push(next.clone());
        if let Some(cycle) = find_cycle(graph, start, path) {
            return Some(cycle);
        }
        path.pop();
    }
    None
}

#[test]
fn the_reader_sees_uses_and_ignores_comments_and_tests() {
    let source = "use crate::cache::X;\n// crate::routes, don't\nfn f() { crate::clock::now_ms(); }\n\
                  /* crate::limits */ fn url() -> &'static str { \"https://a/}\" }\n\
                  #[cfg(test)]\nmod tests { use crate::startup; fn g() { let _ = ('}', \"}\"); } }\n\
                  fn after() { crate::metrics::init(); let _ = r#\"crate::error\"#; }";
    let used = uses(&code_of(source));
    assert_eq!(
        used,
        ["cache", "clock", "metrics"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
