//! `cargo xtask tidy`: the invariants of docs/ARCHITECTURE.md that a machine can check,
//! checked on every `cargo xtask test` (in the spirit of rust-analyzer's tidy tests).
//!
//! - `blinkstick-hid` depends on nothing in the workspace (other projects reuse it);
//! - only the crates that wrap them name hidapi, rusb, libcryptsetup-rs, lettre and nix
//!   (tests may use them anywhere): the orchestrator reaches the kernel and the hardware
//!   through the trait crates and `oskit`;
//! - no crate declares a dependency it does not use, and every workspace dependency is
//!   used by some crate;
//! - concrete backend types are named only in crates/extbackup/src/run/backends.rs (every
//!   file below crates/extbackup/src is read, folders included);
//! - no import cycle between sibling modules of any crate, and the layers of
//!   crates/extbackup/src import downwards only ([`modules::LAYERS`]);
//! - the code map in docs/ARCHITECTURE.md names every crate, and so does README.md.

mod modules;

use crate::util;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Which crates may depend on each low-level dependency, and why.
const FENCED: &[(&str, &[&str], &str)] = &[
    (
        "hidapi",
        &["blinkstick-hid", "hw-tests"],
        "the BlinkStick driver owns the HID transport",
    ),
    (
        "rusb",
        &["blinkstick-hid", "hw-tests"],
        "the BlinkStick driver owns the USB transport",
    ),
    (
        "libcryptsetup-rs",
        &["crypt"],
        "LUKS is reached only through the Crypt trait",
    ),
    (
        "lettre",
        &["notifier"],
        "mail is sent only through the Notifier trait",
    ),
    (
        "nix",
        &[
            "crypt",
            "mounter",
            "syncer",
            "indicator",
            "oskit",
            "testkit",
            "hw-tests",
        ],
        "system calls live in the backend crates and oskit, not in the orchestrator",
    ),
];

/// One workspace member, from `cargo metadata`.
struct Member {
    name: String,
    dir: PathBuf,
    /// (dependency package name, name used in code, kind: "normal" | "dev" | "build")
    deps: Vec<(String, String, String)>,
}

fn members(root: &Path) -> Result<Vec<Member>> {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut m = vec![];
    for p in v["packages"].as_array().context("packages")? {
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap_or_default());
        let deps = p["dependencies"]
            .as_array()
            .context("dependencies")?
            .iter()
            .map(|d| {
                let name = d["name"].as_str().unwrap_or_default().to_string();
                let ident = d["rename"].as_str().unwrap_or(&name).replace('-', "_");
                let kind = d["kind"].as_str().unwrap_or("normal").to_string();
                (name, ident, kind)
            })
            .collect();
        m.push(Member {
            name: p["name"].as_str().unwrap_or_default().to_string(),
            dir: manifest.parent().unwrap_or(root).to_path_buf(),
            deps,
        });
    }
    Ok(m)
}

/// All the Rust source of a crate (src, tests, examples, benches, build.rs) as one text.
fn source_text(dir: &Path) -> String {
    let mut text = String::new();
    for d in ["src", "tests", "examples", "benches", "build.rs"] {
        for p in modules::rust_files(&dir.join(d)) {
            text.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            text.push('\n');
        }
    }
    text
}

/// Whether `ident` is used as a path in `text` (`ident::`, `use ident`, `extern crate`).
fn uses(text: &str, ident: &str) -> bool {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(ident) {
        let at = from + i;
        let before = at.checked_sub(1).map(|j| bytes[j]);
        let after = &text[at + ident.len()..];
        let starts =
            !matches!(before, Some(b) if b.is_ascii_alphanumeric() || b == b'_' || b == b':');
        if starts
            && (after.starts_with("::") || after.starts_with(';') || after.starts_with(" as "))
        {
            return true;
        }
        if starts && text[..at].ends_with("use ") {
            return true;
        }
        from = at + ident.len();
    }
    false
}

