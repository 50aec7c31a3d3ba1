//! Named sources with excludes, end to end as root: two trees onto one drive (a loop
//! device, the loopback-test crypt, real ext4, real rsync), each into its own folder, the
//! excluded files left out of the copy, of the free-space figure and of `verify`.

use crate::support::{root_or_skip_here, snapshot, LoopDevice, World};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// 24 MiB that no compression or hole could shrink.
fn incompressible(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

/// The world's source as `files` (without `/sub/c.txt`) and a second tree `photos` with a
/// 24 MiB cache and temporary files, both excluded.
fn configure(w: &World) {
    let d = w.dir.path().display();
    let tables = format!(
        "[sources.files]\npath = \"{d}/src\"\nexclude = [\"/sub/c.txt\"]\n\n\
         [sources.photos]\npath = \"{d}/photos\"\nexclude = [\"/cache/\", \"*.tmp\"]\n\
         lock = {{ path = \"{d}/locks/photos.lock\", timeout_secs = 1 }}\n"
    );
    let text = fs::read_to_string(&w.config)
        .unwrap()
        .replace(&format!("source = \"{d}/src\"\n"), "")
        .replace(
            &format!("[source_lock]\npath = \"{d}/src.lock\"\ntimeout_secs = 1\n"),
            &tables,
        );
    assert!(text.contains("[sources.photos]") && !text.contains("source_lock"));
    fs::write(&w.config, text).unwrap();
}

fn paths(snap: &[(PathBuf, Vec<u8>, u32)]) -> BTreeSet<PathBuf> {
    snap.iter().map(|(p, _, _)| p.clone()).collect()
}

/// The figure the free-space step logs: "to copy 310.2 KiB (excluded files left out), ..."
/// (a plain mirror or a first generation) or "a new generation needs about 24.0 MiB (...;
/// excluded files left out)".
fn to_copy_bytes(log: &str) -> f64 {
    let line = log
        .lines()
        .find(|l| l.contains("excluded files left out"))
        .unwrap_or_else(|| panic!("no free-space line in the log:\n{log}"));
    let at = ["to copy ", "needs about "]
        .iter()
        .find_map(|m| line.find(m).map(|i| i + m.len()))
        .unwrap_or_else(|| panic!("no figure in {line}"));
    let rest = &line[at..];
    let mut it = rest.split_whitespace();
    let n: f64 = it.next().unwrap().parse().unwrap();
    let unit = match it.next().unwrap() {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        u => panic!("unit {u} in {line}"),
    };
    n * unit
}

#[test]
fn two_sources_with_excludes_are_copied_into_their_folders_and_only_what_is_copied_counts() {
    if !root_or_skip_here() {
        return;
    }
    let w = World::new("loopback-test");
    for (p, data) in [
        ("photos/2024/a.jpg", vec![1u8; 100_000]),
        ("photos/2024/a.jpg.tmp", vec![2u8; 1000]),
        ("photos/cache/thumbs.bin", incompressible(24 << 20)),
    ] {
        fs::create_dir_all(w.path(p).parent().unwrap()).unwrap();
        fs::write(w.path(p), data).unwrap();
    }
    fs::create_dir_all(w.path("locks")).unwrap();
    // A 16 MiB drive: the photos' cache alone would not fit.
    let lo = LoopDevice::new(&w.path("disk.img"), 16);
    w.prepare(&lo.dev, "t1");
    configure(&w);
    assert_eq!(w.cmd(&["config", "check"]).status.code(), Some(0));
    // The sandboxed unit may write the folder of a source's lock.
    let units = w.cmd(&["install", "--print"]);
    let units = String::from_utf8_lossy(&units.stdout);
    let rw = format!("ReadWritePaths=-{}\n", w.path("locks").display());
    assert!(units.contains(&rw), "{units}");

    let out = w.cmd(&["run", "--device", lo.dev.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "the run succeeds");
    let log = String::from_utf8_lossy(&out.stderr);
    let figure = to_copy_bytes(&log);
    assert!(
        (100_000.0..1024.0 * 1024.0).contains(&figure),
        "the free-space figure counts the copied files only: {figure} bytes"
    );

    // Each source in its folder, without its excluded files.
    let (snap, _) = crate::host::read_drive(&w, &lo.dev, "t1");
    let on_drive = paths(&snap);
    let want: BTreeSet<PathBuf> = ["files", "photos"]
        .iter()
        .flat_map(|name| {
            let root = w.path(if *name == "files" { "src" } else { "photos" });
            let mut v: Vec<PathBuf> = paths(&snapshot(&root))
                .into_iter()
                .filter(|p| {
                    !p.starts_with("cache")
                        && p.extension().is_none_or(|e| e != "tmp")
                        && p != Path::new("sub/c.txt")
                })
                .map(|p| Path::new(name).join(p))
                .collect();
            v.push(PathBuf::from(name));
            v
        })
        .collect();
    assert_eq!(on_drive, want);

    // verify compares each source with its folder and does not miss the excluded files.
    let out = w.cmd(&[
        "verify",
        "t1",
        "--device",
        lo.dev.to_str().unwrap(),
        "--full",
    ]);
    assert_eq!(out.status.code(), Some(0), "verify is clean");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no differences"));

    // restore: paths in the copy start with the source's name; an absolute path under a
    // source's path is found in its folder.
    let to = w.path("restored");
    let dev = lo.dev.to_str().unwrap();
    let src_sub = w.path("src/sub");
    let args = ["photos/2024", src_sub.to_str().unwrap()];
    let out = w.cmd(
        &[
            &["restore", "t1"][..],
            &args,
            &["--to", to.to_str().unwrap(), "--device", dev],
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(0), "restore");
    assert_eq!(fs::read(to.join("2024/a.jpg")).unwrap(), vec![1u8; 100_000]);
    assert!(
        !to.join("2024/a.jpg.tmp").exists(),
        "excluded, so not on the drive"
    );
    assert_eq!(
        fs::read(to.join("sub/b.bin")).unwrap(),
        fs::read(src_sub.join("b.bin")).unwrap()
    );
    assert!(
        !to.join("sub/c.txt").exists(),
        "excluded, so not on the drive"
    );

    // Without the cache's exclude the same drive is too small: refused at free space.
    let text = fs::read_to_string(&w.config).unwrap();
    fs::write(
        &w.config,
        text.replace("[\"/cache/\", \"*.tmp\"]", "[\"*.tmp\"]"),
    )
    .unwrap();
    let out = w.cmd(&["run", "--device", lo.dev.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("step free space failed"), "{log}");
    assert!(to_copy_bytes(&log) >= 20.0 * 1024.0 * 1024.0, "{log}");
}
