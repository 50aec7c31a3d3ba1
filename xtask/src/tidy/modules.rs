//! The module structure inside each crate: no import cycle between sibling modules at any
//! level of any crate, and in `crates/extbackup` the layers of docs/ARCHITECTURE.md with
//! imports pointing down only ([`LAYERS`], the one place the allowed direction is written).
//!
//! Imports are read from the source text: every `crate::…`, `super::…` and `self::…` path
//! (use trees with braces included), up to the first `#[cfg(test)]` of a file; test files
//! (`tests.rs`, `*_tests.rs`) are left out, as unit tests may reach across layers to build
//! what they test. Comments are not imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers of `crates/extbackup/src`, bottom first: each top-level module (a file or a
/// folder) and the top-level modules it may import. A module not listed is an error, so a
/// new folder gets its place here and in docs/ARCHITECTURE.md. `commands` (and `main`) are
/// the binary's; they reach the library as `extbackup::…`.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("fmt", &[]),
    ("config", &["error", "fmt"]),
    ("drive", &["error", "fmt", "config"]),
    ("run", &["error", "fmt", "config", "drive"]),
    ("system", &["error", "fmt", "config"]),
    (
        "commands",
        &["error", "fmt", "config", "drive", "run", "system"],
    ),
    (
        "main",
        &[
            "error", "fmt", "config", "drive", "run", "system", "commands",
        ],
    ),
    ("lib", &["error", "fmt", "config", "drive", "run", "system"]),
];

/// One import found in a file: the module path it points to (from the crate root) and
/// where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// The module path of the importing file (`["run", "pipeline"]`).
    pub from: Vec<String>,
    /// The path imported, from the crate root (`["drive", "state", "RunRecord"]`).
    pub to: Vec<String>,
    /// `path:line`.
    pub at: String,
}

/// The Rust files below `dir`, sorted (the one walker of tidy).
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Whether a file holds only tests (`tests.rs`, `*_tests.rs`).
pub fn is_test_file(p: &Path) -> bool {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs")
}

/// The code of a file that ships: up to its first `#[cfg(test)]`, comments blanked (lines
/// kept, so line numbers stay right).
pub fn shipped_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of `file` below `src` (`run/pipeline/mod.rs` -> `["run", "pipeline"]`;
/// `lib.rs`, `main.rs` -> `[]`).
pub fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if !(stem == "mod" || (parts.is_empty() && (stem == "lib" || stem == "main"))) {
            parts.push(stem);
        }
    }
    parts
}

/// Every `crate::`/`super::`/`self::` path in `code` (and `extern_root::…` when given: the
/// binary's imports of its library), resolved to paths from the crate root. `from` is the
/// module path of the file, `at` its name for messages.
pub fn imports(code: &str, from: &[String], extern_root: Option<&str>, at: &str) -> Vec<Import> {
    let ext = extern_root.map(|e| format!("{e}::"));
    let bytes = code.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let word_start = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        let mut base: Vec<String> = from.to_vec();
        let mut j = i;
        if !word_start {
            i += 1;
            continue;
        } else if let Some(e) = ext.as_deref().filter(|e| rest.starts_with(e)) {
            base.clear();
            j += e.len();
        } else if rest.starts_with("crate::") {
            base.clear();
            j += "crate::".len();
        } else if rest.starts_with("super::") || rest.starts_with("self::") {
            loop {
                if code[j..].starts_with("super::") {
                    base.pop();
                    j += "super::".len();
                } else if code[j..].starts_with("self::") {
                    j += "self::".len();
                } else {
                    break;
                }
            }
        } else {
            i += 1;
            continue;
        }
        let line = code[..i].matches('\n').count() + 1;
        let (paths, end) = use_tree(code, j);
        for p in paths {
            let mut to = base.clone();
            to.extend(p);
            out.push(Import {
                from: from.to_vec(),
                to,
                at: format!("{at}:{line}"),
            });
        }
        i = end.max(i + 1);
    }
    out
}

