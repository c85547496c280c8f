//! The code's layout rules, checked on the sources themselves:
//! - no import loop between files of `src/` or of `actors/src/`;
//! - no file under `src/http/` over 600 lines;
//! - the use-case layer (`src/gateway/`) knows nothing of HTTP.
//!
//! A file depends on another when it names a module or an item of it (`use` lines and
//! paths in code, `crate::`, `super::` and `self::` forms). A module's own children are
//! its parts, not its dependencies: `mod.rs` re-exporting or using what its children
//! define is no loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `root`, by module path (`["http", "instances"]`).
fn modules(root: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read source dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            let Some(name) = path.file_stem().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if path.is_dir() {
                let mut next = prefix.to_vec();
                next.push(name);
                walk(&path, &next, out);
            } else if path.extension().is_some_and(|e| e == "rs") && name != "main" {
                let mut module = prefix.to_vec();
                if !matches!(name.as_str(), "mod" | "lib" | "main") {
                    module.push(name);
                }
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &[], &mut out);
    out
}

/// The code of a file without comments and string literals' contents, so that paths in
/// docs or messages do not count.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut in_string = false;
        let mut prev = ' ';
        for c in line.chars() {
            if c == '"' && prev != '\\' {
                in_string = !in_string;
                out.push(c);
            } else if !in_string {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The module paths a file names: `crate::a::b`, `super::x`, `self::y` and the
/// brace groups of `use` lines.
fn named_paths(code: &str, module: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    // `super` of `a/b.rs` (module a::b) is `a`; of `a/mod.rs` (module a) it is the
    // parent of `a`. `self` is the module itself.
    let base_self: Vec<String> = module.to_vec();
    let base_super: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let _ = is_mod_file;
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 7)].iter().collect();
        let boundary = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        let start = if boundary && rest.starts_with("crate::") {
            Some((Vec::new(), 7))
        } else if boundary && rest.starts_with("super::") {
            Some((base_super.clone(), 7))
        } else if boundary && rest.starts_with("self::") {
            Some((base_self.clone(), 6))
        } else {
            None
        };
        let Some((base, skip)) = start else {
            i += 1;
            continue;
        };
        i += skip;
        let (paths, next) = parse_tree(&chars, i, base);
        out.extend(paths);
        i = next.max(i + 1);
    }
    out
}

/// Parses `a::b::{c, d::e}` (or a bare `{c, d::e}`) from `i`, returning every full path
/// and where it ended.
fn parse_tree(chars: &[char], mut i: usize, base: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let mut path = base;
    if chars.get(i) == Some(&'{') {
        return parse_group(chars, i + 1, path);
    }
    loop {
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        if i > start {
            let seg: String = chars[start..i].iter().collect();
            if seg == "super" {
                path.pop();
            } else if seg != "self" {
                path.push(seg);
            }
        }
        if i + 1 < chars.len() && chars[i] == ':' && chars[i + 1] == ':' {
            i += 2;
            if i < chars.len() && chars[i] == '{' {
                return parse_group(chars, i + 1, path);
            }
            continue;
        }
        return (vec![path], i);
    }
}

/// Parses the inside of `{c, d::e}` under `path` from `i` (just after the brace).
fn parse_group(chars: &[char], mut i: usize, path: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let mut all = Vec::new();
    loop {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() || chars[i] == '}' {
            return (all, i + 1);
        }
        let (paths, next) = parse_tree(chars, i, path.clone());
        all.extend(paths);
        i = next;
        // Skip `as alias`, then the comma.
        while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
            i += 1;
        }
        if i < chars.len() && chars[i] == ',' {
            i += 1;
        }
    }
}

