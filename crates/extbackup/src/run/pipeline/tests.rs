//! Unit tests of the pipeline with mockall mocks: the order of operations, and of the
//! cleanup after a failure at every step.

use super::*;
use crate::config::Config;
use crate::drive::state::{RunRecord, RunResult};
use crate::run::host::HostError;
use crypt::{CryptError, LockMode, LockOutcome, LuksInfo, MappingStatus};
use mockall::Sequence;
use mounter::{FsckReport, MountError, MountInfo, MountOptions, UnmountReport};
use notifier::Outcome as MailOutcome;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use syncer::{SyncError, SyncOptions};

use crate::run::host::MockHost;
use crypt::MockCrypt;
use indicator::MockIndicator;
use mounter::MockMounter;
use notifier::MockNotifier;
use syncer::MockSyncer;

const UUID: &str = "0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab";
const DEV: &str = "/dev/by-uuid-test";
const MAPPED: &str = "/dev/mapper/extbackup-offsite-a";
const MAPPING: &str = "extbackup-offsite-a";

struct Fixture {
    dir: tempfile::TempDir,
    cfg: Config,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("offsite-a.key");
    std::fs::write(&key, [7u8; 64]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    // A real source: the syncer's guard runs before every backend, fakes and mocks too.
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/file"), "data").unwrap();
    let own = format!(
        r#"
source = "{d}/src"
[source_lock]
path = "{d}/src.lock"
timeout_secs = 5
[[hooks.before]]
name = "snapshot"
command = ["/bin/sh", "-c", "test ! -e {d}/fail-hook"]
[[hooks.after]]
name = "note"
command = ["/bin/sh", "-c", "echo \"$EXTBACKUP_DRIVE $EXTBACKUP_OUTCOME $EXTBACKUP_FAILED_STEP\" >> {d}/after.log; test ! -e {d}/fail-after"]
"#,
        d = dir.path().display(),
    );
    let cfg = config(dir.path(), &key, &own);
    Fixture { dir, cfg }
}

/// The fixtures' configuration: `own` (the sources, locks and hooks) with what they all
/// share: state, mounts and mail as files under `d`, no mount point required of a source,
/// and drive `offsite-a` whose key file is `key`.
fn config(d: &Path, key: &Path, own: &str) -> Config {
    // The mount point a real mount would cover (the drive's handle opens it).
    std::fs::create_dir_all(d.join("mnt/offsite-a")).unwrap();
    let text = format!(
        r#"
state_dir = "{d}/state"
mount_root = "{d}/mnt"
host = "nas"
{own}
[mail]
to = ["root@localhost"]
transport = {{ kind = "file", dir = "{d}/mail" }}
[policy]
require_source_mount_point = false
[[drive]]
name = "offsite-a"
uuid = "{UUID}"
key_file = "{k}"
"#,
        d = d.display(),
        k = key.display()
    );
    Config::parse(&text).unwrap()
}

fn luks() -> LuksInfo {
    LuksInfo {
        version: 2,
        uuid: UUID.into(),
        label: None,
        cipher: "aes-xts-plain64".into(),
        keyslots: vec![0],
    }
}

fn cerr(kind: crypt::ErrorKind) -> CryptError {
    CryptError::new(kind, "injected crypt failure")
}
fn merr(kind: mounter::ErrorKind) -> MountError {
    MountError::new(kind, "injected mount failure")
}

struct Mocks {
    seq: Sequence,
    crypt: MockCrypt,
    mounter: MockMounter,
    syncer: MockSyncer,
    notifier: MockNotifier,
    indicator: MockIndicator,
    host: MockHost,
    /// The fixture's folder: its `fail-after` file makes the `after` hook fail.
    dir: Option<PathBuf>,
}

impl Mocks {
    fn new() -> Self {
        let mut m = Self {
            seq: Sequence::new(),
            crypt: MockCrypt::new(),
            mounter: MockMounter::new(),
            syncer: MockSyncer::new(),
            notifier: MockNotifier::new(),
            indicator: MockIndicator::new(),
            host: MockHost::new(),
            dir: None,
        };
        m.crypt
            .expect_describe()
            .return_const("mock crypt".to_string());
        m.mounter
            .expect_describe()
            .return_const("mock mounter".to_string());
        m.syncer
            .expect_describe()
            .return_const("mock syncer".to_string());
        m.notifier
            .expect_describe()
            .return_const("mock notifier".to_string());
        m.indicator
            .expect_describe()
            .return_const("mock indicator".to_string());
        m
    }

    fn show(&mut self, want: State) {
        self.indicator
            .expect_show()
            .withf(move |s| *s == want)
            .times(1)
            .in_sequence(&mut self.seq)
            .returning(|_| Ok(()));
    }

    fn mail(&mut self, outcome: MailOutcome, step: Option<Step>) {
        let fail_after = self.dir.as_ref().map(|d| d.join("fail-after"));
        self.notifier
            .expect_notify()
            .withf(move |e| {
                // A failed before hook is named; a failed after hook is told beside the
                // run's own outcome.
                let names_hook = e
                    .error_chain
                    .iter()
                    .any(|l| l.contains("before hook \"snapshot\": exited with status 1"));
                let tells_after = e.details.iter().any(|d| d.contains("after hook \"note\""));
                e.outcome == outcome
                    && e.failed_step.as_deref() == step.map(|s| s.name())
                    && e.drive == "offsite-a"
                    && names_hook == (step == Some(Step::Hooks))
                    && fail_after
                        .as_ref()
                        .is_none_or(|p| p.exists() == tells_after)
            })
            .times(1)
            .in_sequence(&mut self.seq)
            .returning(|_| Ok(()));
        // Mail spooled by earlier runs goes only after this run's own outcome.
        self.notifier
            .expect_flush_spool()
            .times(1)
            .in_sequence(&mut self.seq)
            .returning(|| Ok(0));
    }

    fn into_backends(self) -> Backends {
        Backends {
            indicator: Box::new(self.indicator),
            crypt: Box::new(self.crypt),
            mounter: Box::new(self.mounter),
            syncer: Box::new(self.syncer),
            notifier: Some(Box::new(self.notifier)),
            host: Box::new(self.host),
        }
    }

    /// The drive is ours: its header and its key file check out (asked in any order, any
    /// number of times).
    fn identified(&mut self) {
        self.identified_with_key(Ok(0));
    }

    /// The drive's header is ours; checking its key file answers `key` (a keyslot, or the
    /// kind of the failure).
    fn identified_with_key(&mut self, key: Result<u32, crypt::ErrorKind>) {
        self.crypt.expect_inspect().returning(|_| Ok(luks()));
        self.crypt
            .expect_verify_key_file()
            .returning(move |_, _| key.map_err(cerr));
    }

