//! `SourceLock` against the real `flock(1)`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use syncer::{ErrorKind, SourceLock};

fn flock_nonblocking_succeeds(path: &std::path::Path) -> bool {
    Command::new("flock")
        .args(["-n", "-E", "99"])
        .arg(path)
        .arg("true")
        .status()
        .expect("flock(1) from util-linux")
        .success()
}

#[test]
fn held_by_flock_1_times_out_then_is_acquired_when_released() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("repo.lock");
    // One process that holds the lock through flock(1) on fd 9 and then becomes `sleep`,
    // so killing it releases the lock (no child keeps the descriptor).
    let mut holder = Command::new("sh")
        .args(["-c", "exec 9>>\"$0\"; flock 9; echo locked; exec sleep 60"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock(1) from util-linux");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");

    let start = Instant::now();
    let e = SourceLock::acquire(&path, Duration::from_millis(400)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LockTimeout, "{e:?}");
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(e.to_string().contains("repo.lock"), "{e}");

    holder.kill().unwrap();
    holder.wait().unwrap();
    let lock = SourceLock::acquire(&path, Duration::from_secs(5)).expect("released by the kernel");
    assert_eq!(lock.path(), path);
}

#[test]
fn our_lock_blocks_flock_1_until_dropped() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("created-if-missing.lock");
    let lock = SourceLock::acquire(&path, Duration::ZERO).expect("free lock");
    assert!(path.exists());
    assert!(
        !flock_nonblocking_succeeds(&path),
        "flock(1) got a held lock"
    );
    drop(lock);
    assert!(flock_nonblocking_succeeds(&path), "not released on drop");
}

#[test]
fn a_lock_file_in_a_missing_folder_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let e = SourceLock::acquire(&t.path().join("no/such/dir.lock"), Duration::ZERO).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other);
    assert!(e.to_string().contains("folder exists"), "{e}");
}
