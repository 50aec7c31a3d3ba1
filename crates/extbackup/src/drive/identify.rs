//! Step 1 of a run: is the plugged-in device one of our drives? The configured UUID, the
//! LUKS header's own UUID and the key file must all agree before anything is touched.

use std::path::{Path, PathBuf};

use crypt::Crypt;

use crate::config::{Config, DriveConfig};
use crate::Failure;

/// Which drive to back up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The LUKS UUID (`/dev/disk/by-uuid/UUID`), as udev passes it.
    Uuid(String),
    /// A block device.
    Device(PathBuf),
}

/// What the device is.
#[derive(Debug)]
pub enum Identified {
    /// A configured drive whose key file opens it.
    Ours {
        /// Its configuration.
        drive: DriveConfig,
        /// The block device it is on.
        device: PathBuf,
    },
    /// Not a configured drive (why, in words): left untouched.
    NotOurs(String),
}

/// A device that claims to be ours but cannot be confirmed (the header says another UUID,
/// the key file is unusable or does not open it, the device cannot be read).
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct IdentifyError {
    /// The name the failure is recorded and mailed under: the drive's, else the device's.
    pub name: String,
    /// The drive's UUID, or "" when unknown.
    pub uuid: String,
    /// What went wrong.
    #[source]
    pub error: Failure,
}

/// Identifies `target`: reads its LUKS header and checks the configured key file on it.
pub fn identify(
    cfg: &Config,
    crypt: &dyn Crypt,
    by_uuid_dir: &Path,
    target: &Target,
) -> Result<Identified, IdentifyError> {
    let (device, claimed) = match target {
        Target::Uuid(u) => {
            let Some(d) = cfg.drive_by_uuid(u) else {
                return Ok(Identified::NotOurs(format!(
                    "UUID {u} is not a configured drive"
                )));
            };
            (by_uuid_dir.join(d.uuid.as_str()), Some(d))
        }
        Target::Device(p) => (p.clone(), None),
    };
    let fail = |d: Option<&DriveConfig>, error: Failure| IdentifyError {
        name: d.map_or_else(|| device.display().to_string(), |d| d.name.to_string()),
        uuid: d.map(|d| d.uuid.to_string()).unwrap_or_default(),
        error,
    };
    let info = match crypt.inspect(&device) {
        Ok(i) => i,
        Err(e) if e.kind() == crypt::ErrorKind::NotLuks && claimed.is_none() => {
            return Ok(Identified::NotOurs(format!(
                "{} has no LUKS header",
                device.display()
            )))
        }
        Err(e) => {
            return Err(fail(
                claimed,
                Failure::with(
                    format!("reading the LUKS header of {}", device.display()),
                    e,
                ),
            ))
        }
    };
    let drive = match claimed {
        Some(d) if d.uuid.as_str() != info.uuid.to_ascii_lowercase() => {
            return Err(fail(
                Some(d),
                Failure::new(format!(
                    "{} has LUKS UUID {}, not the configured {}: refusing a drive that is not what it claims",
                    device.display(),
                    info.uuid,
                    d.uuid
                )),
            ))
        }
        Some(d) => d,
        None => match cfg.drive_by_uuid(&info.uuid) {
            Some(d) => d,
            None => {
                return Ok(Identified::NotOurs(format!(
                    "{} (LUKS UUID {}) is not a configured drive",
                    device.display(),
                    info.uuid
                )))
            }
        },
    };
    check_key(crypt, drive, &device).map_err(|e| fail(Some(drive), e))?;
    Ok(Identified::Ours {
        drive: drive.clone(),
        device,
    })
}

/// The key file is usable and opens a keyslot of `device`.
fn check_key(crypt: &dyn Crypt, drive: &DriveConfig, device: &Path) -> Result<(), Failure> {
    crate::config::check_key_file(&drive.key_file).map_err(|e| Failure::with("the key file", e))?;
    match crypt.verify_key_file(device, &drive.key_file) {
        Ok(slot) => {
            tracing::debug!("key file opens keyslot {slot}");
            Ok(())
        }
        Err(e) if e.kind() == crypt::ErrorKind::WrongKey => Err(Failure::with(
            format!(
                "the configured key file {} does not unlock {}: a different drive with a copied UUID, or the wrong key file",
                drive.key_file.display(),
                device.display()
            ),
            e,
        )),
        // Not a verdict on the key: the device could not be read (pulled, I/O error).
        Err(e) => Err(Failure::with(
            format!(
                "checking that the key file {} unlocks {}",
                drive.key_file.display(),
                device.display()
            ),
            e,
        )),
    }
}