    /// Working shown, then one try at the run lock, in sequence, answering `answer()`.
    fn tries_run_lock(&mut self, answer: impl FnMut() -> Result<bool, HostError> + Send + 'static) {
        self.show(State::Working { progress: None });
        self.host
            .expect_try_lock_run()
            .times(1)
            .in_sequence(&mut self.seq)
            .returning(answer);
    }

    /// No mapping left open by an earlier run (asked in any order, any number of times).
    fn no_mapping_left(&mut self) {
        self.crypt
            .expect_status()
            .returning(|_| Ok(MappingStatus::Inactive));
    }

    /// One unlock of the drive as its mapping, in sequence, answering `answer()`.
    fn unlocks(
        &mut self,
        mut answer: impl FnMut() -> Result<PathBuf, CryptError> + Send + 'static,
    ) {
        self.crypt
            .expect_unlock()
            .withf(|d, _, n| d == Path::new(DEV) && n == MAPPING)
            .times(1)
            .in_sequence(&mut self.seq)
            .returning(move |_, _, _| answer());
    }

    /// One unmount of `mp`, in sequence: done at the first attempt, or busy unless `ok`.
    fn unmounts(&mut self, mp: &Path, ok: bool) {
        let mp = mp.to_owned();
        self.mounter
            .expect_unmount()
            .withf(move |p| p == mp)
            .times(1)
            .in_sequence(&mut self.seq)
            .returning(move |_| {
                if ok {
                    Ok(UnmountReport {
                        attempts: 1,
                        lazy: false,
                    })
                } else {
                    Err(merr(mounter::ErrorKind::Busy))
                }
            });
    }

    /// One close of the mapping in `mode`, in sequence: `outcome`, or busy when `None`.
    fn closes(&mut self, mode: LockMode, outcome: Option<LockOutcome>) {
        self.crypt
            .expect_lock()
            .withf(move |n, m| n == MAPPING && *m == mode)
            .times(1)
            .in_sequence(&mut self.seq)
            .returning(move |_, _| outcome.ok_or_else(|| cerr(crypt::ErrorKind::Busy)));
    }

    /// The source lock released, in sequence.
    fn releases_source_lock(&mut self) {
        self.host
            .expect_unlock_source()
            .times(1)
            .in_sequence(&mut self.seq)
            .return_const(());
    }

    /// The run lock released, in sequence.
    fn releases_run_lock(&mut self) {
        self.host
            .expect_unlock_run()
            .times(1)
            .in_sequence(&mut self.seq)
            .return_const(());
    }

    /// The end of a run that failed at `step`, in sequence: red, one failure mail, and the
    /// run lock released last when the run had taken it.
    fn ends_red(&mut self, step: Option<Step>, run_locked: bool) {
        self.show(State::Failure);
        self.mail(MailOutcome::Failure, step);
        if run_locked {
            self.releases_run_lock();
        }
    }
}

/// Expects the whole pipeline in order; `fail` makes that step fail and then expects the
/// cleanup of exactly what was done, in reverse, red, one mail, the run lock released last.
fn plan(fail: Option<Step>, f: &Fixture) -> Mocks {
    let mut m = Mocks::new();
    m.dir = Some(f.dir.path().to_owned());
    let mp = f.dir.path().join("mnt/offsite-a");
    let is = move |s: Step| fail == Some(s);
    let (mut run_locked, mut mapped, mut mounted, mut src_locked) = (false, false, false, false);

    m.crypt
        .expect_inspect()
        .withf(|d| d == Path::new(DEV))
        .times(1)
        .in_sequence(&mut m.seq)
        .returning(|_| Ok(luks()));
    m.crypt
        .expect_verify_key_file()
        .times(1)
        .in_sequence(&mut m.seq)
        .returning(move |_, _| {
            if is(Step::Identify) {
                Err(cerr(crypt::ErrorKind::WrongKey))
            } else {
                Ok(0)
            }
        });
    'steps: {
        if is(Step::Identify) {
            break 'steps;
        }
        m.tries_run_lock(move || {
            if is(Step::RunLock) {
                Err(HostError::new("injected lock failure"))
            } else {
                Ok(true)
            }
        });
        if is(Step::RunLock) {
            break 'steps;
        }
        run_locked = true;
        m.crypt
            .expect_status()
            .withf(|n| n == MAPPING)
            .times(1)
            .in_sequence(&mut m.seq)
            .returning(|_| Ok(MappingStatus::Inactive));
        m.unlocks(move || {
            if is(Step::Unlock) {
                Err(cerr(crypt::ErrorKind::Other))
            } else {
                Ok(MAPPED.into())
            }
        });
        if is(Step::Unlock) {
            break 'steps;
        }
        mapped = true;
        m.mounter
            .expect_fsck()
            .withf(|d| d == Path::new(MAPPED))
            .times(1)
            .in_sequence(&mut m.seq)
            .returning(move |_| {
                if is(Step::Fsck) {
                    Err(merr(mounter::ErrorKind::FsckFailed))
                } else {
                    Ok(FsckReport {
                        exit_code: 0,
                        fixed: false,
                        output: String::new(),
                    })
                }
            });
        if is(Step::Fsck) {
            break 'steps;
        }
        let mp2 = mp.clone();
        m.mounter
            .expect_mount()
            .withf(move |d, p, _| d == Path::new(MAPPED) && p == mp2)
            .times(1)
            .in_sequence(&mut m.seq)
            .returning(move |d, p, _| {
                if is(Step::Mount) {
                    Err(merr(mounter::ErrorKind::UnknownFilesystem))
                } else {
                    Ok(MountInfo {
                        source: d.into(),
                        target: p.into(),
                        fstype: "ext4".into(),
                    })
                }
            });
        if is(Step::Mount) {
            break 'steps;
        }
        m.host
            .expect_check_drive()
            .times(1)
            .in_sequence(&mut m.seq)
            .returning(|_, _| Ok(vec![]));
        mounted = true;
        m.host
            .expect_lock_source()
            .times(1)
            .in_sequence(&mut m.seq)
            .returning(move |_, _| {
                if is(Step::SourceLock) {
                    Err(HostError::new("injected: source lock still held"))
                } else {
                    Ok(())
                }
            });
        if is(Step::SourceLock) {
            break 'steps;
        }
        src_locked = true;
        if is(Step::Hooks) {
            std::fs::write(f.dir.path().join("fail-hook"), "").unwrap();
            break 'steps;
        }
        m.host
            .expect_tree_size()
            .times(2)
            .in_sequence(&mut m.seq)
            .returning(|p, _| Ok(if p.ends_with(DATA_DIR) { 0 } else { 1000 }));
        m.host
            .expect_free_space()
            .times(1)
            .in_sequence(&mut m.seq)
            .returning(move |_| Ok(if is(Step::FreeSpace) { 0 } else { 1 << 30 }));
        if is(Step::FreeSpace) {
            break 'steps;
        }
        m.syncer
            .expect_mirror()
            .times(1)
            .in_sequence(&mut m.seq)
            .returning(move |_, _, _, _| {
                if is(Step::Sync) {
                    Err(SyncError::new(syncer::ErrorKind::NoSpace, "injected"))
                } else {
                    Ok(SyncReport {
                        files_copied: 3,
                        bytes_copied: 300,
                        ..SyncReport::default()
                    })
                }
            });
        if is(Step::Sync) {
            break 'steps;
        }
        m.releases_source_lock();
        src_locked = false;
        let mp_rec = mp.clone();
        m.mounter
            .expect_mounted_at()
            .withf(move |p| p == mp_rec)
            .times(1)
            .in_sequence(&mut m.seq)
            .returning(|p| {
                Ok(Some(MountInfo {
                    source: MAPPED.into(),
                    target: p.into(),
                    fstype: "ext4".into(),
                }))
            });
        m.host
            .expect_record_on_drive()
            .withf(|_, r| r.files_copied == 3 && r.result == RunResult::Success)
            .times(1)
            .in_sequence(&mut m.seq)
            .returning(move |_, _| {
                if is(Step::Record) {
                    Err(HostError::new("injected: disk full"))
                } else {
                    Ok(())
                }
            });
        if is(Step::Record) {
            break 'steps;
        }
        m.unmounts(&mp, !is(Step::Unmount));
        if is(Step::Unmount) {
            // Still mounted: the close must not wait for it, it is deferred.
            m.closes(LockMode::Deferred, Some(LockOutcome::Deferred));
            m.ends_red(fail, true);
            return m;
        }
        mounted = false;
        m.closes(
            LockMode::Normal,
            (!is(Step::Close)).then_some(LockOutcome::Closed),
        );
        if is(Step::Close) {
            break 'steps;
        }
        m.show(State::Success);
        m.mail(MailOutcome::Success, None);
        m.releases_run_lock();
        return m;
    }
    // Cleanup after `fail`, in reverse order of what was done.
    if src_locked {
        m.releases_source_lock();
    }
    if mounted {
        m.unmounts(&mp, true);
    }
    if mapped {
        if is(Step::Close) {
            // The normal close failed as busy: cleanup retries it deferred.
            m.closes(LockMode::Normal, None);
            m.closes(LockMode::Deferred, Some(LockOutcome::Deferred));
        } else {
            m.closes(LockMode::Normal, Some(LockOutcome::Closed));
        }
    }
    m.ends_red(fail, run_locked);
    m
}

