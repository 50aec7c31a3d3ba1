//! From the configuration to the real backends (`Box<dyn Trait>`): the one place that
//! names concrete types.

use crypt::{AllowTestBackend, Crypt, LibcryptsetupCrypt, LoopbackTestCrypt};
use indicator::Indicator;
use mount::Mounter;
use notify::{MailNotifier, Notifier};
use sync::{CommandSyncer, RsyncSyncer, Syncer};

use crate::config::{Config, CryptBackend, MailTransport, SmtpSecurity, SyncerConfig};
use crate::host::SystemHost;
use crate::pipeline::Backends;
use crate::state::StateDir;

/// A backend that could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    message: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

fn err(
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> BackendError {
    BackendError {
        message: message.into(),
        source: Box::new(source),
    }
}

/// The LUKS backend.
pub fn crypt(cfg: &Config) -> Result<Box<dyn Crypt>, BackendError> {
    Ok(match cfg.crypt.backend {
        CryptBackend::Libcryptsetup => Box::new(LibcryptsetupCrypt::new()),
        CryptBackend::LoopbackTest => {
            tracing::warn!("crypt backend loopback-test: NO ENCRYPTION (tests and demos only)");
            Box::new(
                LoopbackTestCrypt::with_state_dir(
                    AllowTestBackend::Yes,
                    cfg.state_dir.join("loopback-crypt"),
                )
                .map_err(|e| err("the loopback-test crypt backend", e))?,
            )
        }
    })
}

/// The filesystem backend.
pub fn mounter(_cfg: &Config) -> Result<Box<dyn Mounter>, BackendError> {
    Ok(Box::new(mount::NixMounter::new()))
}

/// The syncer.
pub fn syncer(cfg: &Config) -> Box<dyn Syncer> {
    match &cfg.syncer {
        SyncerConfig::Rsync { extra_args } => {
            Box::new(RsyncSyncer::new().with_extra_args(extra_args.iter()))
        }
        SyncerConfig::Command { command } => {
            let (prog, args) = command.split_first().expect("validated: not empty");
            Box::new(CommandSyncer::new(prog).with_args(args.iter()))
        }
    }
}

/// The mail backend, if mail is configured.
pub fn notifier(cfg: &Config) -> Result<Option<Box<dyn Notifier>>, BackendError> {
    let Some(m) = &cfg.mail else {
        return Ok(None);
    };
    let transport = match &m.transport {
        MailTransport::Smtp {
            host,
            port,
            security,
            username,
            password_file,
        } => notify::MailTransport::Smtp {
            host: host.clone(),
            port: *port,
            security: match security {
                SmtpSecurity::Starttls => notify::Security::StartTls,
                SmtpSecurity::Tls => notify::Security::Tls,
                SmtpSecurity::None => notify::Security::None,
            },
            username: username.clone(),
            password_file: password_file.clone(),
        },
        MailTransport::Sendmail { program } => notify::MailTransport::Sendmail {
            program: program.clone().unwrap_or_else(|| "sendmail".into()),
        },
        MailTransport::File { dir } => notify::MailTransport::File { dir: dir.clone() },
    };
    let mc = notify::MailConfig {
        from: m
            .from
            .clone()
            .unwrap_or_else(|| format!("extbackup <root@{}>", cfg.host_name())),
        to: m.to.clone(),
        transport,
        spool_dir: m
            .spool_dir
            .clone()
            .unwrap_or_else(|| cfg.state_dir.join("spool")),
    };
    Ok(Some(Box::new(
        MailNotifier::new(mc).map_err(|e| err("the mail settings", e))?,
    )))
}

/// The indicator; one that cannot be built is logged and replaced by none (an indicator
/// never stops a backup).
pub fn indicator(cfg: &Config) -> Box<dyn Indicator> {
    match indicator::from_config(&cfg.indicator) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("indicator: {}; going on without one", crate::chain(&e));
            Box::new(indicator::NoIndicator)
        }
    }
}

/// Every backend of a run.
pub fn build(cfg: &Config) -> Result<Backends, BackendError> {
    Ok(Backends {
        indicator: indicator(cfg),
        crypt: crypt(cfg)?,
        mounter: mounter(cfg)?,
        syncer: syncer(cfg),
        notifier: notifier(cfg)?,
        host: Box::new(
            SystemHost::new(StateDir::new(&cfg.state_dir).run_lock_path())
                .with_header_backups(crate::recovery::header_backups(cfg)),
        ),
    })
}
