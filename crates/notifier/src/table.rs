//! The `[mail]` table of the extbackup configuration file: this crate's own settings, parsed
//! and checked here (as the indicator crate owns `[indicator]`), so that a configuration
//! check and a run refuse exactly the same things.
//!
//! ```
//! let t: notifier::MailTable = toml::from_str(r#"
//!     to = ["owner@example.org"]
//!     transport = { kind = "smtp", host = "smtp.example.org", username = "nas", password_file = "/etc/extbackup/smtp-password" }
//! "#).unwrap();
//! t.check().unwrap();
//! let c = t.resolve("extbackup <root@nas>", "/var/lib/extbackup/spool".as_ref());
//! assert_eq!(c.from, "extbackup <root@nas>");
//! ```

use crate::{MailConfig, MailTransport, NotifyError, Security, DEFAULT_DEADLINE};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `[mail]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailTable {
    /// Recipients.
    pub to: Vec<String>,
    /// Sender; `extbackup <root@HOST>` when absent.
    #[serde(default)]
    pub from: Option<String>,
    /// Also mail when a run succeeds.
    #[serde(default = "yes")]
    pub on_success: bool,
    /// Where undeliverable mail waits for the next run; `STATE_DIR/spool` when absent.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// How long all mail work of a run may take, in seconds (default 60); a slow or dead
    /// server never delays a backup, its mail waits in the spool.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// How mail leaves the machine.
    pub transport: TransportTable,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> u64 {
    DEFAULT_DEADLINE.as_secs()
}

/// `transport = { kind = "smtp" | "sendmail" | "file", ... }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum TransportTable {
    /// An SMTP server.
    Smtp {
        /// Server host name.
        host: String,
        /// Port (25, 465 or 587 usually).
        #[serde(default = "smtp_port")]
        port: u16,
        /// `starttls`, `tls` or `none`.
        #[serde(default)]
        security: SecurityWord,
        /// User name for AUTH.
        #[serde(default)]
        username: Option<String>,
        /// A file holding the password (mode 0400/0600); never the password itself.
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
    /// The local `sendmail` program.
    Sendmail {
        /// Its path; `sendmail` on PATH when absent.
        #[serde(default)]
        program: Option<PathBuf>,
    },
    /// `.eml` files into a folder (tests, the demo).
    File {
        /// The folder.
        dir: PathBuf,
    },
}

fn smtp_port() -> u16 {
    587
}

/// `security = "starttls" | "tls" | "none"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityWord {
    /// Plain connection upgraded with STARTTLS (required).
    #[default]
    Starttls,
    /// TLS from the start (port 465).
    Tls,
    /// No encryption (a relay on localhost only).
    None,
}

impl MailTable {
    /// What the mail backend needs, with the defaults the caller knows (the sender built
    /// from the host name, the spool in the state directory).
    pub fn resolve(&self, default_from: &str, default_spool: &Path) -> MailConfig {
        let transport = match &self.transport {
            TransportTable::Smtp {
                host,
                port,
                security,
                username,
                password_file,
            } => MailTransport::Smtp {
                host: host.clone(),
                port: *port,
                security: match security {
                    SecurityWord::Starttls => Security::StartTls,
                    SecurityWord::Tls => Security::Tls,
                    SecurityWord::None => Security::None,
                },
                username: username.clone(),
                password_file: password_file.clone(),
            },
            TransportTable::Sendmail { program } => MailTransport::Sendmail {
                program: program.clone().unwrap_or_else(|| "sendmail".into()),
            },
            TransportTable::File { dir } => MailTransport::File { dir: dir.clone() },
        };
        MailConfig {
            from: self.from.clone().unwrap_or_else(|| default_from.into()),
            to: self.to.clone(),
            transport,
            spool_dir: self
                .spool_dir
                .clone()
                .unwrap_or_else(|| default_spool.into()),
        }
    }

    /// How long all mail work of a run may take.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The checks a run's mail backend makes (see [`MailConfig::check`]), and paths that
    /// must be absolute: exactly what a run would refuse.
    pub fn check(&self) -> Result<(), NotifyError> {
        let relative = |what: &str, p: &Path| {
            NotifyError::new(
                crate::ErrorKind::InvalidConfig,
                format!("{what} {} is not an absolute path", p.display()),
            )
        };
        if let Some(d) = self.spool_dir.as_deref().filter(|d| !d.is_absolute()) {
            return Err(relative("spool_dir", d));
        }
        match &self.transport {
            TransportTable::Smtp {
                password_file: Some(p),
                ..
            } if !p.is_absolute() => return Err(relative("password_file", p)),
            TransportTable::File { dir } if !dir.is_absolute() => {
                return Err(relative("the mail folder", dir))
            }
            _ => {}
        }
        self.resolve("extbackup <root@localhost>", Path::new("/"))
            .check()
    }
}
