//! What `config check` says the configuration contains.

use super::*;

impl Config {
    /// A human summary of what the configuration says (for `extbackup config check`).
    pub fn summary(&self) -> String {
        let mut lines = self.summary_sources();
        lines.push(format!("state dir: {}", self.state_dir.display()));
        lines.extend(self.summary_copy());
        lines.extend(self.summary_tell());
        lines.extend(self.summary_drives());
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn summary_sources(&self) -> Vec<String> {
        let lock = |l: &SourceLockConfig| {
            format!("{} (wait up to {} s)", l.path.display(), l.timeout_secs)
        };
        let mut v = vec![];
        if let Some(p) = &self.source {
            v.push(format!("source: {}", p.display()));
        }
        for (n, src) in &self.sources {
            let mut l = format!(
                "source {}: {} -> data/{}/",
                n.as_str(),
                src.path.display(),
                n.as_str()
            );
            if !src.exclude.0.is_empty() {
                let pats: Vec<_> = src.exclude.0.patterns().collect();
                l.push_str(&format!(", excluding {}", pats.join(" ")));
            }
            if let Some(k) = &src.lock {
                l.push_str(&format!(", lock {}", lock(k)));
            }
            v.push(l);
        }
        v.push(match &self.source_lock {
            Some(l) => format!("source lock: {}", lock(l)),
            None => "source lock: none".into(),
        });
        v
    }

    /// How the copy is made: priorities, monitoring, hooks, the syncer.
    fn summary_copy(&self) -> Vec<String> {
        let mut v = vec![];
        if let Some(n) = self.quiet.nice {
            v.push(format!("copy nice value: {}", n.get()));
        }
        if let Some(c) = self.quiet.io_class {
            let level = self
                .quiet
                .io_priority
                .map_or(String::new(), |l| format!(" {}", l.get()));
            v.push(format!("copy I/O class: {c:?}{level}"));
        }
        if let Some(b) = self.quiet.bwlimit_kib {
            v.push(format!("copy bandwidth limit: {} KiB/s", b.get()));
        }
        // The ping URL is a secret of sorts (anyone holding it can ping): not shown.
        if self.monitor.ping_url.is_some() {
            v.push(format!(
                "monitoring pings: on (timeout {} s)",
                self.monitor.timeout_secs.get().as_secs()
            ));
        }
        if let Some(t) = &self.monitor.textfile {
            v.push(format!("monitoring textfile: {}", t.display()));
        }
        for (phase, hooks) in [("before", &self.hooks.before), ("after", &self.hooks.after)] {
            for h in hooks {
                v.push(format!(
                    "{phase} hook {:?}: {:?} (timeout {} s)",
                    h.name.as_str(),
                    h.command.argv(),
                    h.timeout_secs.get().as_secs()
                ));
            }
        }
        v.push(match &self.syncer {
            SyncerConfig::Rsync { extra_args } if extra_args.is_empty() => "syncer: rsync".into(),
            SyncerConfig::Rsync { extra_args } => {
                format!("syncer: rsync, extra arguments {}", extra_args.join(" "))
            }
            SyncerConfig::Command { command } => format!("syncer: command {}", command.join(" ")),
        });
        v
    }

    /// How the state is shown and told, and the policy.
    fn summary_tell(&self) -> Vec<String> {
        let crypt = match self.crypt.backend {
            CryptBackend::Libcryptsetup => "libcryptsetup",
            CryptBackend::LoopbackTest => "loopback-test (NO ENCRYPTION: tests only)",
        };
        let mail = match &self.mail {
            None => "mail: none (failures are only logged)".into(),
            Some(m) => format!(
                "mail: to {} via {}",
                m.to.join(", "),
                match &m.transport {
                    notifier::TransportTable::Smtp { host, port, .. } =>
                        format!("smtp {host}:{port}"),
                    notifier::TransportTable::Sendmail { .. } => "sendmail".into(),
                    notifier::TransportTable::File { dir } => format!("files in {}", dir.display()),
                }
            ),
        };
        vec![
            format!("crypt backend: {crypt}"),
            format!("indicator: {:?}", self.indicator.backend).to_lowercase(),
            mail,
            format!(
                "policy: delete at most {:.0}% of the drive's files, source must {}be a mount point, remind after {} days",
                self.policy.max_delete_fraction.get() * 100.0,
                if self.policy.require_source_mount_point { "" } else { "not necessarily " },
                self.policy.reminder_age_days
            ),
        ]
    }

    fn summary_drives(&self) -> Vec<String> {
        if self.drives.is_empty() {
            return vec![
                "drives: none (add one with `extbackup prepare DEVICE --name NAME`)".into(),
            ];
        }
        self.drives
            .iter()
            .map(|d| {
                format!(
                    "drive {}: UUID {}, key file {}, mounted at {}; {}",
                    d.name,
                    d.uuid,
                    d.key_file.display(),
                    self.mount_point(d).display(),
                    history::describe(self.retention(d))
                )
            })
            .collect()
    }
}
