//! Helpers shared by the backends: key files, device checks, mapping names.

use crate::{CryptError, ErrorKind, Key, Secret};
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

/// The largest key file accepted (cryptsetup's own default limit).
pub(crate) const MAX_KEY_FILE: u64 = 8 * 1024 * 1024;

/// Reads a key file into memory that is wiped when dropped. The contents never appear in
/// an error: only the path does.
pub(crate) fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, CryptError> {
    let mut f = std::fs::File::open(path).map_err(|e| io_error(e, "opening the key file", path))?;
    let len = f
        .metadata()
        .map_err(|e| io_error(e, "reading the key file", path))?
        .len();
    if len > MAX_KEY_FILE {
        return Err(CryptError::new(
            ErrorKind::InvalidArgument,
            format!(
                "the key file {} is {len} bytes, more than the {MAX_KEY_FILE} bytes allowed: \
                 use a 4096-byte random key file (head -c 4096 /dev/urandom)",
                path.display()
            ),
        ));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(len as usize));
    f.read_to_end(&mut buf)
        .map_err(|e| io_error(e, "reading the key file", path))?;
    if buf.is_empty() {
        return Err(CryptError::new(
            ErrorKind::InvalidArgument,
            format!(
                "the key file {} is empty: an empty key would protect nothing; create one \
                 with `head -c 4096 /dev/urandom > {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(buf)
}

/// Maps an I/O error on `path` to a `CryptError` with a fitting kind.
pub(crate) fn io_error(e: std::io::Error, what: &str, path: &Path) -> CryptError {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Other,
    };
    let hint = match kind {
        ErrorKind::NotFound => ": check the path",
        ErrorKind::PermissionDenied => ": run as root",
        _ => "",
    };
    CryptError::new(kind, format!("{what} {}{hint}", path.display())).with_source(e)
}

/// Checks a mapping name the way device-mapper wants it.
pub(crate) fn check_mapping_name(name: &str) -> Result<(), CryptError> {
    let ok = !name.is_empty()
        && name.len() < 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+#".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CryptError::new(
            ErrorKind::InvalidArgument,
            format!(
                "bad mapping name {name:?}: use 1-127 ASCII letters, digits and -_.+# \
                 (e.g. extbackup-offsite-a)"
            ),
        ))
    }
}

/// Checks a LUKS2 label (at most 47 bytes, no NUL).
pub(crate) fn check_label(label: &str) -> Result<(), CryptError> {
    if label.len() > 47 || label.contains('\0') || label.contains('\n') {
        return Err(CryptError::new(
            ErrorKind::InvalidArgument,
            format!("bad label {label:?}: at most 47 bytes, no NUL or newline"),
        ));
    }
    Ok(())
}

/// Checks that `device` exists; `NotFound` with a hint otherwise.
pub(crate) fn check_exists(device: &Path) -> Result<std::fs::Metadata, CryptError> {
    std::fs::metadata(device).map_err(|e| io_error(e, "opening the device", device))
}

/// Refuses a block device that something holds exclusively (mounted, mapped, swap): a
/// format would destroy a filesystem in use.
pub(crate) fn check_not_in_use(device: &Path) -> Result<(), CryptError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let md = check_exists(device)?;
    if !md.file_type().is_block_device() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(device)
    {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CryptError::new(
            ErrorKind::Busy,
            format!(
                "refusing to format {}: it is in use (mounted, unlocked or otherwise held); \
                 unmount and lock it first",
                device.display()
            ),
        )
        .with_source(e)),
        Err(e) => Err(io_error(e, "opening the device", device)),
    }
}

/// The bytes of a key: a key file's contents or a passphrase's.
pub(crate) fn key_bytes(key: Key<'_>) -> Result<Zeroizing<Vec<u8>>, CryptError> {
    match key {
        Key::File(p) => read_key_file(p),
        Key::Passphrase(s) => {
            check_passphrase(s)?;
            Ok(Zeroizing::new(s.expose().as_bytes().to_vec()))
        }
    }
}

/// Refuses an empty passphrase.
pub(crate) fn check_passphrase(p: &Secret) -> Result<(), CryptError> {
    if p.expose().is_empty() {
        return Err(CryptError::new(
            ErrorKind::InvalidArgument,
            "the passphrase is empty: give a real one or none",
        ));
    }
    Ok(())
}

/// The error for a passphrase that opens no keyslot (the passphrase itself never shown).
pub(crate) fn wrong_passphrase(device: &Path) -> CryptError {
    CryptError::new(
        ErrorKind::WrongKey,
        format!(
            "the passphrase opens no keyslot of {} (wrong passphrase? it is case-sensitive, \
             dashes included)",
            device.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"").unwrap();
        let e = read_key_file(&p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("empty"));
    }

    #[test]
    fn key_file_contents_are_read_and_missing_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"s3cret-bytes").unwrap();
        assert_eq!(&read_key_file(&p).unwrap()[..], b"s3cret-bytes");
        let e = read_key_file(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(!format!("{e:?}").contains("s3cret"));
    }

    #[test]
    fn mapping_names_and_labels_are_checked() {
        assert!(check_mapping_name("extbackup-offsite-a").is_ok());
        for bad in ["", "a/b", "..", "a b", &"x".repeat(128)] {
            assert_eq!(
                check_mapping_name(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad:?}"
            );
        }
        assert!(check_label("offsite A").is_ok());
        assert!(check_label(&"l".repeat(48)).is_err());
        assert!(check_label("a\nb").is_err());
    }
}
