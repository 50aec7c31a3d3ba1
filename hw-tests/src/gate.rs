//! Gating: whether a test may run here. How a test that cannot run its real part says so is
//! `testkit::skip` (the one way to skip: the `SKIP` line, or a failure under
//! `EXTBACKUP_REQUIRE_REAL=1`, as in the QEMU guest).

/// Whether we run inside the QEMU guest of `cargo xtask vm-test` (it sets
/// `EXTBACKUP_IN_VM=1`).
pub fn in_vm() -> bool {
    std::env::var_os("EXTBACKUP_IN_VM").is_some_and(|v| v == "1")
}

pub use oskit::is_root;

/// A non-empty environment variable.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
