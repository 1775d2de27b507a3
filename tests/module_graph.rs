//! The crate's module graph has no knot: no two top-level modules of `src/` reach each
//! other through `crate::` paths, and no two files of `src/layer/` do. A cycle is how the
//! old eleven-module knot grew (each import harmless alone); this fails on the first one
//! and names it. Test code (`mod tests`, `tests.rs`, `simulation/`) is left out: a test
//! may reach anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without comments and without its `#[cfg(test)] mod tests` (which
/// this crate always puts last).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("a source file is readable");
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn is_test_file(rel: &Path) -> bool {
    rel.components().any(|c| c.as_os_str() == "simulation")
        || rel.file_name().is_some_and(|f| f == "tests.rs")
}

/// Every `<prefix>name` in `code`, where `name` is an identifier; a grouped
/// `<prefix>{a, b::c}` names `a` and `b`.
fn named_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        // Not the tail of a longer path (`foo::crate::` does not occur; `self::super::`
        // would, and means the same).
        rest = &rest[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The first cycle in `graph`, as the path around it.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut around = path[at..].to_vec();
            around.push(node.to_owned());
            return Some(around);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, done, path) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level modules of the library (the binary is a client of it, not a module).
fn top_level_graph() -> Graph {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    for path in files {
        let rel = path.strip_prefix(&src).expect("under src/");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a file name");
        if first == "bin" || first == "lib.rs" || is_test_file(rel) {
            continue;
        }
        let module = first.trim_end_matches(".rs").to_owned();
        let edges = graph.entry(module.clone()).or_default();
        for name in named_after(&code(&path), "crate::") {
            if name != module {
                edges.insert(name);
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    // (Names that are items re-exported at the root, not modules, are no edges.)
    for edges in graph.values_mut() {
        edges.retain(|name| modules.contains(name));
    }
    graph
}

/// The files of `src/layer/`, each a node.
fn layer_graph() -> Graph {
    let dir = src().join("layer");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let names: BTreeSet<String> = files
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_owned))
        .filter(|n| n != "mod")
        .collect();
    let mut graph = Graph::new();
    for path in &files {
        let Some(module) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if module == "mod" {
            continue;
        }
        let code = code(path);
        let mut edges: BTreeSet<String> = named_after(&code, "super::");
        edges.extend(named_after(&code, "crate::layer::"));
        edges.retain(|n| names.contains(n) && n != module);
        graph.insert(module.to_owned(), edges);
    }
    graph
}

#[test]
fn no_two_top_level_modules_reach_each_other() {
    let graph = top_level_graph();
    // The graph was read: the checker's edges to the judge and the layer's shared view exist.
    let checker = &graph["checker"];
    assert!(
        checker.contains("judge") && checker.contains("layer"),
        "{graph:#?}"
    );
    assert_eq!(cycle(&graph), None, "a knot in the module graph");
}

/// The shell (the checker, the monitor, reloads, sources, files, the runtime helpers,
/// emitting), the tasks (usage, instance slots, the ledger) and the faces (the layer,
/// `/health`, the metrics, OpenTelemetry, statistics): what pure code must not reach.
const IMPURE: &[&str] = &[
    "checker",
    "monitor",
    "reload",
    "source",
    "files",
    "runtime",
    "emit",
    "usage",
    "instances",
    "ledger",
    "layer",
    "health",
    "metrics",
    "otel",
    "answer",
    "stats",
    "sync",
    "link",
];

/// Every module `from` reaches, itself excluded.
fn reach(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(node) = todo.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    seen.remove(from);
    seen
}

#[test]
fn the_judge_and_the_token_code_reach_nothing_impure_not_even_through_another_module() {
    // `.ci/imports` checks their own imports; this checks what those import in turn (the
    // state file's format once read its file through the license source's helpers).
    let graph = top_level_graph();
    for pure in ["judge", "token", "verdict", "state", "event", "clock"] {
        let reached = reach(&graph, pure);
        let impure: Vec<_> = reached
            .iter()
            .filter(|m| IMPURE.contains(&m.as_str()))
            .collect();
        assert!(
            impure.is_empty(),
            "{pure} reaches {impure:?} (all: {reached:?})"
        );
    }
    assert!(reach(&graph, "judge").contains("state"));
}

#[test]
fn no_two_files_of_the_layer_reach_each_other() {
    let graph = layer_graph();
    assert!(graph["service"].contains("future"), "{graph:#?}");
    assert_eq!(cycle(&graph), None, "a knot inside src/layer/");
}

#[test]
fn the_cycle_finder_finds_a_knot() {
    let mut graph = Graph::new();
    graph.insert("a".into(), ["b".to_owned()].into());
    graph.insert("b".into(), ["c".to_owned()].into());
    graph.insert("c".into(), ["a".to_owned()].into());
    graph.insert("d".into(), ["a".to_owned()].into());
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&graph), None);
    assert_eq!(
        named_after("use crate::{a::X, b};\nlet x = crate::c::f();", "crate::"),
        ["a", "b", "c"].map(str::to_owned).into()
    );
}
