//! extbackup: the pipeline that backs the NAS up onto a plugged-in LUKS drive, composed
//! from the backend traits (`Indicator`, `Crypt`, `Mounter`, `Notifier`, `Syncer`).
//! `main.rs` is a thin command line over this library.
//!
//! The pipeline never calls hidapi, mount(2) or libcryptsetup itself: only the traits, and
//! [`run::host::Host`] for its locks, free space and the record on the drive. The real backends
//! are chosen from the configuration in [`run::backends`].
//!
//! ```
//! use extbackup::config::Config;
//! let cfg = Config::parse(r#"
//! source = "/srv/backup"
//! [[drive]]
//! name = "offsite-a"
//! uuid = "0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab"
//! key_file = "/etc/extbackup/keys/offsite-a.key"
//! "#).unwrap();
//! let d = cfg.drive_by_uuid("0B1C2D3E-AAAA-4BBB-8CCC-0123456789AB").unwrap();
//! assert_eq!(cfg.mount_point(d), std::path::Path::new("/run/extbackup/offsite-a"));
//! assert_eq!(extbackup::drive::layout::mapping_name("offsite-a"), "extbackup-offsite-a");
//! ```
#![warn(missing_docs)]

pub mod error;
pub mod fmt;

pub mod config;
pub mod drive;
pub mod run;
pub mod system;

pub use error::{chain, Failure};
