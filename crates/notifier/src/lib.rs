//! The `Notifier` trait: tell the owner what a run did, with what a person needs to act.
//!
//! One call per event. The mail backend (lettre: SMTP with STARTTLS or TLS, sendmail, or
//! `.eml` files into a folder) writes a subject that says what happened
//! ("extbackup: offsite-a FAILED at mount") and a plain-text body; a delivery that fails is
//! spooled and sent on the next run, so nothing is lost.
//!
//! Backends: [`MailNotifier`], and [`fake::RecordingNotifier`] (in memory, records events).
//!
//! ```no_run
//! use notifier::{Event, MailConfig, MailNotifier, MailTransport, Notifier, Outcome, Security};
//! use std::time::Duration;
//!
//! let notifier = MailNotifier::new(MailConfig {
//!     from: "extbackup@nas.example".into(),
//!     to: vec!["owner@example.org".into()],
//!     transport: MailTransport::Smtp {
//!         host: "smtp.example.org".into(),
//!         port: 587,
//!         security: Security::StartTls,
//!         username: Some("nas".into()),
//!         password_file: Some("/etc/extbackup/smtp-password".into()),
//!     },
//!     spool_dir: "/var/spool/extbackup/mail".into(),
//! })?;
//! notifier.flush_spool()?; // what earlier runs could not send
//! let event = Event {
//!     drive: "offsite-a".into(),
//!     host: "nas".into(),
//!     outcome: Outcome::Success,
//!     failed_step: None,
//!     error_chain: vec![],
//!     log_tail: String::new(),
//!     duration: Duration::from_secs(600),
//!     files: 120,
//!     bytes: 1 << 30,
//!     details: vec![],
//! };
//! notifier.notify(&event)?;
//! # Ok::<(), notifier::NotifyError>(())
//! ```
#![warn(missing_docs)]

mod body;
pub mod fake;
mod mail;
mod table;

pub use body::render_body;
pub use mail::{MailConfig, MailNotifier, MailTransport, Security, DEFAULT_DEADLINE};
pub use table::{MailTable, SecurityWord, TransportTable};

use std::time::Duration;

/// What went wrong, in broad terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is unusable (bad address, unreadable password file...).
    InvalidConfig,
    /// The message could not be delivered now; it was spooled for the next run.
    Spooled,
    /// The message could not be delivered nor spooled: it is lost unless the caller keeps it.
    Lost,
}

/// A Notifier error: a kind plus the backend's own error as the source.
pub type NotifyError = backend_error::Error<ErrorKind>;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The backup completed and the drive is safe to remove.
    Success,
    /// The backup failed.
    Failure,
    /// No backup newer than the allowed age: a reminder.
    Reminder,
}

/// Everything a notification says.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The drive's configured name (e.g. `offsite-a`).
    pub drive: String,
    /// The host the NAS runs on.
    pub host: String,
    /// How the run ended.
    pub outcome: Outcome,
    /// The step that failed (e.g. `mount`), on failure.
    pub failed_step: Option<String>,
    /// The error and its causes, outermost first.
    pub error_chain: Vec<String>,
    /// The last lines of the run's log.
    pub log_tail: String,
    /// How long the run took.
    pub duration: Duration,
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Extra free-form lines (e.g. "last successful backup: 40 days ago").
    pub details: Vec<String>,
}

impl Event {
    /// The subject line: `extbackup: offsite-a FAILED at mount`, `extbackup: offsite-a done`.
    pub fn subject(&self) -> String {
        match (self.outcome, &self.failed_step) {
            (Outcome::Success, _) => format!("extbackup: {} done, safe to remove", self.drive),
            (Outcome::Failure, Some(step)) => format!("extbackup: {} FAILED at {step}", self.drive),
            (Outcome::Failure, None) => format!("extbackup: {} FAILED", self.drive),
            (Outcome::Reminder, _) => format!("extbackup: reminder: {} needs a backup", self.drive),
        }
    }
}

/// Sends notifications. Object safe: the backend is chosen at run time.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait Notifier: Send + Sync {
    /// Delivers `event`; on a delivery failure the backend spools it and returns `Spooled`.
    fn notify(&self, event: &Event) -> Result<(), NotifyError>;
    /// Tries to send what earlier runs spooled; returns how many were sent.
    fn flush_spool(&self) -> Result<usize, NotifyError>;
    /// A short name for logs.
    fn describe(&self) -> String;
}