fn opts() -> RunOptions {
    RunOptions {
        by_uuid_dir: "/dev".into(),
        ..RunOptions::default()
    }
}

fn run_with(f: &Fixture, m: Mocks, target: Target) -> RunOutcome {
    let mut p = Pipeline::new(&f.cfg, m.into_backends(), LogCapture::default(), opts());
    let out = p.run(&target);
    // Dropping the mocks checks that every expected call happened.
    drop(p);
    out
}

/// Runs the pipeline on `DEV` with backends `b`.
fn run_on_dev(f: &Fixture, b: Backends) -> RunOutcome {
    Pipeline::new(&f.cfg, b, LogCapture::default(), opts()).run(&Target::Device(DEV.into()))
}

/// Like [`run_on_dev`], with the log captured as a run's own is (for its mail): the outcome
/// and the log.
fn run_logged(f: &Fixture, b: Backends) -> (RunOutcome, LogCapture) {
    let log = LogCapture::default();
    let sub =
        tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), log.layer());
    let out = tracing::subscriber::with_default(sub, || {
        Pipeline::new(&f.cfg, b, log.clone(), opts()).run(&Target::Device(DEV.into()))
    });
    (out, log)
}

/// Asserts that `out` is a failure at `step` whose message contains `needle`.
#[track_caller]
fn assert_failed_at(out: &RunOutcome, want: Step, needle: &str) {
    match out {
        RunOutcome::Failed { step, error, .. } => {
            assert_eq!(*step, want);
            assert!(error.to_string().contains(needle), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn success_runs_every_step_in_order_and_shows_green_only_after_close() {
    let f = fixture();
    let out = run_with(&f, plan(None, &f), Target::Device(DEV.into()));
    match out {
        RunOutcome::Done(r) => assert_eq!(r.files_copied, 3),
        other => panic!("expected success, got {other:?}"),
    }
    let st = StateDir::new(&f.cfg.state_dir).drive("offsite-a").unwrap();
    assert_eq!(st.last_success.unwrap().bytes_copied, 300);
    assert!(st.last_failure.is_none());
    assert!(StateDir::new(&f.cfg.state_dir).current().is_none());
}

#[test]
fn failure_at_every_step_undoes_in_reverse_shows_red_and_mails_once() {
    for step in Step::ALL {
        let f = fixture();
        let out = run_with(&f, plan(Some(step), &f), Target::Device(DEV.into()));
        match out {
            RunOutcome::Failed { step: s, drive, .. } => {
                assert_eq!(s, step);
                assert_eq!(drive, "offsite-a");
            }
            other => panic!("failure at {step}: expected Failed, got {other:?}"),
        }
        let st = StateDir::new(&f.cfg.state_dir).drive("offsite-a").unwrap();
        let fail = st.last_failure.expect("failure recorded");
        assert_eq!(fail.failed_step.as_deref(), Some(step.name()));
        assert!(st.last_success.is_none(), "failure at {step}");
        // The after hooks run for every run that took the run lock, told the outcome.
        let after = std::fs::read_to_string(f.dir.path().join("after.log")).unwrap_or_default();
        if step > Step::RunLock {
            assert_eq!(after, format!("offsite-a failure {}\n", step.name()));
        } else {
            assert_eq!(after, "", "failure at {step}");
        }
    }
}

#[test]
fn a_failing_after_hook_is_reported_and_the_run_stays_a_success() {
    let f = fixture();
    std::fs::write(f.dir.path().join("fail-after"), "").unwrap();
    // `plan` expects the success mail to carry the after hook's failure.
    let out = run_with(&f, plan(None, &f), Target::Device(DEV.into()));
    assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
    let after = std::fs::read_to_string(f.dir.path().join("after.log")).unwrap();
    assert_eq!(after, "offsite-a success \n");
    let st = StateDir::new(&f.cfg.state_dir).drive("offsite-a").unwrap();
    assert!(st.last_success.is_some() && st.last_failure.is_none());
}

#[test]
fn uuid_not_configured_touches_nothing() {
    let f = fixture();
    let m = Mocks::new();
    // No expectation: any crypt, mount, indicator, host or mail call (a spool flush
    // included) panics.
    let out = run_with(
        &f,
        m,
        Target::Uuid("11111111-2222-4333-8444-555555555555".into()),
    );
    assert!(matches!(out, RunOutcome::NotOurs(_)), "{out:?}");
}

#[test]
fn device_with_a_foreign_luks_uuid_is_not_ours_and_may_show_attention() {
    let mut f = fixture();
    f.cfg.policy.attention_on_unknown_drive = true;
    let mut m = Mocks::new();
    m.crypt.expect_inspect().times(1).returning(|_| {
        Ok(LuksInfo {
            uuid: "99999999-2222-4333-8444-555555555555".into(),
            ..luks()
        })
    });
    m.show(State::Attention);
    let out = run_with(&f, m, Target::Device(DEV.into()));
    assert!(matches!(out, RunOutcome::NotOurs(_)), "{out:?}");
}

#[test]
fn header_uuid_differing_from_the_udev_uuid_fails_identify() {
    let f = fixture();
    let mut m = Mocks::new();
    m.crypt
        .expect_inspect()
        .withf(|d| d == Path::new("/dev").join(UUID))
        .times(1)
        .returning(|_| {
            Ok(LuksInfo {
                uuid: "99999999-2222-4333-8444-555555555555".into(),
                ..luks()
            })
        });
    m.ends_red(Some(Step::Identify), false);
    let out = run_with(&f, m, Target::Uuid(UUID.to_uppercase()));
    assert_failed_at(&out, Step::Identify, "not the configured");
}

#[test]
fn a_second_drive_waits_for_the_run_lock_showing_attention() {
    let f = fixture();
    let mut m = Mocks::new();
    m.identified();
    m.tries_run_lock(|| Ok(false));
    m.show(State::Attention);
    m.host
        .expect_wait_lock_run()
        .times(1)
        .in_sequence(&mut m.seq)
        .returning(|| Ok(()));
    m.show(State::Working { progress: None });
    m.no_mapping_left();
    // Then stop the run at unlock to keep the test short.
    m.unlocks(|| Err(cerr(crypt::ErrorKind::Other)));
    m.ends_red(Some(Step::Unlock), true);
    let out = run_with(&f, m, Target::Device(DEV.into()));
    assert_failed_at(&out, Step::Unlock, "");
}

/// Real fakes from the backend crates: progress reaches the indicator, and a broken
/// indicator does not fail the run.
mod with_fakes {
    use super::*;
    use crypt::fake::FakeCrypt;
    use indicator::fake::RecordingIndicator;
    use mounter::fake::FakeMounter;
    use notifier::fake::RecordingNotifier;
    use syncer::fake::FakeSyncer;

    /// A host that grants every lock and has room, counts the records written onto the
    /// drive, and fails the source lock with `source_lock_error` when set.
    #[derive(Default)]
    struct TestHost {
        records: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        source_lock_error: Option<fn() -> HostError>,
        /// Records `lock PATH` and `unlock`, with the number of copies made so far.
        events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        syncer: Option<FakeSyncer>,
        /// Measures trees for real (`host::tree_size`) instead of calling them empty.
        measure: bool,
        /// Free space on the drive; plenty when `None`.
        free: Option<u64>,
    }

    impl TestHost {
        fn note(&self, what: String) {
            let copies = self.syncer.as_ref().map_or(0, |s| s.calls().len());
            self.events
                .lock()
                .unwrap()
                .push(format!("{what} after {copies} copies"));
        }
    }
    impl Host for TestHost {
        fn try_lock_run(&mut self) -> Result<bool, HostError> {
            Ok(true)
        }
        fn wait_lock_run(&mut self) -> Result<(), HostError> {
            Ok(())
        }
        fn unlock_run(&mut self) {}
        fn lock_source(&mut self, p: &Path, _: Duration) -> Result<(), HostError> {
            self.note(format!("lock {}", p.file_name().unwrap().to_string_lossy()));
            self.source_lock_error.map_or(Ok(()), |e| Err(e()))
        }
        fn unlock_source(&mut self) {
            self.note("unlock".into());
        }
        fn free_space(&self, _: &Path) -> Result<u64, HostError> {
            Ok(self.free.unwrap_or(1 << 40))
        }
        fn tree_size(&self, p: &Path, ex: &syncer::Excludes) -> Result<u64, HostError> {
            if !self.measure {
                return Ok(0);
            }
            crate::run::host::tree_size(p, ex).map_err(|e| HostError::with("measuring", e))
        }
        fn check_drive(&mut self, _: &Path, _: &[String]) -> Result<Vec<String>, HostError> {
            Ok(vec![])
        }
        fn record_on_drive(&mut self, _: &Path, _: &RunRecord) -> Result<(), HostError> {
            self.records.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[allow(clippy::type_complexity)]
    fn setup(
        f: &Fixture,
    ) -> (
        Backends,
        RecordingIndicator,
        FakeCrypt,
        FakeMounter,
        RecordingNotifier,
        FakeSyncer,
    ) {
        let ind = RecordingIndicator::new();
        let crypt = FakeCrypt::new();
        crypt.add_volume(DEV, UUID, &f.cfg.drives[0].key_file);
        let mounter = FakeMounter::new();
        let notifier = RecordingNotifier::new();
        let syncer = FakeSyncer::new();
        let b = Backends {
            indicator: Box::new(ind.clone()),
            crypt: Box::new(crypt.clone()),
            mounter: Box::new(mounter.clone()),
            syncer: Box::new(syncer.clone()),
            notifier: Some(Box::new(notifier.clone())),
            host: Box::<TestHost>::default(),
        };
        (b, ind, crypt, mounter, notifier, syncer)
    }

    #[test]
    fn progress_reaches_the_indicator_between_working_and_success() {
        let f = fixture();
        let (b, ind, crypt, mounter, notifier, _s) = setup(&f);
        let mut seen = vec![];
        let mut p = Pipeline::new(&f.cfg, b, LogCapture::default(), opts())
            .on_progress(|pr| seen.push(pr.fraction));
        let out = p.run(&Target::Device(DEV.into()));
        drop(p);
        assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        assert_eq!(seen, vec![Some(0.5), Some(1.0)]);
        assert_eq!(
            ind.states(),
            vec![
                State::Working { progress: None },
                State::Working {
                    progress: Some(0.5)
                },
                State::Working {
                    progress: Some(1.0)
                },
                State::Success
            ]
        );
        assert!(crypt.active().is_empty());
        assert_eq!(
            mounter.calls().last().unwrap(),
            &format!("unmount {}", f.dir.path().join("mnt/offsite-a").display())
        );
        let ev = notifier.events();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].outcome, MailOutcome::Success);
    }

    /// What a SIGKILLed run leaves: the mapping open and (with a mounter) its filesystem
    /// mounted.
    fn left_by_a_killed_run(f: &Fixture, crypt: &FakeCrypt, mounter: Option<&FakeMounter>) {
        crypt
            .unlock(
                Path::new(DEV),
                &f.cfg.drives[0].key_file,
                "extbackup-offsite-a",
            )
            .unwrap();
        if let Some(m) = mounter {
            let mp = f.dir.path().join("mnt/offsite-a");
            m.mount(Path::new(DEV), &mp, &MountOptions::default())
                .unwrap();
        }
    }

    #[test]
    fn a_mapping_left_open_and_mounted_by_a_killed_run_is_closed_first() {
        let f = fixture();
        let (b, ind, crypt, mounter, _n, _s) = setup(&f);
        let mp = f.dir.path().join("mnt/offsite-a");
        left_by_a_killed_run(&f, &crypt, Some(&mounter));
        let out = run_on_dev(&f, b);
        assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        let mp = mp.display();
        let calls = mounter.calls();
        let dev = Path::new(DEV).display();
        assert_eq!(
            calls,
            vec![
                format!("mount {dev}"),
                format!("unmount {mp}"),
                format!("fsck {dev}"),
                format!("mount {dev}"),
                format!("unmount {mp}"),
            ]
        );
        let c = crypt.calls();
        let first_lock = c
            .iter()
            .position(|x| x == "lock extbackup-offsite-a")
            .unwrap();
        let second_unlock = c.iter().rposition(|x| x.starts_with("unlock")).unwrap();
        assert!(
            first_lock < second_unlock,
            "closed before unlocking again: {c:?}"
        );
        assert!(crypt.active().is_empty());
        assert_eq!(ind.last(), Some(State::Success));
    }

    #[test]
    fn a_busy_filesystem_left_by_a_killed_run_is_named_as_such() {
        let f = fixture();
        let (b, ind, crypt, mounter, _n, _s) = setup(&f);
        left_by_a_killed_run(&f, &crypt, Some(&mounter));
        // The killed run's rsync still holds the filesystem.
        mounter.set_busy(true);
        let out = run_on_dev(&f, b);
        assert_failed_at(
            &out,
            Step::Unlock,
            "left by an interrupted run, is still in use",
        );
        assert_failed_at(&out, Step::Unlock, "fuser -vm");
        assert_eq!(ind.last(), Some(State::Failure));
        // Busy mapping, filesystem already gone.
        let f = fixture();
        let (b, _ind, crypt, _m, _n, _s) = setup(&f);
        left_by_a_killed_run(&f, &crypt, None);
        crypt.set_busy("extbackup-offsite-a", true);
        let out = run_on_dev(&f, b);
        assert_failed_at(
            &out,
            Step::Unlock,
            "the LUKS mapping extbackup-offsite-a, left by",
        );
    }

    /// A copy during which the drive is unmounted behind our back (a lazy unmount).
    struct UnmountingSyncer(FakeMounter, PathBuf);
    impl Syncer for UnmountingSyncer {
        fn mirror(
            &self,
            _: &Path,
            _: &Path,
            _: &SyncOptions,
            _: &mut dyn FnMut(Progress),
        ) -> Result<SyncReport, SyncError> {
            self.0.unmount(&self.1).unwrap();
            Ok(SyncReport::default())
        }
        fn describe(&self) -> String {
            "unmounting".into()
        }
    }

    #[test]
    fn a_host_failure_keeps_its_whole_cause_chain_into_the_mail() {
        let f = fixture();
        let (mut b, _ind, _crypt, _m, notifier, _s) = setup(&f);
        // The source lock fails with a cause that has a cause.
        b.host = Box::new(TestHost {
            source_lock_error: Some(|| {
                let io = std::io::Error::other("flock: resource temporarily unavailable");
                HostError::with(
                    "taking the source lock",
                    HostError::with("the source lock is held by another job", io),
                )
            }),
            ..TestHost::default()
        });
        let out = run_on_dev(&f, b);
        let RunOutcome::Failed { step, error, .. } = out else {
            panic!("{out:?}")
        };
        assert_eq!(step, Step::SourceLock);
        assert_eq!(
            error.chain(),
            vec![
                "taking the source lock",
                "the source lock is held by another job",
                "flock: resource temporarily unavailable"
            ]
        );
        assert_eq!(notifier.events()[0].error_chain.len(), 3);
    }

    #[test]
    fn the_run_record_is_not_written_when_the_drive_is_no_longer_mounted() {
        let f = fixture();
        let (mut b, ind, crypt, mounter, notifier, _s) = setup(&f);
        let records = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        b.host = Box::new(TestHost {
            records: records.clone(),
            ..TestHost::default()
        });
        let mp = f.dir.path().join("mnt/offsite-a");
        b.syncer = Box::new(UnmountingSyncer(mounter.clone(), mp));
        let out = run_on_dev(&f, b);
        assert_failed_at(&out, Step::Record, "no longer mounted");
        assert_eq!(records.load(Ordering::SeqCst), 0, "no record written");
        assert_eq!(ind.last(), Some(State::Failure));
        assert!(crypt.active().is_empty(), "closed");
        assert_eq!(notifier.events().len(), 1);
    }

    #[test]
    fn a_state_file_that_cannot_be_written_is_a_failure_with_red_and_mail() {
        let f = fixture();
        let (b, ind, crypt, _m, notifier, _s) = setup(&f);
        // drives/NAME.json is a folder: the run's record cannot be written.
        std::fs::create_dir_all(f.dir.path().join("state/drives/offsite-a.json")).unwrap();
        let out = run_on_dev(&f, b);
        assert_failed_at(&out, Step::Record, "state directory");
        assert_eq!(ind.last(), Some(State::Failure));
        assert!(
            !ind.states().contains(&State::Success),
            "{:?}",
            ind.states()
        );
        assert!(
            crypt.active().is_empty(),
            "the drive is closed all the same"
        );
        let ev = notifier.events();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].outcome, MailOutcome::Failure);
        assert_eq!(ev[0].failed_step.as_deref(), Some("record"));
    }

    #[test]
    fn a_state_dir_that_is_a_file_fails_at_the_run_lock_with_red_and_mail() {
        let f = fixture();
        let (mut b, ind, crypt, mounter, notifier, syncer) = setup(&f);
        std::fs::write(&f.cfg.state_dir, "not a folder").unwrap();
        b.host = Box::new(crate::run::host::SystemHost::new(
            StateDir::new(&f.cfg.state_dir).run_lock_path(),
        ));
        let out = run_on_dev(&f, b);
        assert_failed_at(&out, Step::RunLock, "state directory");
        assert_eq!(ind.last(), Some(State::Failure));
        assert!(crypt.active().is_empty() && mounter.calls().is_empty());
        assert!(syncer.calls().is_empty(), "nothing copied");
        let ev = notifier.events();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].failed_step.as_deref(), Some("run lock"));
    }

    #[test]
    fn a_broken_indicator_is_logged_and_the_run_still_succeeds() {
        let f = fixture();
        let (b, ind, crypt, _m, notifier, _s) = setup(&f);
        ind.fail_with(Some(indicator::ErrorKind::NotFound));
        let (out, log) = run_logged(&f, b);
        assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        assert_eq!(ind.last(), Some(State::Success));
        assert!(crypt.active().is_empty());
        assert!(log.tail(100).contains("indicator"), "{}", log.tail(100));
        assert_eq!(notifier.events().len(), 1);
    }

    #[test]
    fn failed_sync_mail_names_the_step_and_carries_chain_and_log() {
        let f = fixture();
        let (b, ind, crypt, mounter, notifier, syncer) = setup(&f);
        syncer.fail_with(Some(syncer::ErrorKind::PartialTransfer));
        let (out, _log) = run_logged(&f, b);
        assert!(matches!(
            out,
            RunOutcome::Failed {
                step: Step::Sync,
                ..
            }
        ));
        assert_eq!(ind.last(), Some(State::Failure));
        assert!(crypt.active().is_empty(), "closed after the failure");
        assert!(mounter.calls().iter().any(|c| c.starts_with("unmount")));
        let ev = notifier.events();
        assert_eq!(ev.len(), 1, "exactly one mail");
        assert_eq!(ev[0].subject(), "extbackup: offsite-a FAILED at sync");
        assert!(ev[0]
            .error_chain
            .iter()
            .any(|l| l.contains("fake syncer told to fail")));
        assert!(
            ev[0].log_tail.contains("step 9/12: sync"),
            "{}",
            ev[0].log_tail
        );
    }

    /// Two named sources with excludes and locks: `a-docs` (one file) and `b-photos`
    /// (photos, a big excluded cache and `*.tmp` files).
    fn two_sources(history: bool) -> Fixture {
        let f = fixture();
        let d = f.dir.path();
        for (p, len) in [
            ("docs/letter.txt", 10),
            ("photos/2024/a.jpg", 20_000),
            ("photos/2024/a.jpg.tmp", 1),
            ("photos/cache/thumbs.db", 400_000),
        ] {
            let p = d.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, vec![b'x'; len]).unwrap();
        }
        let own = format!(
            r#"
history = {history}
[sources.a-docs]
path = "{d}/docs"
lock = {{ path = "{d}/docs.lock" }}
[sources.b-photos]
path = "{d}/photos"
exclude = ["*.tmp", "/cache/"]
lock = {{ path = "{d}/photos.lock", timeout_secs = 5 }}
[[hooks.before]]
name = "env"
command = ["/bin/sh", "-c", "printf %s \"$EXTBACKUP_SOURCES\" > {d}/sources.env; test -z \"$EXTBACKUP_SOURCE\""]
"#,
            d = d.display(),
        );
        Fixture {
            cfg: config(d, &f.cfg.drives[0].key_file, &own),
            ..f
        }
    }

    fn host_for(syncer: &FakeSyncer) -> TestHost {
        TestHost {
            syncer: Some(syncer.clone()),
            ..TestHost::default()
        }
    }

    #[test]
    fn each_source_goes_to_its_folder_under_its_own_lock_without_its_excludes() {
        let f = two_sources(false);
        let (mut b, _ind, crypt, _m, _n, syncer) = setup(&f);
        let host = host_for(&syncer);
        let events = host.events.clone();
        b.host = Box::new(host);
        let out = run_on_dev(&f, b);
        assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        let data = f.dir.path().join("mnt/offsite-a").join(DATA_DIR);
        assert!(data.join("a-docs/letter.txt").is_file());
        assert!(data.join("b-photos/2024/a.jpg").is_file());
        assert!(
            !data.join("b-photos/2024/a.jpg.tmp").exists(),
            "*.tmp excluded"
        );
        assert!(!data.join("b-photos/cache").exists(), "/cache/ excluded");
        assert_eq!(
            syncer.calls(),
            vec![
                (f.dir.path().join("docs"), data.join("a-docs")),
                (f.dir.path().join("photos"), data.join("b-photos")),
            ]
        );
        assert_eq!(
            *events.lock().unwrap(),
            [
                "lock docs.lock after 0 copies",
                "unlock after 1 copies",
                "lock photos.lock after 1 copies",
                "unlock after 2 copies",
            ],
            "each lock taken just before its copy and released after it"
        );
        let d = f.dir.path().display();
        assert_eq!(
            std::fs::read_to_string(f.dir.path().join("sources.env")).unwrap(),
            format!("a-docs {d}/docs\nb-photos {d}/photos"),
            "hooks get EXTBACKUP_SOURCES, not EXTBACKUP_SOURCE"
        );
        assert!(crypt.active().is_empty());
    }

    #[test]
    fn the_guard_refuses_one_source_by_name_and_its_lock_is_released() {
        let f = two_sources(false);
        // Only excluded files left: mirroring it would empty its folder on the drive.
        std::fs::remove_dir_all(f.dir.path().join("photos/2024")).unwrap();
        let (mut b, ind, crypt, _m, notifier, syncer) = setup(&f);
        let host = host_for(&syncer);
        let events = host.events.clone();
        b.host = Box::new(host);
        let out = run_on_dev(&f, b);
        assert_failed_at(&out, Step::Sync, "copying source \"b-photos\"");
        let RunOutcome::Failed { error, .. } = &out else {
            unreachable!()
        };
        assert!(error.chain().join(": ").contains("is empty"), "{error:?}");
        assert_eq!(
            syncer.calls().len(),
            1,
            "a-docs was copied, b-photos refused"
        );
        assert_eq!(
            events.lock().unwrap().last().map(String::as_str),
            Some("unlock after 1 copies")
        );
        assert_eq!(ind.last(), Some(State::Failure));
        assert!(crypt.active().is_empty());
        let chain = notifier.events()[0].error_chain.join(": ");
        assert!(chain.contains("b-photos"), "{chain}");
    }

    #[test]
    fn a_held_source_lock_fails_the_run_naming_its_source() {
        let f = two_sources(false);
        let (mut b, _ind, crypt, _m, _n, syncer) = setup(&f);
        b.host = Box::new(TestHost {
            source_lock_error: Some(|| HostError::new("injected: held by another job")),
            ..host_for(&syncer)
        });
        let out = run_on_dev(&f, b);
        assert_failed_at(&out, Step::Sync, "source \"a-docs\": taking its lock");
        assert!(syncer.calls().is_empty(), "nothing copied without the lock");
        assert!(crypt.active().is_empty());
    }

    /// The fake syncer, recording each copy's `link_dest`.
    struct LinkDestSyncer(
        FakeSyncer,
        std::sync::Arc<std::sync::Mutex<Vec<Option<PathBuf>>>>,
    );
    impl Syncer for LinkDestSyncer {
        fn mirror(
            &self,
            s: &Path,
            t: &Path,
            o: &SyncOptions,
            p: &mut dyn FnMut(Progress),
        ) -> Result<SyncReport, SyncError> {
            self.1.lock().unwrap().push(o.link_dest.clone());
            self.0.mirror(s, t, o, p)
        }
        fn describe(&self) -> String {
            "link-dest recorder".into()
        }
    }

    #[test]
    fn with_history_each_source_links_to_its_folder_in_the_previous_generation() {
        let f = two_sources(true);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        for _ in 0..2 {
            let (mut b, _ind, _c, _m, _n, syncer) = setup(&f);
            b.syncer = Box::new(LinkDestSyncer(syncer, seen.clone()));
            let out = run_on_dev(&f, b);
            assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        }
        let gens = syncer::generations::Generations::at(&f.dir.path().join("mnt/offsite-a"));
        let list = gens.list().unwrap();
        assert_eq!(list.len(), 2);
        let first = &list[0].path;
        assert_eq!(
            *seen.lock().unwrap(),
            [
                None,
                None,
                Some(first.join("a-docs")),
                Some(first.join("b-photos"))
            ]
        );
        assert!(list[1].path.join("b-photos/2024/a.jpg").is_file());
        assert!(!list[1].path.join("b-photos/cache").exists());
    }

    #[test]
    fn a_resumed_generation_keeps_only_the_configured_sources_folders() {
        let f = two_sources(true);
        let gens = f.dir.path().join("mnt/offsite-a/generations");
        let left = gens.join("2020-01-01T000000Z.incomplete");
        for p in ["old-tree/x", "a-docs/letter.txt", "c-removed/y"] {
            std::fs::create_dir_all(left.join(p).parent().unwrap()).unwrap();
            std::fs::write(left.join(p), "left by an interrupted run").unwrap();
        }
        let (b, _ind, _c, _m, notifier, _s) = setup(&f);
        let out = run_on_dev(&f, b);
        assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        let newest = syncer::generations::Generations::at(gens.parent().unwrap())
            .newest()
            .unwrap()
            .unwrap();
        let mut names: Vec<_> = std::fs::read_dir(&newest.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a-docs", "b-photos"]);
        let details = notifier.events()[0].details.join("\n");
        assert!(details.contains("drops c-removed"), "{details}");
    }

    #[test]
    fn progress_over_two_sources_is_of_the_whole_sync() {
        let f = two_sources(false);
        let (b, _ind, _c, _m, _n, _s) = setup(&f);
        let mut seen = vec![];
        let out = Pipeline::new(&f.cfg, b, LogCapture::default(), opts())
            .on_progress(|p| seen.push((p.bytes, p.fraction)))
            .run(&Target::Device(DEV.into()));
        assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        // The fake reports half way (0 bytes) and done per source: a-docs' 10 bytes, then
        // b-photos' 20,000 on top of them.
        assert_eq!(
            seen,
            [
                (0, Some(0.25)),
                (10, Some(0.5)),
                (10, Some(0.75)),
                (20_010, Some(1.0))
            ]
        );
    }

    #[test]
    fn the_free_space_check_counts_only_what_will_be_copied() {
        let f = two_sources(false);
        let measure = |free| {
            let (mut b, _ind, _c, _m, _n, syncer) = setup(&f);
            b.host = Box::new(TestHost {
                measure: true,
                free: Some(free),
                ..host_for(&syncer)
            });
            run_on_dev(&f, b)
        };
        // The sources hold about 420 KB, of which the excludes leave about 24 KB (with
        // folders): 200 KB free is enough, 8 KB is not.
        let out = measure(200_000);
        assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
        let data = f.dir.path().join("mnt/offsite-a").join(DATA_DIR);
        std::fs::remove_dir_all(&data).unwrap();
        assert_failed_at(&measure(8_000), Step::FreeSpace, "no space on the drive");
    }
}

