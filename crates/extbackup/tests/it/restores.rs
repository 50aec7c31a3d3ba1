//! Restores keep everything: a sparse file comes back sparse through `extbackup restore`,
//! through the copy commands of docs/restore.md and of the recovery kit's RESTORE text;
//! `restore NAME /` writes where the docs say and says so; `mount` of a drive whose
//! journal needs replaying mounts it with `noload` and writes nothing. Loopback-test crypt
//! on real loop devices, real ext4, real rsync.

use crate::support::{copy_on, mounted_under, path_str, sh, World};
use crypt::Crypt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const SPARSE_LEN: u64 = 64 << 20;

/// A 64 MiB file holding 8 KiB of data at 1 MiB and 4 KiB at its end: the rest is a hole.
fn make_sparse(p: &Path) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::create(p).unwrap();
    f.set_len(SPARSE_LEN).unwrap();
    f.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
    f.write_all_at(&[9u8; 4096], SPARSE_LEN - 4096).unwrap();
}

/// Bytes allocated to `p` (st_blocks is in 512-byte units).
fn allocated(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}

/// `restored` equals `original` in content and is about as sparse: at most 1 MiB more
/// allocated (a filesystem's block and extent granularity), where a copy that wrote the
/// zeros allocates the whole 64 MiB.
fn assert_sparse_copy(original: &Path, restored: &Path, how: &str) {
    assert_eq!(
        fs::read(restored).unwrap(),
        fs::read(original).unwrap(),
        "{how}: same content"
    );
    let (a, b) = (allocated(original), allocated(restored));
    assert!(
        a < 1 << 20,
        "the source file is sparse itself ({a} bytes allocated)"
    );
    assert!(
        b <= a + (1 << 20),
        "{how}: {} allocated for the restored file, {a} for the source: the holes were \
         written as zeros",
        b
    );
}

/// The commands of `doc` that copy from a generation (`sudo rsync ... $G...`, `sudo cp ...
/// $G...`, also in a comment), without `sudo`.
fn copy_commands(doc: &str) -> Vec<String> {
    let mut out = vec![];
    for line in doc.lines() {
        let l = line
            .trim_start_matches(['#', ' ', '('])
            .trim_end_matches(')');
        let l = l.strip_prefix("without rsync: ").unwrap_or(l);
        if (l.starts_with("sudo rsync ") || l.starts_with("sudo cp ")) && l.contains("$G") {
            out.push(l.strip_prefix("sudo ").unwrap().to_string());
        }
    }
    out
}

#[test]
fn restore_keeps_a_64_mib_sparse_file_sparse_and_slash_lands_in_dir_itself() {
    let Some((w, lo)) = World::blank(64) else {
        return;
    };
    make_sparse(&w.path("src/sub/disk.img"));
    let dev = lo.dev.to_str().unwrap();
    w.prepare(&lo.dev, "t1");
    assert_eq!(w.run(dev).status.code(), Some(0));

    // `restore NAME /`: the copy's contents into DIR itself, as the docs say, and said so.
    let to = w.path("restored-all");
    let out = w.restore_from("t1", &lo.dev, "/", None, &to);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("restored everything (the whole copy, ")
            && said.contains(&format!(") into {}\n", to.display())),
        "{said}"
    );
    assert_eq!(fs::read(to.join("a.txt")).unwrap(), b"alpha\n");
    assert!(to.join("sub/c.txt").is_file(), "sub/ is in DIR itself");
    assert_sparse_copy(
        &w.path("src/sub/disk.img"),
        &to.join("sub/disk.img"),
        "restore /",
    );
    // A single file: DIR/basename, and the line names it and where it went.
    let to1 = w.path("restored-one");
    let out = w.restore_from("t1", &lo.dev, "sub/disk.img", None, &to1);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.starts_with("restored sub/disk.img (")
            && said.contains(&format!(") to {}\n", to1.join("disk.img").display())),
        "{said}"
    );
    assert_sparse_copy(
        &w.path("src/sub/disk.img"),
        &to1.join("disk.img"),
        "restore of one file",
    );

    // The copy commands of docs/restore.md and of the kit's RESTORE text, run as written
    // (without sudo: we are root) on the drive mounted as the docs mount it.
    let kit = w.path("kit");
    assert_eq!(w.recovery_kit("t1", dev, &kit, &[]).status.code(), Some(0));
    let kit_text = fs::read_to_string(kit.join("RESTORE-t1.txt")).unwrap();
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/restore.md"))
            .unwrap();
    let (doc_cmds, kit_cmds) = (copy_commands(&doc), copy_commands(&kit_text));
    assert!(
        doc_cmds.len() >= 3,
        "docs/restore.md: the rsync and cp commands: {doc_cmds:?}"
    );
    assert_eq!(kit_cmds.len(), 1, "the kit's rsync command: {kit_text}");
    let mp = w.path("browse");
    let out = w.mount_with_passphrase(dev, &["--at", path_str(&mp)], World::PASSPHRASE);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let g = copy_on(&mp);
    // Each text makes the destination's folder first (rsync makes only the last one).
    let mkdir = "sudo mkdir -p /srv/restored\n";
    assert!(doc.contains(mkdir) && kit_text.contains(mkdir));
    for (i, c) in doc_cmds.iter().chain(&kit_cmds).enumerate() {
        let dest = w.path(&format!("doc-{i}"));
        // The commands' placeholders: the folder, the destination, the kit's DATE.
        let c = c
            .replace("$G/photos", "$G/sub")
            .replace("$G/SOME/FOLDER", "$G/sub")
            .replace("/srv/restored/photos/", &format!("{}/sub/", dest.display()))
            .replace("/srv/restored/FOLDER/", &format!("{}/sub/", dest.display()))
            .replace("/srv/restored", path_str(&dest));
        let script = format!(
            "{}\n{c}",
            mkdir
                .trim()
                .trim_start_matches("sudo ")
                .replace("/srv/restored", path_str(&dest))
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("G", &g)
            .output()
            .unwrap();
        assert!(out.status.success(), "{c}: {}", text(&out.stderr));
        assert_sparse_copy(&w.path("src/sub/disk.img"), &dest.join("sub/disk.img"), &c);
    }
    assert_eq!(w.cmd(&["unmount", "t1"]).status.code(), Some(0));
    assert!(mounted_under(w.dir.path()).is_empty());
}

