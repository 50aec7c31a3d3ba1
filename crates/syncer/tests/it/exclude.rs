//! The exclude matcher against the real rsync: over one tree of odd names, each pattern
//! (and all of them together) selects the same entries in `syncer::exclude` as in rsync,
//! through the rsync backend itself: a copy onto a full copy of the tree must delete exactly
//! what the matcher excludes and keep the rest.

use crate::opts;
use crate::util::{entries, non_utf8};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use syncer::{Excludes, GuardedSync, RsyncSyncer, SyncOptions};

/// Patterns each excluding something in [`tree`], covering every rule of the subset.
const PATTERNS: &[&str] = &[
    "*.tmp",
    "/cache/",
    "cache",
    "**/node_modules/",
    "node_modules/",
    "build/out",
    "b*/o?t",
    "/a**z",
    "/a/**/b",
    "x**",
    "[ab]?.log",
    "[!f]ile?",
    "file[[:digit:]]",
    "sp ace.log",
    "*ace.log",
    "star\\*name",
    "q\\?mark",
    "back\\slash",
    "-dash-file",
    "caf??.jpg",
    "bad*",
    ".hidden/",
    "*/x",
    "deep/er",
    "br[[]ack]et",
    "/top-only",
    "**.log",
];

fn tree(root: &Path) {
    let files = [
        "a.tmp",
        "keep.txt",
        "x.tmp.keep",
        "cache/f",
        "sub/cache/f",
        "other/cache",
        "node_modules/m.js",
        "deep/er/node_modules/m.js",
        "deep/node_modules",
        "build/out",
        "src/build/out",
        "xbuild/out",
        "ab/cz",
        "a/b",
        "a/x/y/b",
        "p/xq/r",
        "a1.log",
        "d/b2.log",
        "file7",
        "filex",
        "mile8",
        "sp ace.log",
        "star*name",
        "starXname",
        "q?mark",
        "qXmark",
        "back\\slash",
        "-dash-file",
        "café.jpg",
        ".hidden/.cache/x",
        "br[ack]et",
        "top-only",
        "n/top-only",
        "n/deeper/keep.md",
    ];
    for f in files {
        let p = root.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, f).unwrap();
    }
    fs::write(root.join(non_utf8(b"bad\xff.tmp")), "x").unwrap();
    fs::write(root.join(non_utf8(b"ok\xfe")), "x").unwrap();
}

/// The entries the matcher keeps: a walk that does not enter an excluded folder.
fn kept_by_matcher(root: &Path, ex: &Excludes) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let dir = e.file_type().unwrap().is_dir();
            if ex.excludes(&r, dir) {
                continue;
            }
            if dir {
                stack.push(r.clone());
            }
            out.insert(r);
        }
    }
    out
}

/// What rsync keeps: the backend mirrors the tree onto a full copy of it with `ex`.
fn kept_by_rsync(src: &Path, dst: &Path, ex: &Excludes) -> BTreeSet<PathBuf> {
    let _ = fs::remove_dir_all(dst);
    let full = SyncOptions {
        max_delete_fraction: None,
        ..opts()
    };
    let s = RsyncSyncer::new();
    s.sync(src, dst, &full, &mut |_| {}).expect("full copy");
    let o = SyncOptions {
        exclude: ex.clone(),
        ..full
    };
    s.sync(src, dst, &o, &mut |_| {})
        .expect("copy with excludes");
    entries(dst).into_iter().collect()
}

#[test]
fn rsync_and_the_matcher_select_the_same_entries() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    tree(&src);
    let all: BTreeSet<PathBuf> = entries(&src).into_iter().collect();
    for p in PATTERNS {
        let ex = Excludes::new(&[p]).unwrap();
        let ours = kept_by_matcher(&src, &ex);
        let theirs = kept_by_rsync(&src, &dst, &ex);
        assert_eq!(
            ours.symmetric_difference(&theirs).collect::<Vec<_>>(),
            Vec::<&PathBuf>::new(),
            "pattern {p:?}: entries kept by only one of the matcher and rsync"
        );
        assert!(ours.len() < all.len(), "{p:?} excludes nothing in the tree");
    }
    let ex = Excludes::new(PATTERNS).unwrap();
    let ours = kept_by_matcher(&src, &ex);
    assert_eq!(
        ours,
        kept_by_rsync(&src, &dst, &ex),
        "all patterns together"
    );
    // Not everything goes: the rest is copied.
    for kept in ["keep.txt", "n/deeper/keep.md", "starXname", "filex"] {
        assert!(ours.contains(Path::new(kept)), "{kept} kept");
    }
}