#[test]
fn a_cancelled_run_stops_before_the_next_step_and_undoes_what_was_done() {
    static CANCEL: AtomicBool = AtomicBool::new(false);
    let f = fixture();
    let mut m = Mocks::new();
    m.identified();
    m.tries_run_lock(|| Ok(true));
    m.no_mapping_left();
    m.unlocks(|| {
        // The signal arrives while unlocking.
        CANCEL.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(MAPPED.into())
    });
    // No fsck, no mount: straight to the cleanup.
    m.closes(LockMode::Normal, Some(LockOutcome::Closed));
    m.ends_red(Some(Step::Fsck), true);
    let mut p = Pipeline::new(
        &f.cfg,
        m.into_backends(),
        LogCapture::default(),
        RunOptions {
            cancel: Some(&CANCEL),
            ..opts()
        },
    );
    let out = p.run(&Target::Device(DEV.into()));
    drop(p);
    assert_failed_at(&out, Step::Fsck, "stopped by a signal");
}

#[test]
fn a_device_that_cannot_be_read_is_recorded_inside_the_state_dir_only() {
    let f = fixture();
    let outside = tempfile::tempdir().unwrap();
    let dev = outside.path().join("sdz1");
    let mut m = Mocks::new();
    m.crypt
        .expect_inspect()
        .times(1)
        .returning(|_| Err(cerr(crypt::ErrorKind::NotFound)));
    m.show(State::Failure);
    let want = dev.display().to_string();
    m.notifier
        .expect_notify()
        .withf(move |e| e.drive == want && e.failed_step.as_deref() == Some("identify"))
        .times(1)
        .returning(|_| Ok(()));
    m.notifier.expect_flush_spool().returning(|| Ok(0));
    let out = run_with(&f, m, Target::Device(dev.clone()));
    assert!(
        matches!(
            out,
            RunOutcome::Failed {
                step: Step::Identify,
                ..
            }
        ),
        "{out:?}"
    );
    // Nothing written beside the device (it was `/dev/sdz1.json` in /dev).
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "files written outside the state dir"
    );
    let runs = std::fs::read_to_string(f.cfg.state_dir.join("runs.jsonl")).unwrap();
    assert!(runs.contains("sdz1"), "{runs}");
}

