//! How extbackup sits in the operating system: systemd unit names (`escape`), the udev
//! rule and units (`install`), journald priorities (`journal`) and the udev watcher
//! (`watch`). Used only by the command line.
//!
//! May use [`crate::fmt`], [`crate::error`] and [`crate::config`].

pub mod escape;
pub mod install;
pub mod journal;
pub mod watch;
