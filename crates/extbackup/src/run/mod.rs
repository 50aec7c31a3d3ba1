//! A run: the pipeline and its steps over the backends, and what a run needs around it
//! (the host's locks and free space, hooks, `[quiet]`, monitoring, the captured log,
//! progress, and [`backends`], the one place that names concrete backend types).
//!
//! May use [`crate::fmt`], [`crate::error`], [`crate::config`] and [`crate::drive`].

pub mod backends;
pub mod confine;
pub mod ending;
pub mod hooks;
pub mod host;
pub mod logcapture;
pub mod monitor;
pub mod pipeline;
pub mod progress;
pub mod quiet;