/// Runs every check; fails with all the problems found.
pub fn run() -> Result<()> {
    let root = util::root();
    let members = members(&root)?;
    let names: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let mut problems = vec![];

    // blinkstick-hid stands alone.
    for m in members.iter().filter(|m| m.name == "blinkstick-hid") {
        for (dep, _, kind) in &m.deps {
            if names.contains(dep.as_str()) {
                problems.push(format!(
                    "blinkstick-hid depends on the workspace crate {dep} ({kind}): it must depend on nothing here"
                ));
            }
        }
    }
    // Fenced dependencies.
    for (dep, allowed, why) in FENCED {
        for m in &members {
            // Tests may poke the kernel; the code that ships may not.
            let ships = m.deps.iter().any(|(d, _, k)| d == dep && k != "dev");
            if ships && !allowed.contains(&m.name.as_str()) {
                problems.push(format!(
                    "{} depends on {dep}: only {} may ({why})",
                    m.name,
                    allowed.join(", ")
                ));
            }
        }
    }
    // Unused dependencies.
    let mut used_anywhere = BTreeSet::new();
    for m in &members {
        let text = source_text(&m.dir);
        for (dep, ident, kind) in &m.deps {
            used_anywhere.insert(dep.clone());
            if !uses(&text, ident) {
                problems.push(format!(
                    "{} declares the {kind} dependency {dep} but its code never uses `{ident}`",
                    m.name
                ));
            }
        }
    }
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let table: Value = toml_deps(&manifest);
    for dep in table
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str())
    {
        if !used_anywhere.contains(dep) {
            problems.push(format!(
                "[workspace.dependencies] declares {dep}, which no crate uses: drop it"
            ));
        }
    }
    // Concrete backends are chosen in one place.
    let ext_src = root.join("crates/extbackup/src");
    for (file, line) in concrete_backends_outside_backends_rs(&ext_src) {
        problems.push(format!(
            "{file}:{line} names a concrete backend type: only crates/extbackup/src/{BACKENDS_RS} may (the rest works through the traits)"
        ));
    }
    // Module structure: no cycles in any crate; the orchestrator's layers point down.
    let mut crates_checked = 0;
    for m in &members {
        let src = m.dir.join("src");
        if !src.is_dir() {
            continue;
        }
        crates_checked += 1;
        let lib = m.name.replace('-', "_");
        let imports = modules::crate_imports(&src, Some(&lib), &root);
        for (mods, why) in modules::cycles(&src, &imports) {
            problems.push(format!(
                "{}: import cycle between modules {}: {}",
                m.name,
                mods.join(", "),
                why.join("; ")
            ));
        }
        if src == ext_src {
            problems.extend(modules::layer_violations(&src, &imports));
        }
    }
    // The docs name every crate.
    let arch = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))?;
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    for m in &members {
        let Ok(rel) = m.dir.strip_prefix(&root) else {
            continue;
        };
        let rel = rel.to_string_lossy();
        if !rel.starts_with("crates/") {
            continue;
        }
        if !arch.contains(&format!("### `{rel}`")) {
            problems.push(format!(
                "docs/ARCHITECTURE.md has no code-map section \"### `{rel}`\" for {}",
                m.name
            ));
        }
        if !readme.contains(&format!("`{rel}`")) {
            problems.push(format!("README.md's workspace table does not name `{rel}`"));
        }
    }
    if problems.is_empty() {
        eprintln!(
            "xtask: tidy: {} crates: blinkstick-hid stands alone, fenced dependencies in their crates, concrete backends only in {BACKENDS_RS}, no unused dependencies, no module cycle in {crates_checked} crates, extbackup's layers point down, the docs name every crate",
            members.len()
        );
        return Ok(());
    }
    for p in &problems {
        eprintln!("xtask: tidy: {p}");
    }
    bail!("tidy: {} problem(s) (see above)", problems.len())
}

/// The concrete backend types, which only `run/backends.rs` names (and `run/host.rs`
/// defines `SystemHost`; unit tests may build what they test).
const CONCRETE: &[&str] = &[
    "LibcryptsetupCrypt",
    "LoopbackTestCrypt",
    "NixMounter",
    "RsyncSyncer",
    "CommandSyncer",
    "MailNotifier",
    "SystemHost",
];

/// Where the orchestrator chooses its backends, below crates/extbackup/src.
const BACKENDS_RS: &str = "run/backends.rs";

/// Every line of crates/extbackup/src (all folders) that names a concrete backend type,
/// outside `run/backends.rs`, `run/host.rs` and test code.
fn concrete_backends_outside_backends_rs(src: &Path) -> Vec<(String, usize)> {
    let mut found = vec![];
    for p in modules::rust_files(src) {
        let rel = p
            .strip_prefix(src)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        if [BACKENDS_RS, "run/host.rs"].contains(&rel.as_str()) || modules::is_test_file(&p) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        // Up to the unit tests, which may build what they test.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, l) in code.lines().enumerate() {
            let l = l.trim_start();
            if l.starts_with("//") {
                continue;
            }
            if CONCRETE.iter().any(|c| l.contains(c)) {
                found.push((format!("crates/extbackup/src/{rel}"), i + 1));
            }
        }
    }
    found.sort();
    found
}

/// The keys of `[workspace.dependencies]`, read line by line (no TOML parser in xtask).
fn toml_deps(manifest: &str) -> Value {
    let mut keys = vec![];
    let mut inside = false;
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == "[workspace.dependencies]";
            continue;
        }
        if inside && !t.starts_with('#') {
            if let Some((k, _)) = t.split_once('=') {
                keys.push(Value::String(k.trim().to_string()));
            }
        }
    }
    Value::Array(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_is_a_path_not_a_substring() {
        assert!(uses("use nix::unistd;", "nix"));
        assert!(uses("let x = serde_json::to_string(&v);", "serde_json"));
        assert!(uses("use tempfile;\n", "tempfile"));
        assert!(!uses("let phoenix = 1; // unix::", "nix"));
        assert!(!uses("std::sync::Mutex", "sync"));
        assert!(!uses("a_nix::b", "nix"));
    }

    #[test]
    fn concrete_backends_are_found_outside_backends_rs_only() {
        let dir = std::env::temp_dir().join(format!("tidy-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("run/pipeline")).unwrap();
        std::fs::write(dir.join("run/backends.rs"), "let c = NixMounter::new();\n").unwrap();
        std::fs::write(dir.join("main.rs"), "// NixMounter in a comment\nlet h = SystemHost::new();\n#[cfg(test)]\nmod t { NixMounter }\n").unwrap();
        std::fs::write(
            dir.join("run/pipeline/mod.rs"),
            "\nlet c = RsyncSyncer::new();\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("run/pipeline/tests.rs"),
            "let c = RsyncSyncer::new();\n",
        )
        .unwrap();
        let found = concrete_backends_outside_backends_rs(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            vec![
                ("crates/extbackup/src/main.rs".to_string(), 2),
                ("crates/extbackup/src/run/pipeline/mod.rs".to_string(), 2)
            ]
        );
    }

    #[test]
    fn workspace_dependency_keys_are_read() {
        let m = "[workspace]\nx = 1\n[workspace.dependencies]\n# c\nnix = \"1\"\nfoo-bar = { path = \"x\" }\n[profile.release]\nlto = true\n";
        assert_eq!(
            toml_deps(m),
            Value::Array(vec!["nix".into(), "foo-bar".into()])
        );
    }
}
