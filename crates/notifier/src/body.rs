//! The plain-text body of a notification: what happened, why, what to do next.

use crate::{Event, Outcome};
use std::fmt::Write as _;

/// Renders the plain-text body a person reads: what happened, the failed step, the error
/// chain (one line per cause), what to do next where obvious, duration, files and bytes,
/// extra details and the log tail.
///
/// ```
/// use notifier::{render_body, Event, Outcome};
/// use std::time::Duration;
/// let event = Event {
///     drive: "offsite-a".into(), host: "nas".into(), outcome: Outcome::Failure,
///     failed_step: Some("mount".into()),
///     error_chain: vec!["mounting /dev/mapper/x".into(), "wrong fs type".into()],
///     log_tail: "last line".into(), duration: Duration::from_secs(75),
///     files: 0, bytes: 0, details: vec![],
/// };
/// let body = render_body(&event);
/// assert!(body.contains("failed at step: mount"));
/// assert!(body.contains("  caused by: wrong fs type"));
/// ```
pub fn render_body(event: &Event) -> String {
    let mut b = String::new();
    let drive = &event.drive;
    let host = &event.host;
    // `write!` into a String cannot fail.
    match event.outcome {
        Outcome::Success => {
            let _ = writeln!(
                b,
                "The backup to drive {drive} on {host} completed.\n\
                 The drive is unmounted and closed: it is safe to remove it and take it off-site."
            );
        }
        Outcome::Failure => {
            let _ = writeln!(b, "The backup to drive {drive} on {host} FAILED.");
            if let Some(step) = &event.failed_step {
                let _ = writeln!(b, "It failed at step: {step}");
            }
        }
        Outcome::Reminder => {
            let _ = writeln!(
                b,
                "Reminder: drive {drive} has no recent backup from {host}.\n\
                 Plug it into {host} to bring it up to date."
            );
        }
    }
    if !event.error_chain.is_empty() {
        let _ = writeln!(b, "\nError:");
        for (i, cause) in event.error_chain.iter().enumerate() {
            if i == 0 {
                let _ = writeln!(b, "  {cause}");
            } else {
                let _ = writeln!(b, "  caused by: {cause}");
            }
        }
    }
    if let Some(advice) = advice(event) {
        let _ = writeln!(b, "\nWhat to do: {advice}");
    }
    let _ = writeln!(b, "\nDuration: {}", oskit::human::duration(event.duration));
    let _ = writeln!(
        b,
        "Copied: {} files, {}",
        event.files,
        copied_bytes(event.bytes)
    );
    for d in &event.details {
        let _ = writeln!(b, "{d}");
    }
    if !event.log_tail.trim().is_empty() {
        let _ = writeln!(b, "\nLast lines of the log:");
        for line in event.log_tail.lines() {
            let _ = writeln!(b, "  {line}");
        }
    }
    let _ = writeln!(b, "\n-- \nextbackup on {host}");
    b
}

/// Next steps for the failures whose fix is obvious from the step or the error.
fn advice(event: &Event) -> Option<&'static str> {
    if event.outcome != Outcome::Failure {
        return None;
    }
    let chain = event.error_chain.join(" ").to_lowercase();
    if chain.contains("no space") || chain.contains("enospc") {
        return Some(
            "the drive is full. Use a larger drive, or exclude data from the backup, \
             then plug the drive in again.",
        );
    }
    match event.failed_step.as_deref() {
        Some("unlock") | Some("open") => Some(
            "check that the key file configured for this drive unlocks it \
             (cryptsetup open --test-passphrase --key-file ...), and that it is the right drive.",
        ),
        Some("mount") => Some(
            "the filesystem on the drive may need checking: run fsck on the opened device, \
             then plug the drive in again.",
        ),
        Some("lock") => Some(
            "another job holds the source lock (a NAS backup still running?); \
             the next plug-in will retry.",
        ),
        Some("sync") => Some(
            "read the error and the log below; once fixed, unplug and plug the drive in again \
             to retry. The drive's copy may be incomplete until a run succeeds.",
        ),
        _ => Some("read the error and the log below; plug the drive in again to retry."),
    }
}

/// The size copied: [`oskit::human::bytes`], with the exact count once a unit is used.
fn copied_bytes(n: u64) -> String {
    let human = oskit::human::bytes(n);
    if n < 1024 {
        human
    } else {
        format!("{human} ({n} bytes)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(outcome: Outcome) -> Event {
        Event {
            drive: "offsite-b".into(),
            host: "phobos".into(),
            outcome,
            failed_step: None,
            error_chain: vec![],
            log_tail: String::new(),
            duration: Duration::from_secs(3725),
            files: 12,
            bytes: 3 * 1024 * 1024,
            details: vec!["last successful backup: 40 days ago".into()],
        }
    }

    #[test]
    fn failure_body_has_step_chain_advice_and_log() {
        let mut e = event(Outcome::Failure);
        e.failed_step = Some("sync".into());
        e.error_chain = vec![
            "syncing /srv/backup".into(),
            "rsync exited 11".into(),
            "No space left on device".into(),
        ];
        e.log_tail = "line one\nline two".into();
        let b = render_body(&e);
        assert!(b.contains("FAILED"), "{b}");
        assert!(b.contains("It failed at step: sync"), "{b}");
        assert!(b.contains("  syncing /srv/backup\n"), "{b}");
        assert!(b.contains("  caused by: rsync exited 11\n"), "{b}");
        assert!(b.contains("  caused by: No space left on device\n"), "{b}");
        assert!(b.contains("the drive is full"), "{b}");
        assert!(b.contains("  line one\n  line two\n"), "{b}");
        assert!(b.contains("Duration: 1 h 2 min"), "{b}");
        assert!(b.contains("12 files, 3.0 MiB"), "{b}");
        assert!(b.contains("last successful backup: 40 days ago"), "{b}");
    }

    #[test]
    fn success_body_says_safe_to_remove_and_gives_no_advice() {
        let b = render_body(&event(Outcome::Success));
        assert!(b.contains("safe to remove"), "{b}");
        assert!(!b.contains("What to do"), "{b}");
        assert!(!b.contains("Error:"), "{b}");
    }

    #[test]
    fn reminder_body_names_the_drive() {
        let b = render_body(&event(Outcome::Reminder));
        assert!(b.contains("drive offsite-b has no recent backup"), "{b}");
    }

    #[test]
    fn sizes_and_durations_read_well() {
        // The one formatter (oskit::human) says "B" where this body once said "bytes".
        assert_eq!(copied_bytes(500), "500 B");
        assert_eq!(copied_bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(oskit::human::duration(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(oskit::human::duration(Duration::from_secs(61)), "1 min 1 s");
    }
}
