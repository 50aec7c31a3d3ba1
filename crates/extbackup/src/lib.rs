//! extbackup: the pipeline that backs the NAS up onto a plugged-in LUKS drive, composed
//! from the backend traits (`Indicator`, `Crypt`, `Mounter`, `Notifier`, `Syncer`).
//! `main.rs` is a thin command line over this library.

pub mod escape;
pub mod install;
pub mod watch;
