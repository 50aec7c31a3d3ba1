//! Logging under systemd: when stderr is the journal (`JOURNAL_STREAM` names its device
//! and inode), each line starts with an sd-daemon priority prefix (`<3>` error, `<4>`
//! warning, `<6>` info, `<7>` debug), which journald stores as the entry's priority, so
//! `journalctl -p err` finds the failures. Elsewhere (a terminal, a pipe) nothing changes.
//!
//! ```
//! use extbackup::system::journal::priority;
//! assert_eq!(priority(&tracing::Level::ERROR), 3);
//! assert_eq!(priority(&tracing::Level::INFO), 6);
//! ```

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether this process's stderr is connected to the journal: `JOURNAL_STREAM`
/// (`DEVICE:INODE`, set by systemd for `StandardError=journal`) matches stderr's file.
pub fn stderr_is_journal() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
            return false;
        };
        matches_stream(&v.to_string_lossy(), meta.dev(), meta.ino())
    })
}

/// Whether `JOURNAL_STREAM`'s value `DEVICE:INODE` names the file with `dev` and `ino`.
pub fn matches_stream(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority of a tracing level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// `<N>` when stderr is the journal, else nothing: for lines written without tracing.
pub fn prefix(priority: u8) -> String {
    if stderr_is_journal() {
        format!("<{priority}>")
    } else {
        String::new()
    }
}

/// A tracing event format for the journal: `<N>message fields`, one line per event (a
/// message with newlines is joined with ` | ` so no line loses its priority).
#[derive(Clone, Copy, Debug, Default)]
pub struct SdPrefix;

impl<S, N> FormatEvent<S, N> for SdPrefix
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut text = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut text), event)?;
        let one_line = text.trim_end().replace('\n', " | ");
        writeln!(w, "<{}>{one_line}", priority(event.metadata().level()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_exactly() {
        assert!(matches_stream("8:12345", 8, 12345));
        assert!(!matches_stream("8:12345", 8, 12346));
        assert!(!matches_stream("garbage", 8, 12345));
    }

    #[test]
    fn events_get_their_priority_prefix_on_one_line() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .event_format(SdPrefix)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::error!("mount failed\nsecond line");
            tracing::warn!("slow");
            tracing::info!(files = 3, "done");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "<3>mount failed | second line\n<4>slow\n<6>done files=3\n"
        );
    }
}
