//! What is on a drive, and what can be done with one outside a run: its layout, how it is
//! recognised, the records runs leave, its generations (and the link-dest alarm), the
//! recovery kit, `verify`,
//! `restore`, browsing, `prepare` and `status`.
//!
//! May use [`crate::fmt`], [`crate::error`] and [`crate::config`]; never [`crate::run`].

pub mod browse;
pub mod check;
pub mod handle;
pub mod history;
pub mod identify;
pub mod layout;
pub mod linkcheck;
pub mod manifests;
pub mod prepare;
pub mod recovery;
pub mod restore;
pub mod scrub;
pub mod state;
pub mod status;
pub mod verify;