/// Parses a use tree at `i` (`a::b::{c, d::{e}}`): the paths it names (segments; `self`
/// and `*` dropped) and where it ends.
fn use_tree(code: &str, mut i: usize) -> (Vec<Vec<String>>, usize) {
    let bytes = code.as_bytes();
    let mut prefix = vec![];
    loop {
        let s = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > s {
            prefix.push(code[s..i].to_string());
        }
        let group = if code[i..].starts_with("::{") {
            Some(3)
        } else if prefix.is_empty() && code[i..].starts_with('{') {
            Some(1)
        } else {
            None
        };
        if let Some(skip) = group {
            i += skip;
            let mut all = vec![];
            loop {
                while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    i += 1;
                    break;
                }
                let (sub, end) = use_tree(code, i);
                for p in sub {
                    let mut full = prefix.clone();
                    full.extend(p.into_iter().filter(|s| s != "self"));
                    all.push(full);
                }
                i = end;
                // skip `as name`, spaces and the comma
                while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'}' {
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b',' {
                    i += 1;
                }
            }
            return (all, i);
        }
        if code[i..].starts_with("::")
            && code[i + 2..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
        {
            i += 2;
            continue;
        }
        return (vec![prefix], i);
    }
}

/// Every import of the shipped code of the crate whose sources are in `src`. `lib_name`
/// is the library's name as the binary writes it (`extbackup`), for crates with both;
/// places are named relative to `shown_from` (the repository root).
pub fn crate_imports(src: &Path, lib_name: Option<&str>, shown_from: &Path) -> Vec<Import> {
    let mut out = vec![];
    let bin_root = src.join("main.rs").exists() && src.join("lib.rs").exists();
    let bin_mods = if bin_root {
        bin_modules(src)
    } else {
        BTreeSet::new()
    };
    for f in rust_files(src) {
        if is_test_file(&f) || f.starts_with(src.join("bin")) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let code = shipped_code(&text);
        let from = module_path(src, &f);
        let is_bin = from.first().is_some_and(|m| bin_mods.contains(m)) || f == src.join("main.rs");
        let ext = if is_bin { lib_name } else { None };
        let from_named = if f == src.join("main.rs") {
            vec!["main".to_string()]
        } else if f == src.join("lib.rs") {
            vec!["lib".to_string()]
        } else {
            from.clone()
        };
        let at = f
            .strip_prefix(shown_from)
            .unwrap_or(&f)
            .display()
            .to_string();
        let mut found = imports(&code, &from, ext, &at);
        for imp in &mut found {
            imp.from = from_named.clone();
        }
        out.extend(found);
    }
    out
}

/// The top-level modules `main.rs` declares (the binary's own, beside the library's).
fn bin_modules(src: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(src.join("main.rs")).unwrap_or_default();
    shipped_code(&text)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

/// The import cycles between sibling modules, at every level: for each cycle, its modules
/// (paths) and the imports that close it.
pub fn cycles(src: &Path, imports: &[Import]) -> Vec<(Vec<String>, Vec<String>)> {
    // The modules that exist: every file's module path and its ancestors.
    let mut exists: BTreeSet<Vec<String>> = BTreeSet::new();
    for f in rust_files(src) {
        let mut p = module_path(src, &f);
        while !p.is_empty() {
            exists.insert(p.clone());
            p.pop();
        }
    }
    // Edges between siblings: the first point where the importer's and the imported path
    // part, when both sides still name a module there.
    let mut edges: BTreeMap<Vec<String>, BTreeMap<String, BTreeMap<String, String>>> =
        BTreeMap::new();
    for imp in imports {
        let from = if imp.from == ["main"] || imp.from == ["lib"] {
            continue;
        } else {
            &imp.from
        };
        let common = from.iter().zip(&imp.to).take_while(|(a, b)| a == b).count();
        if common >= from.len() || common >= imp.to.len() {
            continue; // a child or the module itself
        }
        let parent = from[..common].to_vec();
        let mut target = parent.clone();
        target.push(imp.to[common].clone());
        if !exists.contains(&target) {
            continue; // an item of the parent, not a sibling module
        }
        edges
            .entry(parent)
            .or_default()
            .entry(from[common].clone())
            .or_default()
            .entry(imp.to[common].clone())
            .or_insert_with(|| imp.at.clone());
    }
    let mut out = vec![];
    for (parent, graph) in &edges {
        for comp in strongly_connected(graph) {
            let name = |m: &str| {
                let mut p = parent.clone();
                p.push(m.to_string());
                p.join("::")
            };
            let mut why = vec![];
            for a in &comp {
                for (b, at) in graph.get(a).into_iter().flatten() {
                    if comp.contains(b) {
                        why.push(format!("{at}: {} imports {}", name(a), name(b)));
                    }
                }
            }
            out.push((comp.iter().map(|m| name(m)).collect(), why));
        }
    }
    out
}

/// Tarjan's strongly connected components with more than one member.
fn strongly_connected(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct St<'g> {
        g: &'g BTreeMap<String, BTreeMap<String, String>>,
        idx: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        n: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut St<'g>, v: &'g str) {
        s.idx.insert(v, s.n);
        s.low.insert(v, s.n);
        s.n += 1;
        s.stack.push(v);
        s.on.insert(v);
        let g = s.g;
        for w in g.get(v).into_iter().flat_map(|m| m.keys()) {
            let w = w.as_str();
            if !s.idx.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.idx[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.idx[v] {
            let mut comp = vec![];
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        g: graph,
        idx: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        n: 0,
        out: vec![],
    };
    let nodes: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(a, m)| std::iter::once(a.as_str()).chain(m.keys().map(String::as_str)))
        .collect();
    for v in nodes {
        if !s.idx.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The imports of `crates/extbackup/src` that point up or sideways in [`LAYERS`], and the
/// top-level modules that have no layer.
pub fn layer_violations(src: &Path, imports: &[Import]) -> Vec<String> {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut problems = vec![];
    let mut tops: BTreeSet<String> = BTreeSet::new();
    for f in rust_files(src) {
        match module_path(src, &f).first() {
            Some(t) => {
                tops.insert(t.clone());
            }
            None => {
                tops.insert(
                    f.file_stem()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    for t in &tops {
        if !layers.contains_key(t.as_str()) {
            problems.push(format!(
                "crates/extbackup/src/{t} has no layer: add it to LAYERS in xtask/src/tidy/modules.rs and to docs/ARCHITECTURE.md"
            ));
        }
    }
    for imp in imports {
        let (Some(from), Some(to)) = (imp.from.first(), imp.to.first()) else {
            continue;
        };
        if from == to || !tops.contains(to) {
            continue;
        }
        let allowed = layers.get(from.as_str()).copied().unwrap_or(&[]);
        if !allowed.contains(&to.as_str()) {
            problems.push(format!(
                "{}: `{}` imports `{}`: the layer `{from}` may use only {}",
                imp.at,
                imp.from.join("::"),
                imp.to.join("::"),
                if allowed.is_empty() {
                    "nothing of this crate".to_string()
                } else {
                    allowed.join(", ")
                }
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn use_trees_resolve_from_the_crate_root() {
        let code = "use crate::{config, drive::{state::{self, RunRecord}, layout}};\n\
                    use super::host::Host;\nlet x = crate::fmt::human(1);\nfoo::crate::x;\n";
        let got: Vec<Vec<String>> = imports(code, &v(&["run", "pipeline"]), None, "f")
            .into_iter()
            .map(|i| i.to)
            .collect();
        assert_eq!(
            got,
            vec![
                v(&["config"]),
                v(&["drive", "state"]),
                v(&["drive", "state", "RunRecord"]),
                v(&["drive", "layout"]),
                v(&["run", "host", "Host"]),
                v(&["fmt", "human"]),
            ]
        );
        let bin = imports(
            "use extbackup::run::backends;\n",
            &v(&["commands"]),
            Some("extbackup"),
            "f",
        );
        assert_eq!(bin[0].to, v(&["run", "backends"]));
        assert_eq!(bin[0].at, "f:1");
    }

    #[test]
    fn module_paths_follow_files_and_mod_rs() {
        let src = Path::new("/s");
        assert_eq!(
            module_path(src, Path::new("/s/run/pipeline/mod.rs")),
            v(&["run", "pipeline"])
        );
        assert_eq!(
            module_path(src, Path::new("/s/run/host.rs")),
            v(&["run", "host"])
        );
        assert!(module_path(src, Path::new("/s/lib.rs")).is_empty());
    }

    /// A crate tree in a temporary folder: (path, text) pairs.
    fn tree(files: &[(&str, &str)]) -> tempfile_dir::Dir {
        let d = tempfile_dir::Dir::new();
        for (p, t) in files {
            let p = d.0.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        }
        d
    }

    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "tidy-modules-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn cycles_are_found_at_every_level_and_named_with_their_imports() {
        let d = tree(&[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            ("a.rs", "use crate::b::X;\n"),
            ("b.rs", "use crate::a::Y;\n#[cfg(test)]\nuse crate::c::Z;\n"),
            ("c/mod.rs", "mod d;\nmod e;\nuse crate::a;\n"),
            ("c/d.rs", "use super::e::Q;\n"),
            ("c/e.rs", "// use super::d;\nuse crate::c::d::R;\n"),
            ("c/tests.rs", "use crate::b;\n"),
        ]);
        let src = &d.0;
        let found = cycles(src, &crate_imports(src, None, src));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, v(&["a", "b"]));
        assert!(
            found[0]
                .1
                .iter()
                .any(|w| w.starts_with("a.rs:1: a imports b")),
            "{found:?}"
        );
        assert_eq!(found[1].0, v(&["c::d", "c::e"]));
        assert!(
            found[1]
                .1
                .iter()
                .any(|w| w.starts_with("c/e.rs:2: c::e imports c::d")),
            "{found:?}"
        );
    }

    #[test]
    fn an_import_up_the_layers_is_named() {
        let d = tree(&[
            ("lib.rs", "pub mod fmt;\npub mod drive;\npub mod run;\n"),
            ("main.rs", "mod commands;\nuse extbackup::run::x;\n"),
            ("fmt.rs", "pub fn human() {}\n"),
            ("drive/mod.rs", "pub mod state;\n"),
            (
                "drive/state.rs",
                "use crate::fmt::human;\nuse crate::run::pipeline::Step;\n",
            ),
            ("run/mod.rs", "use crate::drive::state;\n"),
            (
                "commands/mod.rs",
                "use extbackup::drive::state;\nuse crate::commands::x;\n",
            ),
            ("extra.rs", "\n"),
        ]);
        let src = &d.0;
        let problems = layer_violations(src, &crate_imports(src, Some("extbackup"), src));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("extra has no layer"), "{problems:?}");
        assert!(
            problems[1]
                .starts_with("drive/state.rs:2: `drive::state` imports `run::pipeline::Step`"),
            "{problems:?}"
        );
    }
}