/// `current.json` of another live run (pid 1 stands for it).
fn other_run_is_going_on(f: &Fixture) -> CurrentRun {
    let other = CurrentRun {
        drive: "offsite-b".into(),
        pid: 1,
        started: 1,
        step: "sync".into(),
    };
    StateDir::new(&f.cfg.state_dir).set_current(&other).unwrap();
    other
}

#[test]
fn a_run_failing_at_identify_leaves_the_running_backups_status_alone() {
    let f = fixture();
    let other = other_run_is_going_on(&f);
    let mut m = Mocks::new();
    m.identified_with_key(Err(crypt::ErrorKind::WrongKey));
    m.ends_red(Some(Step::Identify), false);
    let out = run_with(&f, m, Target::Device(DEV.into()));
    assert!(matches!(out, RunOutcome::Failed { .. }), "{out:?}");
    assert_eq!(StateDir::new(&f.cfg.state_dir).current(), Some(other));
}

#[test]
fn a_drive_waiting_for_the_run_lock_does_not_claim_to_be_the_current_run() {
    let f = fixture();
    let other = other_run_is_going_on(&f);
    let mut m = Mocks::new();
    m.identified();
    m.indicator.expect_show().returning(|_| Ok(()));
    m.host.expect_try_lock_run().returning(|| Ok(false));
    let state = StateDir::new(&f.cfg.state_dir);
    m.host.expect_wait_lock_run().times(1).returning(move || {
        // While we wait, `extbackup status` must still show the run that holds the lock.
        assert_eq!(state.current(), Some(other.clone()));
        Err(HostError::new("injected: interrupted while waiting"))
    });
    m.notifier.expect_notify().returning(|_| Ok(()));
    m.notifier.expect_flush_spool().returning(|| Ok(0));
    let out = run_with(&f, m, Target::Device(DEV.into()));
    assert!(
        matches!(
            out,
            RunOutcome::Failed {
                step: Step::RunLock,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        StateDir::new(&f.cfg.state_dir).current().map(|c| c.drive),
        Some("offsite-b".to_string())
    );
}

#[test]
fn only_a_wrong_key_is_called_a_wrong_key() {
    for (kind, wrong_key) in [
        (crypt::ErrorKind::WrongKey, true),
        (crypt::ErrorKind::NotFound, false),
        (crypt::ErrorKind::Other, false),
    ] {
        let f = fixture();
        let mut m = Mocks::new();
        m.identified_with_key(Err(kind));
        m.ends_red(Some(Step::Identify), false);
        match run_with(&f, m, Target::Device(DEV.into())) {
            RunOutcome::Failed { step, error, .. } => {
                assert_eq!(step, Step::Identify);
                let msg = error.to_string();
                assert_eq!(
                    msg.contains("does not unlock"),
                    wrong_key,
                    "{kind:?}: {msg}"
                );
                assert!(
                    error
                        .chain()
                        .iter()
                        .any(|l| l.contains("injected crypt failure")),
                    "{:?}",
                    error.chain()
                );
            }
            other => panic!("{kind:?}: {other:?}"),
        }
    }
}

/// A monitoring endpoint that accepts connections and never answers.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let held: Vec<_> = l.incoming().collect();
        drop(held);
    });
    url
}

