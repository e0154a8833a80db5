//! The layering rule, checked over the sources: no module imports a module
//! that imports it, directly or through others. A name is followed through
//! the `pub use` re-exports of the module it is taken from to the file
//! that defines it, so `use super::TagStore` in `store/dir.rs` counts as an
//! import of `store/tag_state.rs`. Every `crate::`, `super::` and `self::`
//! path in the code counts, in `use` lines and in expressions; tests inside
//! a file (`#[cfg(test)] mod tests`) do not.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module path from the crate root: `["store", "dir"]`.
type ModPath = Vec<String>;

struct Module {
    file: PathBuf,
    /// The code, without comments, strings and its test module.
    code: String,
    /// Names this module re-exports: name → the path it comes from.
    reexports: BTreeMap<String, ModPath>,
    /// Child modules it declares.
    children: BTreeSet<String>,
}

fn strip_comments_and_strings(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A raw string: r"..." or r#"..."#.
            b'r' if (bytes.get(i + 1) == Some(&b'"') || bytes.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) =>
            {
                let mut hashes = 0;
                let mut j = i + 1;
                while bytes.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if bytes.get(j) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let closing: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                j += 1;
                while j < bytes.len() && !bytes[j..].starts_with(&closing) {
                    j += 1;
                }
                i = j + closing.len();
                out.push_str("\"\"");
            }
            // A char literal (not a lifetime): 'x' or '\n'.
            b'\''
                if bytes.get(i + 2) == Some(&b'\'')
                    || (bytes.get(i + 1) == Some(&b'\\') && bytes[i + 2..].contains(&b'\'')) =>
            {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            byte => {
                out.push(byte as char);
                i += 1;
            }
        }
    }
    out
}

/// The code before the file's test module.
fn without_tests(code: &str) -> &str {
    match code.find("#[cfg(test)]\nmod tests") {
        Some(at) => &code[..at],
        None => code,
    }
}

fn module_path(root: &Path, file: &Path) -> ModPath {
    let relative = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "lib.rs" | "main.rs" | "mod.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// Every `use` tree in `code`, flattened to full paths (`super::a::B`),
/// with whether it is a `pub use`.
fn use_trees(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let before = rest[..at].trim_end();
        let public = before.ends_with("pub") || before.ends_with(')');
        let after = &rest[at + 3..];
        let Some(end) = after.find(';') else { break };
        let tree: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        flatten("", &tree, &mut |path| out.push((public, path)));
        rest = &after[end..];
    }
    out
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(word) {
        let at = from + found;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if boundary(before) && after.is_some_and(char::is_whitespace) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn flatten(prefix: &str, tree: &str, emit: &mut impl FnMut(String)) {
    let join = |p: &str, s: &str| {
        if p.is_empty() {
            s.to_string()
        } else {
            format!("{p}::{s}")
        }
    };
    match tree.find('{') {
        None => {
            let path = tree.split(" as ").next().unwrap_or(tree);
            let path = path.split("as").next().unwrap_or(path);
            if !path.is_empty() {
                emit(join(prefix, path.trim_end_matches("::")));
            }
        }
        Some(open) => {
            let head = tree[..open].trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        flatten(&join(prefix, head), &inner[start..i], emit);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            flatten(&join(prefix, head), &inner[start..], emit);
        }
    }
}

/// Paths written in expressions and types: `crate::a::b`, `super::x`.
fn inline_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(start) {
            let at = from + found;
            let before = code[..at].chars().next_back();
            from = at + start.len();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.trim_end_matches(':').to_string());
        }
    }
    out
}

/// A written path made absolute from module `here`.
fn absolute(here: &ModPath, is_mod_file: bool, path: &str) -> Option<ModPath> {
    let mut segments = path.split("::").filter(|s| !s.is_empty());
    let first = segments.next()?;
    // `super` in `a/b.rs` (module a::b) is a; in `a/mod.rs` (module a) too
    // is its parent.
    let mut base: ModPath = here.clone();
    match first {
        "crate" => base.clear(),
        "self" => {}
        "super" => {
            base.pop();
        }
        _ => return None,
    }
    let _ = is_mod_file;
    for segment in segments {
        match segment {
            "super" => {
                base.pop();
            }
            "self" | "*" => {}
            name => base.push(name.to_string()),
        }
    }
    Some(base)
}

