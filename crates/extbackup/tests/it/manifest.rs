//! Manifests on the drive (issue 19), end to end with the real binary as root: loop
//! devices, the loopback-test crypt backend, real ext4, real rsync, the real `sha256sum`.

use crate::history::{generations, set_config, stderr, sync_util};
use crate::support::{sh, World};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sha256sum -c --quiet LISTING` run in `dir` (the real coreutils tool).
fn sha256sum_check(dir: &Path, listing: &Path) -> std::process::Output {
    Command::new("sha256sum")
        .args(["-c", "--quiet", "--strict"])
        .arg(listing)
        .current_dir(dir)
        .output()
        .expect("sha256sum (coreutils) runs")
}

/// The regular files below `root`, relative, sorted (as bytes).
fn regular_files(root: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        })
        .collect();
    v.sort();
    v
}

/// The manifest (sidecar) of `tree` on the drive mounted at `mp`.
fn sidecar(mp: &Path, tree: &str) -> manifest::Manifest {
    let data = fs::read(mp.join(format!(".extbackup/manifests/{tree}.files"))).unwrap();
    manifest::Manifest::parse_sidecar(&data).unwrap()
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_string()
}

#[test]
fn manifest_sha256sum_checks_a_generation_of_an_odd_tree_and_fails_on_a_changed_file() {
    let Some((w, lo)) = World::prepared("t1", 96) else {
        return;
    };
    sync_util::odd_tree(&w.path("src/odd"));
    let names = w.path("src/odd/more-names");
    fs::create_dir_all(&names).unwrap();
    for n in [
        &b"back\\slash"[..],
        b"\\leading-backslash",
        b"both\\and\nnewline",
        b"carriage\rreturn",
        b"-",
        b"--",
        b"-c",
        b"trailing space ",
        b"  two leading spaces",
        b"\xff\xfe\xfd",
    ] {
        fs::write(names.join(OsStr::from_bytes(n)), n).unwrap();
    }
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("manifest: "), "{}", stderr(&out));
    w.with_drive_rw(&lo.dev, |mp| {
        let (g, _) = generations(mp);
        assert_eq!(g.len(), 1);
        let gen = &g[0];
        let listing = mp.join(format!(".extbackup/manifests/{}.sha256", name_of(gen)));
        // Every regular file of the generation is listed, no more.
        let m = sidecar(mp, &name_of(gen));
        let listed: Vec<Vec<u8>> = m.entries.iter().map(|e| e.path.clone()).collect();
        assert_eq!(listed, regular_files(gen));
        assert!(listed.iter().any(|p| p.ends_with(b"both\\and\nnewline")));
        // Bare coreutils checks it, from inside the generation, with the relative path the
        // docs give.
        let rel_listing = Path::new("../..").join(listing.strip_prefix(mp).unwrap());
        let ok = sha256sum_check(gen, &rel_listing);
        assert!(
            ok.status.success(),
            "sha256sum -c: {}{}",
            text(&ok.stdout),
            text(&ok.stderr)
        );
        // A changed file (same size, same mtime, as rot would leave it) is found.
        let victim = names
            .strip_prefix(w.path("src"))
            .unwrap()
            .join("back\\slash");
        crate::support::flip_one_byte_keeping_mtime(&gen.join(&victim), 2);
        let bad = sha256sum_check(gen, &rel_listing);
        assert!(!bad.status.success());
        let said = text(&bad.stdout);
        assert!(
            said.contains("back\\slash: FAILED"),
            "sha256sum names the file (escaped): {said}"
        );
        assert_eq!(said.matches("FAILED").count(), 1, "{said}");
    });
}

/// A config that names no drive and no source that exists: only the test crypt backend
/// (which the loopback images need; a bare machine uses LUKS, see the vm_ test).
fn bare_config(w: &World) {
    fs::write(
        &w.config,
        format!(
            "source = \"{d}/nas-is-gone\"\nstate_dir = \"{d}/bare-state\"\nmount_root = \"{d}/mnt\"\n\
             [crypt]\nbackend = \"loopback-test\"\n",
            d = w.dir.path().display()
        ),
    )
    .unwrap();
}

/// Where the first data block of `file` (on the ext4 mounted at a loop device over
/// `image` at offset `offset`) lies in the image: `filefrag -v`'s physical block times the
/// block size.
fn image_offset_of(file: &Path, offset: u64) -> u64 {
    let out = sh(Command::new("filefrag").arg("-v").arg(file));
    // "File size of F is 200000 (49 blocks of 4096 bytes)"
    let block: u64 = out
        .split(" blocks of ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no block size in filefrag's output: {out}"));
    // "   0:        0..      48:      34816..     34864:     49:             last,eof"
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("0:"))
        .unwrap_or_else(|| panic!("no extent in filefrag's output: {out}"));
    let phys: u64 = line
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .split("..")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(phys > 0, "an allocated block: {out}");
    offset + phys * block
}

#[test]
fn manifest_scrub_names_a_byte_flipped_under_the_filesystem_in_every_generation_sharing_it() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    fs::write(w.path("src/victim.bin"), &data).unwrap();
    for _ in 0..2 {
        let out = w.run(&lo.dev);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    // The NAS is gone: no source, a configuration that knows no drive.
    fs::remove_dir_all(w.path("src")).unwrap();
    bare_config(&w);
    let dev = lo.dev.to_str().unwrap();
    let key = w.path("keys/t1.key");
    let key = key.to_str().unwrap();
    let scrub = |more: &[&str]| {
        let mut a = vec!["scrub", "t1", "--device", dev, "--key-file", key];
        a.extend_from_slice(more);
        w.cmd(&a)
    };
    let out = scrub(&[]);
    assert_eq!(out.status.code(), Some(0), "clean: {}", stderr(&out));
    assert!(text(&out.stdout).contains("clean"), "{}", text(&out.stdout));

    // Find the file's first block in the image and flip a byte there, the filesystem
    // unmounted, caches dropped.
    let (gens, at) = w.with_drive_rw(&lo.dev, |mp| {
        let (g, _) = generations(mp);
        assert_eq!(g.len(), 2);
        let f = g[1].join("victim.bin");
        assert_eq!(
            fs::metadata(&f).unwrap().ino(),
            fs::metadata(g[0].join("victim.bin")).unwrap().ino(),
            "shared by both generations"
        );
        (
            g.iter().map(|p| name_of(p)).collect::<Vec<_>>(),
            image_offset_of(&f, 1 << 20),
        )
    });
    let img = w.path("disk.img");
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        let mut b = [0u8; 16];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        assert_eq!(&b, &data[..16], "the block found is the file's");
        f.seek(SeekFrom::Start(at + 5)).unwrap();
        f.write_all(&[b[5] ^ 0x20]).unwrap();
        f.sync_all().unwrap();
    }
    sh(Command::new("blockdev").arg("--flushbufs").arg(&lo.dev));
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();

    let out = scrub(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = text(&out.stdout);
    let line = said
        .lines()
        .find(|l| l.contains("victim.bin"))
        .unwrap_or_else(|| panic!("scrub names the file: {said}"));
    assert!(line.contains("content changed"), "{line}");
    assert!(
        line.starts_with("generations/"),
        "named from the drive's root: {line}"
    );
    for g in &gens {
        assert!(line.contains(g.as_str()), "names generation {g}: {line}");
    }
    assert_eq!(
        said.lines().filter(|l| l.contains("victim.bin")).count(),
        2,
        "one line per generation's path: {said}"
    );
    assert!(!said.contains("a.txt"), "only the damaged file: {said}");
    // --json says the same.
    let out = scrub(&["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["faults"].as_array().unwrap().len(), 2, "{j}");
    assert_eq!(
        j["read"].as_u64().unwrap(),
        4,
        "each of the 4 distinct files read once, though each is in 2 generations: {j}"
    );
}

/// `versions t1 PATH --json --device DEV`, which must succeed.
fn versions_json(w: &World, dev: &Path, path: &str) -> Vec<serde_json::Value> {
    let out = w.cmd(&[
        "versions",
        "t1",
        path,
        "--json",
        "--device",
        dev.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn manifest_versions_lists_three_versions_of_a_file_changed_twice_with_shared_generations() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    let mut want = vec![];
    for (i, content) in ["first\n", "second, longer\n", "third\n", "third\n"]
        .iter()
        .enumerate()
    {
        if i < 3 {
            fs::write(w.path("src/sub/c.txt"), content).unwrap();
        }
        want.push(sync_util_sha(content.as_bytes()));
        let out = w.run(&lo.dev);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let v = versions_json(&w, &lo.dev, "sub/c.txt");
    assert_eq!(v.len(), 4, "{v:?}");
    let got: Vec<&str> = v.iter().map(|o| o["sha256"].as_str().unwrap()).collect();
    assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>());
    let gens: Vec<&str> = v
        .iter()
        .map(|o| o["generation"].as_str().unwrap())
        .collect();
    let mut distinct = got.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three versions");
    // The last run changed nothing: its file is the third run's, shared.
    let shared = |o: &serde_json::Value| -> Vec<String> {
        o["shared_with"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(shared(&v[3]), vec![gens[2], gens[3]]);
    assert_eq!(shared(&v[2]), vec![gens[2], gens[3]]);
    assert_eq!(shared(&v[0]), vec![gens[0]]);
    assert_eq!(v[1]["size"].as_u64(), Some(15));
    // The absolute path in the source names the same file; the table says 3 versions.
    let abs = w.path("src/sub/c.txt");
    let out = w.cmd(&[
        "versions",
        "t1",
        abs.to_str().unwrap(),
        "--device",
        lo.dev.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("3 version(s)"),
        "{}",
        text(&out.stdout)
    );
    // A file in no manifest: exit 1, said.
    let out = w.cmd(&[
        "versions",
        "t1",
        "nope.txt",
        "--device",
        lo.dev.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    // restore --at the first generation brings back the first version, checked against the
    // manifest.
    let to = w.path("restored");
    let out = w.restore_from("t1", &lo.dev, "sub/c.txt", Some(gens[0]), &to);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(to.join("c.txt")).unwrap(), b"first\n");
    assert!(
        text(&out.stdout).contains("1 file(s) verified, 0 mismatched"),
        "{}",
        text(&out.stdout)
    );
}

fn sync_util_sha(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A file rotted on the drive in place (same size, same mtime: what no sync notices) and a
/// run that changes nothing: the new manifest carries the old hash over (the file was not
/// read; had it been, the manifest would hold the rotted content's hash), and scrub names
/// the file. `history` true: generations sharing the inode; false: the mirror.
fn carry_over(history: bool) {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    if !history {
        set_config(&w, "history = false", "");
    }
    let tree = |mp: &Path| -> (PathBuf, String) {
        if history {
            let (g, _) = generations(mp);
            let last = g.last().unwrap().clone();
            let n = name_of(&last);
            (last, n)
        } else {
            (mp.join("data"), "data".to_string())
        }
    };
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The first copy: every file hashed as the copy closed it, none read after.
    assert!(
        stderr(&out).contains("0 read (0 B), 0 carried over, 3 hashed while the copy wrote them"),
        "{}",
        stderr(&out)
    );
    let good = w.with_drive_rw(&lo.dev, |mp| {
        let (t, name) = tree(mp);
        crate::support::flip_one_byte_keeping_mtime(&t.join("sub/b.bin"), 1000);
        sidecar(mp, &name)
    });
    // A changed source file is read: its hash is the new content's.
    fs::write(w.path("src/a.txt"), "ALPHA\n").unwrap();
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 read (6 B), 2 carried over"),
        "{}",
        stderr(&out)
    );
    w.with_drive_rw(&lo.dev, |mp| {
        let (t, name) = tree(mp);
        let m = sidecar(mp, &name);
        let b = m.get(b"sub/b.bin").unwrap();
        assert_eq!(
            b.sha256,
            good.get(b"sub/b.bin").unwrap().sha256,
            "carried over"
        );
        let now = manifest::hash_reader(fs::File::open(t.join("sub/b.bin")).unwrap())
            .unwrap()
            .0;
        assert_ne!(b.sha256, now, "the rotted content was not read");
        assert_eq!(
            manifest::format::hex(&m.get(b"a.txt").unwrap().sha256),
            sync_util_sha(b"ALPHA\n")
        );
        if history {
            assert_eq!(generations(mp).0.len(), 2);
        }
    });
    let out = w.cmd(&["scrub", "t1", "--device", lo.dev.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = text(&out.stdout);
    assert_eq!(
        said.lines()
            .filter(|l| l.contains("sub/b.bin: content changed"))
            .count(),
        if history { 2 } else { 1 },
        "{said}"
    );
    // status shows the scrub.
    let st = text(&w.cmd(&["status"]).stdout);
    assert!(
        st.contains("last scrub:") && st.contains("DIFFERENCES"),
        "{st}"
    );
}

#[test]
fn manifest_unchanged_files_carry_their_hash_over_unread_in_a_generation() {
    carry_over(true);
}

#[test]
fn manifest_unchanged_files_carry_their_hash_over_unread_in_a_mirror() {
    carry_over(false);
}

#[test]
fn manifest_scrub_share_rotates_over_runs_and_a_rotted_file_is_a_warning_in_the_mail() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    let prom = w.path("node.prom");
    w.edit_config(|t| {
        t.replace(
            "require_source_mount_point = false",
            "require_source_mount_point = false\nscrub_share = 2",
        )
    });
    set_config(
        &w,
        "",
        &format!("[monitor]\ntextfile = \"{}\"", prom.display()),
    );
    let mut said = vec![];
    for _ in 0..3 {
        let out = w.run(&lo.dev);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        said.push(stderr(&out));
    }
    for (s, share) in said
        .iter()
        .zip(["share 1 of 2", "share 2 of 2", "share 1 of 2"])
    {
        assert!(s.contains(&format!("scrub: clean ({share})")), "{s}");
    }
    // A file rots in place on the drive (every generation shares it): within the next two
    // runs the rotation reaches it, and that run's mail names it (a warning, still green).
    w.with_drive_rw(&lo.dev, |mp| {
        let (g, _) = generations(mp);
        crate::support::flip_one_byte_keeping_mtime(&g.last().unwrap().join("sub/b.bin"), 77);
    });
    let mut found = 0;
    for _ in 0..2 {
        let before = w.mails().len();
        let out = w.run(&lo.dev);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        if stderr(&out).contains("sub/b.bin: content changed") {
            found += 1;
            assert!(
                w.mails().len() > before,
                "the warning makes the mail go out"
            );
            let mail = w.last_mail();
            assert!(mail.contains("sub/b.bin: content changed"), "{mail}");
            let textfile = fs::read_to_string(&prom).unwrap();
            assert!(
                textfile.contains("extbackup_last_scrub_faults{drive=\"t1\"} 4"),
                "the file in each of the 4 generations: {textfile}"
            );
        }
    }
    assert_eq!(
        found, 1,
        "exactly one of two consecutive runs reads the file"
    );
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_manifest_scrub_on_real_luks_with_the_key_file_and_no_configuration_names_a_flipped_byte() {
    use crypt::{Crypt, LibcryptsetupCrypt, LockMode};
    let (w, lo) = World::on_blank_disk("libcryptsetup", 48);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 + i / 97) as u8).collect();
    fs::write(w.path("src/victim.bin"), &data).unwrap();
    w.prepare(&lo.dev, "t1");
    for _ in 0..2 {
        let out = w.run(&lo.dev);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    // The NAS is gone: no configuration, no source, no state; the key file kept aside.
    fs::remove_file(&w.config).unwrap();
    fs::remove_dir_all(w.path("src")).unwrap();
    fs::remove_dir_all(w.path("state")).unwrap();
    let dev = lo.dev.to_str().unwrap();
    let key = w.path("keys/t1.key");
    let scrub = || {
        w.cmd(&[
            "scrub",
            "t1",
            "--device",
            dev,
            "--key-file",
            key.to_str().unwrap(),
        ])
    };
    let out = scrub();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(text(&out.stdout).contains("clean"), "{}", text(&out.stdout));

    // One byte of the file's first block changed through the dm-crypt mapping, under the
    // filesystem (unmounted), caches dropped.
    let c = LibcryptsetupCrypt::new();
    let mapped = c.unlock(&lo.dev, &key, "vm-manifest-rw").unwrap();
    let rw = w.path("rw");
    fs::create_dir_all(&rw).unwrap();
    sh(Command::new("mount").arg(&mapped).arg(&rw));
    let (g, _) = generations(&rw);
    assert_eq!(g.len(), 2);
    let at = image_offset_of(&g[1].join("victim.bin"), 0);
    let names: Vec<String> = g.iter().map(|p| name_of(p)).collect();
    sh(Command::new("umount").arg(&rw));
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&mapped)
            .unwrap();
        let mut b = [0u8; 16];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        assert_eq!(&b, &data[..16], "the block found is the file's");
        f.seek(SeekFrom::Start(at + 9)).unwrap();
        f.write_all(&[b[9] ^ 0x01]).unwrap();
        f.sync_all().unwrap();
    }
    c.lock("vm-manifest-rw", LockMode::Normal).unwrap();
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();

    let out = scrub();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = text(&out.stdout);
    let lines: Vec<&str> = said.lines().filter(|l| l.contains("victim.bin")).collect();
    assert_eq!(lines.len(), 2, "{said}");
    for n in &names {
        assert!(lines[0].contains(n.as_str()), "names {n}: {said}");
    }
    assert!(lines[0].contains("content changed"), "{said}");
    assert!(said.contains("DIFFERENCES"), "{said}");
}

#[test]
fn manifest_restore_of_a_file_rotted_on_the_drive_says_mismatched_and_exits_1() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    w.with_drive_rw(&lo.dev, |mp| {
        let (g, _) = generations(mp);
        crate::support::flip_one_byte_keeping_mtime(&g[0].join("sub/c.txt"), 1);
    });
    let to = w.path("restored");
    let out = w.restore_from("t1", &lo.dev, "sub", None, &to);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = text(&out.stdout);
    assert!(
        said.contains("checked against the drive's manifest: 1 file(s) verified, 1 mismatched"),
        "{said}"
    );
    assert!(
        stderr(&out).contains("restored file") && stderr(&out).contains("c.txt"),
        "the file is named: {}",
        stderr(&out)
    );
}

#[test]
fn manifest_scrub_sample_reads_about_the_share_asked() {
    let Some((w, lo)) = World::prepared("t1", 64) else {
        return;
    };
    let many = w.path("src/many");
    fs::create_dir_all(&many).unwrap();
    for i in 0..400 {
        fs::write(many.join(format!("f{i}")), i.to_string()).unwrap();
    }
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = |more: &[&str]| -> (u64, String) {
        let mut args = vec![
            "scrub",
            "t1",
            "--json",
            "--device",
            lo.dev.to_str().unwrap(),
        ];
        args.extend(more);
        let out = w.cmd(&args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["files"].as_u64().unwrap(),
            v["selection"].as_str().unwrap().to_string(),
        )
    };
    let (all, sel) = files(&[]);
    assert!(all >= 400, "{all}");
    assert_eq!(sel, "all");
    let (hundred, _) = files(&["--sample", "100"]);
    assert_eq!(hundred, all);
    // A quarter picked at random: 7 standard deviations either side of the mean.
    let (quarter, sel) = files(&["--sample", "25"]);
    assert_eq!(sel, "sample 25%");
    let mean = all as f64 / 4.0;
    let sd = (all as f64 * 0.25 * 0.75).sqrt();
    assert!(
        (quarter as f64 - mean).abs() < 7.0 * sd,
        "{quarter} of {all} for 25%"
    );
    let out = w.cmd(&[
        "scrub",
        "t1",
        "--sample",
        "101",
        "--device",
        lo.dev.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn manifest_on_btrfs_a_chmod_in_place_is_listed_as_it_is_now_and_sha256sum_checks_it() {
    let Some((w, lo)) = World::blank(200) else {
        return;
    };
    let out = w.try_prepare(
        &lo.dev,
        "t1",
        &["--fs", "btrfs", "--no-recovery-passphrase"],
    );
    assert_eq!(out.status.code(), Some(0), "prepare --fs btrfs");
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A mode changed alone (rsync changes it in the snapshot, same inode) and a content
    // changed (a new inode).
    let before = fs::metadata(w.path("src/a.txt")).unwrap().mode() & 0o7777;
    assert_ne!(before, 0o600);
    fs::set_permissions(
        w.path("src/a.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    fs::write(w.path("src/sub/c.txt"), "changed\n").unwrap();
    let out = w.run(&lo.dev);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("btrfs snapshot"), "{}", stderr(&out));
    w.with_drive_rw(&lo.dev, |mp| {
        let (mut g, _) = generations(mp);
        g.sort();
        assert_eq!(g.len(), 2);
        let (m1, m2) = (sidecar(mp, &name_of(&g[0])), sidecar(mp, &name_of(&g[1])));
        let a1 = m1.get(b"a.txt").unwrap();
        let a2 = m2.get(b"a.txt").unwrap();
        assert_eq!(a2.sha256, a1.sha256, "content unchanged: carried over");
        assert_eq!(a2.mode & 0o7777, 0o600, "the mode as it is now");
        assert_eq!(a1.mode & 0o7777, before, "the older generation's as it was");
        assert_eq!(
            fs::metadata(g[0].join("a.txt")).unwrap().mode() & 0o7777,
            before
        );
        assert_eq!(
            manifest::format::hex(&m2.get(b"sub/c.txt").unwrap().sha256),
            sync_util_sha(b"changed\n")
        );
        for gen in &g {
            let listing =
                Path::new("../..").join(format!(".extbackup/manifests/{}.sha256", name_of(gen)));
            let ok = sha256sum_check(gen, &listing);
            assert!(
                ok.status.success(),
                "{}{}",
                text(&ok.stdout),
                text(&ok.stderr)
            );
        }
    });
}