#[test]
fn a_dead_ping_endpoint_never_fails_a_run_and_the_textfile_tells_each_outcome() {
    for fail in [None, Some(Step::Sync)] {
        let mut f = fixture();
        let prom = f.dir.path().join("metrics/extbackup.prom");
        std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
        f.cfg.monitor = Config::parse(&format!(
            "source = \"/srv\"\n[monitor]\nping_url = \"{}\"\ntimeout_secs = 1\ntextfile = \"{}\"\n",
            dead_endpoint(),
            prom.display()
        ))
        .unwrap()
        .monitor;
        let out = run_with(&f, plan(fail, &f), Target::Device(DEV.into()));
        let text = std::fs::read_to_string(&prom).unwrap();
        match fail {
            None => {
                assert!(matches!(out, RunOutcome::Done(_)), "{out:?}");
                assert!(
                    text.contains("extbackup_last_run_success{drive=\"offsite-a\"} 1\n"),
                    "{text}"
                );
                assert!(
                    text.contains("extbackup_last_run_bytes_copied{drive=\"offsite-a\"} 300\n"),
                    "{text}"
                );
                assert!(
                    text.contains("extbackup_last_success_timestamp_seconds{drive=\"offsite-a\"} "),
                    "{text}"
                );
            }
            Some(step) => {
                assert_failed_at(&out, step, "");
                assert!(
                    text.contains("extbackup_last_run_success{drive=\"offsite-a\"} 0\n"),
                    "{text}"
                );
                assert!(
                    !text.contains("extbackup_last_success_timestamp_seconds{"),
                    "{text}"
                );
            }
        }
        assert!(
            text.contains("# TYPE extbackup_last_run_duration_seconds gauge\n"),
            "{text}"
        );
    }
}

#[test]
fn a_run_pings_start_then_fail_with_the_log_tail() {
    let (url, seen) = crate::run::monitor::tests::server(true);
    let mut f = fixture();
    f.cfg.monitor = Config::parse(&format!(
        "source = \"/srv\"\n[monitor]\nping_url = \"{url}/{{drive}}\"\n"
    ))
    .unwrap()
    .monitor;
    let (out, _log) = run_logged(&f, plan(Some(Step::Sync), &f).into_backends());
    assert_failed_at(&out, Step::Sync, "");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].1, "/offsite-a/start");
    assert_eq!(seen[1].1, "/offsite-a/fail");
    assert!(seen[1].2.contains("step sync failed"), "{}", seen[1].2);
}
