//! How a copying program's failure reads: its stderr tail classified (no space, a failed
//! device) and the errors the user gets, in the same words whichever program copied (rsync
//! or the first copy's cp).

use crate::{ErrorKind, SyncError};
use std::path::Path;

/// The stderr tail as one text for an error message.
pub(crate) fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        "(no error output)".into()
    } else {
        tail.join("\n")
    }
}

fn says(stderr_tail: &[String], needles: &[&str]) -> bool {
    stderr_tail
        .iter()
        .any(|l| needles.iter().any(|n| l.contains(n)))
}

/// The program's error output says the target is full (ENOSPC or a quota).
pub(crate) fn says_no_space(stderr_tail: &[String]) -> bool {
    says(
        stderr_tail,
        &["No space left on device", "Disk quota exceeded"],
    )
}

/// The program's error output says the device failed, vanished or went read-only (EIO,
/// ENODEV, EROFS, ENOTCONN).
pub(crate) fn says_device_failed(stderr_tail: &[String]) -> bool {
    says(
        stderr_tail,
        &[
            "Input/output error",
            "No such device",
            "Read-only file system",
            "Transport endpoint is not connected",
        ],
    )
}

/// [`ErrorKind::NoSpace`], in the words the user gets whichever program copied.
pub(crate) fn no_space_error(who: &str, code: i32, target: &Path, tail: &str) -> SyncError {
    SyncError::new(
        ErrorKind::NoSpace,
        format!(
            "the target {} ran out of space ({who} exit {code}): the drive is too small \
             for the source; use a larger drive or exclude data from the backup. \
             {who} said:\n{tail}",
            target.display()
        ),
    )
}

/// [`ErrorKind::Io`]: the drive failed or was pulled, in the same words for every program.
pub(crate) fn io_error(
    who: &str,
    code: i32,
    device_failed: bool,
    target: &Path,
    tail: &str,
) -> SyncError {
    SyncError::new(
        ErrorKind::Io,
        format!(
            "reading or writing failed ({who} exit {code}){}: not a full drive; {}. \
             {who} said:\n{tail}",
            if device_failed {
                " with a device error"
            } else {
                ""
            },
            if target_gone(target) {
                format!(
                    "the target {} is gone: the drive was pulled or failed during the copy",
                    target.display()
                )
            } else {
                "the drive may have been pulled, or it has I/O errors (see `dmesg`)".into()
            }
        ),
    )
}

/// The target cannot be reached any more (its device vanished).
pub(crate) fn target_gone(target: &Path) -> bool {
    std::fs::metadata(target).is_err()
}
