//! Tests against real hardware. Run them with `cargo xtask hw-test`; see
//! `docs/hardware-testing.md`.