/// The ext4 features of the filesystem on `dev` (dumpe2fs -h).
fn features(dev: &Path) -> String {
    let out = sh(Command::new("dumpe2fs").arg("-h").arg(dev));
    out.lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap_or_default()
        .to_string()
}

/// The drive's filesystem (loopback-test: 1 MiB into the image) on a loop device of its
/// own for `f`, not mounted.
fn with_inner_fs<T>(dev: &Path, f: impl FnOnce(&Path) -> T) -> T {
    let out = sh(Command::new("losetup")
        .args(["--find", "--show", "--offset", "1048576"])
        .arg(dev));
    let inner = PathBuf::from(out.trim());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&inner)));
    sh(Command::new("losetup").arg("-d").arg(&inner));
    match r {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

#[test]
fn recovery_mount_of_a_journal_that_needs_replaying_uses_noload_and_writes_nothing() {
    let Some((w, lo)) = World::blank(64) else {
        return;
    };
    let dev = lo.dev.to_str().unwrap();
    w.prepare(&lo.dev, "t1");
    assert_eq!(w.run(dev).status.code(), Some(0));
    // As if the drive was pulled while mounted: the journal needs replaying.
    with_inner_fs(&lo.dev, |inner| {
        sh(Command::new("debugfs")
            .args(["-w", "-R", "feature needs_recovery"])
            .arg(inner));
        assert!(features(inner).contains("needs_recovery"));
    });
    // What the kernel does with it on a read-only device, without noload: EROFS, the
    // error `extbackup mount` used to stop at.
    let c = w.check_crypt();
    let mapped = c
        .unlock_read_only(
            &lo.dev,
            crypt::Key::File(&w.path("keys/t1.key")),
            "plain-ro",
        )
        .unwrap();
    let plain = w.path("plain");
    fs::create_dir_all(&plain).unwrap();
    let out = Command::new("mount")
        .args(["-o", "ro"])
        .arg(&mapped)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a read-only device with a journal to replay does not mount without noload"
    );
    // docs/restore.md's `mount -o ro,noload` does.
    sh(Command::new("mount")
        .args(["-o", "ro,noload"])
        .arg(&mapped)
        .arg(&plain));
    assert_eq!(fs::read(copy_on(&plain).join("a.txt")).unwrap(), b"alpha\n");
    sh(Command::new("umount").arg(&plain));
    c.lock("plain-ro", crypt::LockMode::Normal).unwrap();

    // The configuration no longer names the drive (as on a machine that is not the NAS):
    // extbackup mount by device and passphrase: mounted (with noload), and says so.
    w.edit_config(|text| text.split("[[drive]]").next().unwrap().to_string());
    assert!(!fs::read_to_string(&w.config).unwrap().contains("[[drive]]"));
    let out = w.mount_with_passphrase(dev, &[], World::PASSPHRASE);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("NOTE: the drive's ext4 journal needs replaying")
            && said.contains("noload")
            && said.contains("nothing was written")
            && said.contains("(it was unplugged or lost power while mounted?)"),
        "{said}"
    );
    let mp = w.path("mnt/browse-t1");
    let entry = mounter::mountinfo::read()
        .unwrap()
        .into_iter()
        .find(|m| m.target == mp)
        .expect("mounted at mnt/browse-t1");
    assert!(entry.has_option("ro"), "{entry:?}");
    // restore through it works, by the drive's name alone.
    let to = w.path("restored");
    let out = w.cmd(&["restore", "t1", "sub", "--to", path_str(&to)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        fs::read(to.join("sub/c.txt")).unwrap(),
        fs::read(w.path("src/sub/c.txt")).unwrap()
    );
    assert_eq!(w.cmd(&["unmount", "t1"]).status.code(), Some(0));
    assert!(mounted_under(w.dir.path()).is_empty());
    // Nothing was written: the journal still waits for its replay.
    with_inner_fs(&lo.dev, |inner| {
        assert!(features(inner).contains("needs_recovery"), "not replayed");
    });
}

#[test]
fn recovery_kit_text_names_generations_the_absolute_header_path_and_noload() {
    let Some((w, lo)) = World::blank(32) else {
        return;
    };
    let dev = lo.dev.to_str().unwrap();
    w.prepare(&lo.dev, "t1");
    let kit = w.path("kit");
    let out = w.recovery_kit("t1", dev, &kit, &["--with-key-file"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = fs::read_to_string(kit.join("RESTORE-t1.txt")).unwrap();
    for want in [
        "under generations/DATE/".to_string(),
        "sudo mkdir -p /mnt/t1".into(),
        "mount -o ro,noload /dev/mapper/t1 /mnt/t1".into(),
        "ls /mnt/t1/generations".into(),
        "rsync -aHAXS".into(),
        format!(
            "--header-backup-file {}\n",
            kit.join("t1.luks-header").display()
        ),
        format!("--key-file {} ", kit.join("t1.key").display()),
    ] {
        assert!(t.contains(&want), "{want:?} in:\n{t}");
    }
    assert!(
        !t.contains("/data/SOME"),
        "no copy command under data/ by default: {t}"
    );
}