/// The file module that defines what `path` names: the longest prefix that
/// is a module, then through its re-exports.
fn defining_module(modules: &BTreeMap<ModPath, Module>, path: &ModPath, depth: u32) -> ModPath {
    let mut module: ModPath = Vec::new();
    for (i, segment) in path.iter().enumerate() {
        let mut candidate = module.clone();
        candidate.push(segment.clone());
        if modules.contains_key(&candidate) {
            module = candidate;
            continue;
        }
        if depth < 8 {
            if let Some(target) = modules.get(&module).and_then(|m| m.reexports.get(segment)) {
                let mut next = target.clone();
                next.extend(path[i + 1..].iter().cloned());
                return defining_module(modules, &next, depth + 1);
            }
        }
        break;
    }
    module
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each file module of the crate under `root`, and the modules it imports.
fn imports(root: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut modules: BTreeMap<ModPath, Module> = BTreeMap::new();
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let code = without_tests(&strip_comments_and_strings(&text)).to_string();
        let here = module_path(root, &file);
        let mod_file = file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let mut reexports = BTreeMap::new();
        for (public, tree) in use_trees(&code) {
            let written = if tree.starts_with("crate")
                || tree.starts_with("super")
                || tree.starts_with("self")
            {
                tree.clone()
            } else {
                // `pub use child::Name` names a child module.
                format!("self::{tree}")
            };
            if public {
                if let Some(path) = absolute(&here, mod_file, &written) {
                    if let Some(name) = path.last() {
                        reexports.insert(name.clone(), path.clone());
                    }
                }
            }
        }
        let children = code
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let l = l.strip_prefix("pub ").unwrap_or(l);
                let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
                l.strip_prefix("mod ")?
                    .strip_suffix(';')
                    .map(str::to_string)
            })
            .collect();
        modules.insert(
            here,
            Module {
                file,
                code,
                reexports,
                children,
            },
        );
    }
    let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (here, module) in &modules {
        let mod_file = module
            .file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let mut written: Vec<String> = use_trees(&module.code)
            .into_iter()
            .filter(|(public, _)| !public)
            .map(|(_, path)| {
                if path.starts_with("crate")
                    || path.starts_with("super")
                    || path.starts_with("self")
                {
                    path
                } else if module
                    .children
                    .contains(path.split("::").next().unwrap_or(""))
                {
                    format!("self::{path}")
                } else {
                    String::new()
                }
            })
            .collect();
        written.extend(inline_paths(&module.code));
        let edges = graph.entry(here.clone()).or_default();
        for path in written.iter().filter(|p| !p.is_empty()) {
            let Some(absolute) = absolute(here, mod_file, path) else {
                continue;
            };
            let target = defining_module(&modules, &absolute, 0);
            if target != *here {
                edges.insert(target);
            }
        }
    }
    graph
}

/// Loops of imports: each as the list of modules in it.
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    // Tarjan's strongly connected components.
    struct State<'g> {
        graph: &'g BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'g ModPath, usize>,
        low: BTreeMap<&'g ModPath, usize>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        next: usize,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g ModPath) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.out
}

fn describe(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>, cycle: &[ModPath]) -> String {
    let name = |m: &ModPath| format!("crate::{}", m.join("::"));
    let mut lines = Vec::new();
    for a in cycle {
        for b in graph[a].iter().filter(|b| cycle.contains(b)) {
            lines.push(format!("  {} -> {}", name(a), name(b)));
        }
    }
    lines.join("\n")
}

fn assert_no_cycles(root: &Path) {
    let graph = imports(root);
    let found = cycles(&graph);
    let report: Vec<String> = found.iter().map(|c| describe(&graph, c)).collect();
    assert!(
        found.is_empty(),
        "modules of {} that import each other:\n{}",
        root.display(),
        report.join("\n\n")
    );
}

#[test]
fn no_module_of_the_program_imports_a_module_that_imports_it() {
    assert_no_cycles(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

#[test]
fn no_module_of_the_test_kit_imports_a_module_that_imports_it() {
    assert_no_cycles(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/testkit/src"));
}

#[test]
fn a_name_is_followed_through_its_reexport_to_the_file_that_defines_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("store")).unwrap();
    fs::write(root.join("lib.rs"), "mod store;\n").unwrap();
    fs::write(
        root.join("store/mod.rs"),
        "mod dir;\nmod state;\npub use dir::Dir;\npub use state::{State, Other as Renamed};\n",
    )
    .unwrap();
    fs::write(
        root.join("store/dir.rs"),
        "use super::State;\npub struct Dir;\n",
    )
    .unwrap();
    fs::write(
        root.join("store/state.rs"),
        "pub struct State;\npub struct Other;\nfn f() { let _ = super::Dir; }\n\
         #[cfg(test)]\nmod tests { use crate::store::dir::Dir; }\n",
    )
    .unwrap();
    let graph = imports(root);
    let m = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<ModPath>();
    assert!(graph[&m(&["store", "dir"])].contains(&m(&["store", "state"])));
    assert!(graph[&m(&["store", "state"])].contains(&m(&["store", "dir"])));
    assert_eq!(cycles(&graph).len(), 1);
    // Without the expression in state.rs, no loop (its tests do not count).
    fs::write(
        root.join("store/state.rs"),
        "pub struct State;\npub struct Other;\n// super::Dir\nfn f() { let _ = \"super::Dir\"; }\n\
         #[cfg(test)]\nmod tests { use crate::store::dir::Dir; }\n",
    )
    .unwrap();
    assert!(cycles(&imports(root)).is_empty());
}
