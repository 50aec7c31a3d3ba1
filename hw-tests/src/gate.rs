//! Gating: whether a test may run here, and the `SKIP` lines that say why not.

/// Whether we run inside the QEMU guest of `cargo xtask vm-test` (it sets
/// `EXTBACKUP_IN_VM=1`).
pub fn in_vm() -> bool {
    std::env::var_os("EXTBACKUP_IN_VM").is_some_and(|v| v == "1")
}

pub use oskit::is_root;

/// Prints `SKIP <name>: <why>` to stderr (libtest shows it with `--nocapture`; the
/// hw-test task runs with it).
pub fn skip(name: &str, why: &str) {
    eprintln!("SKIP {name}: {why}");
}

/// A non-empty environment variable.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
