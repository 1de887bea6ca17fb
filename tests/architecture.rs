//! docs/architecture.md's module table stays true: its imports column is what the code imports
//! (tests aside), and no module imports one that imports it back, nor any file of a
//! directory module a sibling that imports it back. Reads the sources only: no
//! root, no kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and without the items under `#[cfg(test)]`.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if t == "#[cfg(test)]" {
            // Skip the next item: to its `;` or its closing brace.
            let mut depth = 0i32;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                let lt = l.trim_end();
                if depth <= 0 && (lt.ends_with('}') || lt.ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line.split(" //").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The crate's modules `text` names: `crate::x`, and `use crate::{x, y::{..}}`.
fn imports(text: &str, into: &mut BTreeSet<String>) {
    names_after(text, "crate::", into);
}

/// The first name of every path `text` continues after `prefix` (`prefix::x`, and each
/// member of a group `prefix::{x, y::{..}}`).
fn names_after(text: &str, prefix: &str, into: &mut BTreeSet<String>) {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices(prefix) {
        if text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue; // `super::super::x`, `a_crate::x`: not this prefix
        }
        let rest = &text[i + prefix.len()..];
        let Some(group) = rest.strip_prefix('{') else {
            into.insert(ident(rest));
            continue;
        };
        // The group's top-level members, up to its closing brace.
        let (mut depth, mut start) = (0i32, 0usize);
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    into.insert(ident(&group[start..j]));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    into.insert(ident(&group[start..j]));
                    start = j + 1;
                }
                _ => {}
            }
        }
    }
    for not_a_module in ["", "super", "self"] {
        into.remove(not_a_module);
    }
}

/// Each top-level module's imports (a directory module's files together).
fn code_imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "main" || module == "lib" {
            continue;
        }
        let text = code(&fs::read_to_string(&f).unwrap());
        let set = out.entry(module.clone()).or_default();
        imports(&text, set);
        set.remove(&module);
    }
    out
}

/// The module names in backticks in a table cell (a type named beside one, e.g. "`netlink`
/// (its `PortVlan`)", starts with a capital).
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with(|c: char| c.is_ascii_lowercase()))
        .map(|s| s.trim_end_matches(".rs").to_string())
        .collect()
}

/// The table's rows: the modules of a row, and what the imports column says they import.
fn documented() -> Vec<(Vec<String>, BTreeSet<String>)> {
    let doc = fs::read_to_string(Path::new(ROOT).join("docs/architecture.md")).unwrap();
    let table = doc
        .split("## Modules")
        .nth(1)
        .expect("docs/architecture.md has its Modules section");
    let mut rows = Vec::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let modules = ticked(cells[0]);
        if modules.iter().any(|m| m == "main" || m == "lib") {
            continue; // "everything below"
        }
        let imports = ticked(cells.last().unwrap()).into_iter().collect();
        rows.push((modules, imports));
    }
    rows
}

#[test]
fn the_imports_column_is_what_the_code_imports() {
    let code = code_imports();
    let mut listed = BTreeSet::new();
    let mut wrong = Vec::new();
    for (modules, says) in documented() {
        let mut does = BTreeSet::new();
        for m in &modules {
            let Some(set) = code.get(m) else {
                wrong.push(format!("{m}: listed, but src/ has no such module"));
                continue;
            };
            does.extend(set.iter().cloned());
            listed.insert(m.clone());
        }
        for m in &modules {
            does.remove(m);
        }
        if does != says {
            wrong.push(format!(
                "{}: the table says {says:?}, the code imports {does:?}",
                modules.join(", ")
            ));
        }
    }
    for m in code.keys().filter(|m| !listed.contains(*m)) {
        wrong.push(format!("{m}: not in the table"));
    }
    assert!(
        wrong.is_empty(),
        "docs/architecture.md:\n{}",
        wrong.join("\n")
    );
}

/// Within each directory module, what each file imports of its siblings (`super::x`,
/// `crate::dir::x`); `mod.rs`, the parent, is not one of them.
fn sibling_imports() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(ROOT).join("src");
    let mut out = BTreeMap::new();
    for dir in fs::read_dir(&src).unwrap().flatten().map(|e| e.path()) {
        if !dir.is_dir() {
            continue;
        }
        let parent = dir.file_name().unwrap().to_string_lossy().to_string();
        let stems: BTreeSet<String> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
            .filter(|s| s != "mod")
            .collect();
        let mut graph = BTreeMap::new();
        for stem in &stems {
            let text = code(&fs::read_to_string(dir.join(format!("{stem}.rs"))).unwrap());
            let mut names = BTreeSet::new();
            names_after(&text, "super::", &mut names);
            names_after(&text, &format!("crate::{parent}::"), &mut names);
            names.retain(|n| stems.contains(n) && n != stem);
            graph.insert(stem.clone(), names);
        }
        out.insert(parent, graph);
    }
    out
}

/// A cycle in `graph`, if it has one (as the path that closes it).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_cycle_among_modules_or_among_the_files_of_one() {
    let mut found = Vec::new();
    if let Some(c) = cycle(&code_imports()) {
        found.push(c.join(" -> "));
    }
    for (dir, graph) in sibling_imports() {
        if let Some(c) = cycle(&graph) {
            found.push(format!("{dir}: {}", c.join(" -> ")));
        }
    }
    assert!(found.is_empty(), "import cycles: {}", found.join("; "));
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(cycle(&g(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let mut names = BTreeSet::new();
    names_after(
        "use super::{observed::{A, B}, state::Record};\nuse super::super::x;",
        "super::",
        &mut names,
    );
    assert_eq!(names, ["observed", "state"].map(String::from).into());
}
