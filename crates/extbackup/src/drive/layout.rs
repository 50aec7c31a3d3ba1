//! The names of what a run puts on a drive and on the host for it, in one place.

/// The name of the LUKS mapping of `drive`.
pub fn mapping_name(drive: &str) -> String {
    format!("extbackup-{drive}")
}

/// The folder on the drive's filesystem that mirrors the source.
pub const DATA_DIR: &str = "data";
