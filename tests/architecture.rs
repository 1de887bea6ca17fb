//! docs/architecture.md's module table stays true: its imports column is what the code imports
//! (tests aside), and no module imports one that imports it back. Reads the sources only: no
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

/// The crate's modules `text` names: `crate::x`, and `use crate::{x, y}`.
fn imports(text: &str, into: &mut BTreeSet<String>) {
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .collect(),
            None => vec![rest],
        };
        for n in names {
            let id: String = n
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !id.is_empty() {
                into.insert(id);
            }
        }
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

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let code = code_imports();
    let mut cycles = Vec::new();
    for (a, imports) in &code {
        for b in imports {
            if code.get(b).is_some_and(|i| i.contains(a)) && a < b {
                cycles.push(format!("{a} <-> {b}"));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles: {}", cycles.join(", "));
}
