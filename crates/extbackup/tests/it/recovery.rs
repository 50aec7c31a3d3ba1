//! Recovery on the host: the recovery passphrase, `mount`/`unmount`, `restore`, `verify`,
//! with the loopback-test crypt backend (real loop devices, real ext4, real rsync). The
//! same on real dm-crypt: `vm_recovery_*` in `vm.rs`.

use crate::support::{
    copy_on, flip_one_byte_keeping_mtime, meta_snapshot, mounted_under, root_or_skip_here,
    zero_start, World,
};
use crypt::{Crypt, LockMode};
use std::fs;
use std::process::Command;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Opens the drive with its key file outside the binary, mounted read-write at `mp`, runs
/// `f` on the mount, and closes it again.
fn with_drive_rw(w: &World, dev: &std::path::Path, f: impl FnOnce(&std::path::Path)) {
    let c = w.check_crypt();
    let mapped = c.unlock(dev, &w.path("keys/t1.key"), "check-rw").unwrap();
    let mp = w.path("rw");
    fs::create_dir_all(&mp).unwrap();
    crate::support::sh(Command::new("mount").arg(&mapped).arg(&mp));
    f(&mp);
    crate::support::sh(Command::new("umount").arg(&mp));
    c.lock("check-rw", LockMode::Normal).unwrap();
}