/// The file-level dependency graph of one crate.
fn graph(root: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mods = modules(root);
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, path) in &mods {
        let text = std::fs::read_to_string(path).expect("read source");
        let is_mod_file = path.file_name().is_some_and(|n| n == "mod.rs");
        let deps = edges.entry(module.clone()).or_default();
        for named in named_paths(&code_of(&text), module, is_mod_file) {
            // The longest prefix that is a file module.
            let Some(target) = (0..=named.len())
                .rev()
                .map(|n| named[..n].to_vec())
                .find(|m| mods.contains_key(m))
            else {
                continue;
            };
            let own_part = target.len() > module.len() && target.starts_with(module);
            if target != *module && !own_part {
                deps.insert(target);
            }
        }
    }
    edges
}

/// The loops of a graph, each as the modules in one strongly connected component.
fn loops(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    // Kosaraju: order by finish time, then walk the reversed graph.
    fn visit<'a>(
        n: &'a Vec<String>,
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        seen: &mut BTreeSet<&'a Vec<String>>,
        order: &mut Vec<&'a Vec<String>>,
    ) {
        if !seen.insert(n) {
            return;
        }
        for m in edges.get(n).into_iter().flatten() {
            visit(m, edges, seen, order);
        }
        order.push(n);
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for n in edges.keys() {
        visit(n, edges, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = BTreeMap::new();
    for (from, tos) in edges {
        for to in tos {
            reversed.entry(to).or_default().push(from);
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for n in order.into_iter().rev() {
        if assigned.contains(n) {
            continue;
        }
        let mut component = Vec::new();
        let mut stack = vec![n];
        while let Some(m) = stack.pop() {
            if !assigned.insert(m) {
                continue;
            }
            component.push(m.join("::"));
            stack.extend(reversed.get(m).into_iter().flatten().copied());
        }
        if component.len() > 1 {
            component.sort();
            out.push(component);
        }
    }
    out
}

/// The graph between the crate's top-level modules: a file of one naming anything of
/// another is an edge. Re-exports cannot hide a loop here.
fn top_level(
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut out: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, tos) in edges {
        let Some(from_top) = from.first() else {
            continue;
        };
        let deps = out.entry(vec![from_top.clone()]).or_default();
        for to in tos {
            if let Some(to_top) = to.first()
                && to_top != from_top
            {
                deps.insert(vec![to_top.clone()]);
            }
        }
    }
    out
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_import_loops_between_files() {
    for root in ["src", "actors/src"] {
        let files = graph(&manifest_dir().join(root));
        let found = loops(&files);
        assert!(
            found.is_empty(),
            "import loops between files of {root}/: {found:#?}"
        );
        let found = loops(&top_level(&files));
        assert!(
            found.is_empty(),
            "import loops between modules of {root}/: {found:#?}"
        );
    }
}

#[test]
fn the_loop_check_finds_a_loop() {
    // Two sibling files naming each other, and a third outside the loop.
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).expect("write");
    };
    write("lib.rs", "mod a;\nmod b;\nmod c;\n");
    write("a.rs", "use crate::b::B;\npub struct A;\n");
    write("b.rs", "use super::{a::A, c};\npub struct B;\n");
    write(
        "c.rs",
        "// crate::a::A in a comment is no dependency\npub struct C;\n",
    );
    let found = loops(&graph(dir.path()));
    assert_eq!(found, vec![vec!["a".to_owned(), "b".to_owned()]]);
}

#[test]
fn http_files_stay_small() {
    let limit = 600;
    for (module, path) in modules(&manifest_dir().join("src/http")) {
        let lines = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count();
        assert!(
            lines <= limit,
            "src/http/{} has {lines} lines (limit {limit}); split it by concern",
            module.join("/")
        );
    }
}

#[test]
fn the_use_case_layer_knows_no_http() {
    let dir = manifest_dir().join("src/gateway");
    for (_, path) in modules(&dir) {
        let code = code_of(&std::fs::read_to_string(&path).expect("read"));
        for forbidden in ["axum", "ApiError", "crate::http", "StatusCode"] {
            assert!(
                !code.contains(forbidden),
                "{} names {forbidden}: use cases return their own errors",
                path.display()
            );
        }
    }
}