#[test]
fn recovery_mount_restore_and_verify_on_loop_devices() {
    let Some((w, lo)) = World::blank(64) else {
        return;
    };
    std::os::unix::fs::symlink("../a.txt", w.path("src/sub/link")).unwrap();
    let dev = lo.dev.to_str().unwrap();
    w.prepare(&lo.dev, "t1");
    assert_eq!(w.run(dev).status.code(), Some(0));
    let mails = w.subjects().len();

    // status: a recovery passphrase, so no warning; never verified yet.
    let st = text(&w.cmd(&["status"]).stdout);
    assert!(!st.contains("WARNING"), "{st}");
    assert!(st.contains("last verify: never"), "{st}");

    // verify: a good copy is clean.
    let out = w.cmd(&["verify", "t1", "--device", dev, "--full"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(s.contains("no differences") && s.contains("(full)"), "{s}");
    assert!(
        mounted_under(w.dir.path()).is_empty(),
        "verify closed the drive"
    );

    // A wrong passphrase: a clear error, nothing opened or mounted.
    let out = w.mount_with_passphrase(dev, &[], "wrong passphrase!");
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("wrong passphrase") && e.contains("nothing was opened"),
        "{e}"
    );
    assert!(!e.contains(World::PASSPHRASE));
    assert!(mounted_under(w.dir.path()).is_empty());
    assert!(!w.path("state/loopback-crypt/extbackup-ro-t1").exists());

    // The right one: mounted read-only, equal to the source with metadata.
    let out = w.mount_with_passphrase(dev, &[], World::PASSPHRASE);
    assert_eq!(out.status.code(), Some(0));
    let mp = w.path("mnt/browse-t1");
    assert!(
        text(&out.stdout).contains("READ-ONLY"),
        "{}",
        text(&out.stdout)
    );
    let entry = mounter::mountinfo::read()
        .unwrap()
        .into_iter()
        .find(|m| m.target == mp)
        .expect("mounted at mnt/browse-t1");
    assert!(entry.has_option("ro"), "{entry:?}");
    assert_eq!(meta_snapshot(&copy_on(&mp)), meta_snapshot(&w.path("src")));
    assert!(
        fs::write(copy_on(&mp).join("new"), "x").is_err(),
        "read-only"
    );

    // A plug-in run of the drive does not start: 75, no red, no mail.
    let out = w.run(dev);
    assert_eq!(out.status.code(), Some(75));
    assert!(
        text(&out.stderr).contains("opened read-only for browsing"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("failure"), "no red");
    assert_eq!(w.subjects().len(), mails, "no mail");

    // restore of a sub-folder (through the browse mount) equals the source's.
    let to = w.path("restored");
    let out = w.cmd(&["restore", "t1", "sub", "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        meta_snapshot(&to.join("sub")),
        meta_snapshot(&w.path("src/sub"))
    );
    // Onto existing files without --overwrite: refused, nothing changed.
    fs::write(to.join("sub/c.txt"), "changed here\n").unwrap();
    fs::remove_file(to.join("sub/b.bin")).unwrap();
    let before = meta_snapshot(&to);
    let out = w.cmd(&["restore", "t1", "sub", "--to", to.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(
        e.contains("would be replaced") && e.contains("c.txt"),
        "{e}"
    );
    assert_eq!(meta_snapshot(&to), before, "nothing changed");
    // With --overwrite it is the source's again.
    let out = w.cmd(&[
        "restore",
        "t1",
        "sub",
        "--to",
        to.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        meta_snapshot(&to.join("sub")),
        meta_snapshot(&w.path("src/sub"))
    );
    // Not into the source, nor onto the drive.
    for bad in [w.path("src/sub/x"), copy_on(&mp).join("x")] {
        let out = w.cmd(&["restore", "t1", "a.txt", "--to", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "a usage error");
        assert!(text(&out.stderr).contains("refusing to restore into"));
    }
    assert!(!w.path("src/sub/x").exists());

    let out = w.cmd(&["unmount", "t1"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(mounted_under(w.dir.path()).is_empty(), "unmounted");
    assert!(!mp.exists(), "its folder is gone");

    // One byte changed on the drive, size and mtime kept: verify finds it, names it, exit 1.
    with_drive_rw(&w, &lo.dev, |m| {
        flip_one_byte_keeping_mtime(&copy_on(m).join("sub/b.bin"), 1234)
    });
    let out = w.cmd(&["verify", "t1", "--device", dev, "--full"]);
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(s.contains("differs in content (SHA-256): sub/b.bin"), "{s}");
    assert!(s.contains("1 difference(s)"), "{s}");
    let st = text(&w.cmd(&["status"]).stdout);
    assert!(
        st.contains("last verify:") && st.contains("1 difference(s)"),
        "{st}"
    );
    // A sync does not notice (same size and time): the point of verify.
    assert_eq!(w.run(dev).status.code(), Some(0));
    assert_eq!(
        w.cmd(&["verify", "t1", "--device", dev, "--full"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn recovery_passphrase_options_of_prepare_and_recovery_add() {
    let Some((w, lo)) = World::blank(16) else {
        return;
    };
    let dev = lo.dev.to_str().unwrap();

    // No terminal and no passphrase option: refused, naming the options; nothing touched.
    let before = fs::read(w.path("disk.img")).unwrap();
    let out = w.try_prepare(&lo.dev, "t1", &[]);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(
        e.contains("--recovery-passphrase-file") && e.contains("--no-recovery-passphrase"),
        "{e}"
    );
    assert!(fs::read(w.path("disk.img")).unwrap() == before, "untouched");
    assert!(!w.path("keys/t1.key").exists());

    // A passphrase too short is refused before anything is erased.
    let short = w.path("short");
    fs::write(&short, "abc\n").unwrap();
    let out = w.try_prepare(
        &lo.dev,
        "t1",
        &["--recovery-passphrase-file", short.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(fs::read(w.path("disk.img")).unwrap() == before, "untouched");

    // --no-recovery-passphrase: done, with a plain warning, in the output and in status.
    let out = w.try_prepare(&lo.dev, "t1", &["--no-recovery-passphrase"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("WARNING: no recovery passphrase"),
        "{}",
        text(&out.stdout)
    );
    let st = text(&w.cmd(&["status"]).stdout);
    assert!(st.contains("WARNING: no recovery passphrase"), "{st}");
    let out = w.mount_with_passphrase(dev, &[], World::PASSPHRASE);
    assert_eq!(out.status.code(), Some(1), "no passphrase slot yet");

    // recovery add: the slot is added (authorised by the key file), status is quiet.
    let pass = w.path("pass");
    fs::write(&pass, format!("{}\n", World::PASSPHRASE)).unwrap();
    let out = w.cmd(&[
        "recovery",
        "add",
        "t1",
        "--device",
        dev,
        "--recovery-passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let st = text(&w.cmd(&["status"]).stdout);
    assert!(!st.contains("WARNING"), "{st}");
    // It opens the drive; without a configuration too (the NAS is gone).
    fs::rename(&w.config, w.path("config.toml.away")).unwrap();
    let out = w.mount_with_passphrase(dev, &[], World::PASSPHRASE);
    // Without the configuration the backend is libcryptsetup, which finds no LUKS header
    // on a loopback-test image: the point here is that it asks nothing of the config.
    assert_ne!(out.status.code(), Some(2), "no configuration needed");
    fs::rename(w.path("config.toml.away"), &w.config).unwrap();
    let out = w.mount_with_passphrase(dev, &[], World::PASSPHRASE);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.cmd(&["unmount", "t1"]).status.code(), Some(0));
    assert_eq!(
        w.cmd(&["unmount", "t1"]).status.code(),
        Some(1),
        "not open any more"
    );
}

#[test]
fn recovery_kit_and_the_other_drives_copy_of_the_header_bring_a_zeroed_header_back() {
    if !root_or_skip_here() {
        return;
    }
    let w = World::new("loopback-test");
    let (l1, l2) = w.two_drives_backed_up(32);
    let (d1, d2) = (l1.dev.to_str().unwrap(), l2.dev.to_str().unwrap());

    // Each run stored the other drive's header backup on its drive.
    let out = w.cmd(&["mount", "t2", "--device", d2]);
    assert_eq!(out.status.code(), Some(0));
    let on_t2 = w.path("mnt/browse-t2/.extbackup/headers");
    let names: Vec<String> = fs::read_dir(&on_t2)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["t1.img"]);
    let from_t2 = w.path("t1-from-t2.img");
    fs::copy(on_t2.join("t1.img"), &from_t2).unwrap();
    assert_eq!(
        fs::read(&from_t2).unwrap(),
        fs::read(w.path("keys/t1.luks-header")).unwrap()
    );
    assert_eq!(w.cmd(&["unmount", "t2"]).status.code(), Some(0));

    // The kit: header backup and RESTORE.txt with the UUID; the key file only on request.
    let kit = w.path("kit");
    let out = w.recovery_kit("t1", d1, &kit, &[]);
    assert_eq!(out.status.code(), Some(0));
    let uuid = crypt_info_uuid(&w, &l1.dev);
    let restore = fs::read_to_string(kit.join("RESTORE-t1.txt")).unwrap();
    assert!(
        restore.contains(&uuid) && restore.contains("luksHeaderRestore"),
        "{restore}"
    );
    assert!(
        restore.contains("extbackup-t1") && restore.contains("mount -o ro"),
        "{restore}"
    );
    assert!(!kit.join("t1.key").exists());
    let kit2 = w.path("kit2");
    let out = w.recovery_kit("t1", d1, &kit2, &["--with-key-file"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("WARNING: this kit holds the key file"));
    assert_eq!(
        fs::read(kit2.join("t1.key")).unwrap(),
        fs::read(w.path("keys/t1.key")).unwrap()
    );

    let opens = || {
        let out = w.mount_with_passphrase(d1, &[], World::PASSPHRASE);
        let ok = out.status.code() == Some(0);
        if ok {
            assert_eq!(w.cmd(&["unmount", "t1"]).status.code(), Some(0));
        }
        ok
    };
    let c = w.check_crypt();
    for backup in [kit.join("t1.luks-header"), from_t2] {
        zero_start(&l1.dev, 1 << 20);
        assert!(!opens(), "a zeroed header opens nothing");
        c.restore_header(&l1.dev, &backup).unwrap();
        assert!(opens(), "opens again after restoring {}", backup.display());
    }
}

fn crypt_info_uuid(w: &World, dev: &std::path::Path) -> String {
    w.check_crypt().inspect(dev).unwrap().uuid
}

/// Runs `extbackup ARGS` on a pseudo-terminal (`script`), typing `input`; the exit code
/// and everything the terminal showed.
fn on_a_terminal(w: &World, args: &[&str], input: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut line = format!(
        "{} --config {}",
        env!("CARGO_BIN_EXE_extbackup"),
        w.config.display()
    );
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let mut child = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("EXTBACKUP_ALLOW_LOOPBACK_CRYPT", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdin = child.stdin.take().unwrap();
    for l in input.lines() {
        // One answer per prompt: give the program time to ask.
        std::thread::sleep(std::time::Duration::from_millis(300));
        stdin.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("$ extbackup {} (on a terminal)\n{shown}", args.join(" "));
    (out.status.code(), shown)
}

#[test]
fn prepare_on_a_terminal_shows_a_generated_passphrase_once_and_it_opens_the_drive() {
    let Some((w, lo)) = World::blank(16) else {
        return;
    };
    let dev = lo.dev.to_str().unwrap();
    let keys = w.path("keys");
    let args = [
        "prepare",
        dev,
        "--name",
        "t1",
        "--keys-dir",
        keys.to_str().unwrap(),
    ];

    // Not confirmed: nothing is done (the erase was confirmed, but nothing was written yet).
    let before = fs::read(w.path("disk.img")).unwrap();
    let (code, shown) = on_a_terminal(&w, &args, "yes\nno\n");
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("not confirmed"), "{shown}");
    assert!(fs::read(w.path("disk.img")).unwrap() == before, "untouched");

    let (code, shown) = on_a_terminal(&w, &args, "yes\nstored\n");
    assert_eq!(code, Some(0), "{shown}");
    let is_pass = |l: &str| {
        let g: Vec<&str> = l.trim().split('-').collect();
        g.len() == 8
            && g.iter().all(|g| {
                g.len() == 4
                    && g.bytes()
                        .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c))
            })
    };
    let passes: Vec<&str> = shown.lines().filter(|l| is_pass(l)).collect();
    assert_eq!(passes.len(), 1, "shown exactly once: {shown}");
    let pass = passes[0].trim().to_string();
    // Only on the terminal: not in the state, the configuration or the keys folder.
    for f in ["config.toml", "state/recovery/t1.json"] {
        assert!(
            !fs::read_to_string(w.path(f)).unwrap().contains(&pass),
            "{f}"
        );
    }
    let out = w.mount_with_passphrase(dev, &[], &pass);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.cmd(&["unmount", "t1"]).status.code(), Some(0));
}
