//! Generations built by the linking pass and rsync (issue 22), on real ext4 with the real
//! rsync: older generations never change, the result is what the source is and what
//! rsync `--link-dest` alone made, hard links and the link limit hold.

use crate::opts;
use crate::util::{
    assert_same_tree, odd_tree, root_or_skip_here, set_acl, set_xattr, user_xattrs, LoopFs,
};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use syncer::generations::{Generations, Stamp};
use syncer::{GuardedSync, RsyncSyncer, SyncOptions, SyncReport};

/// A drive with generations of a source, each its own ext4.
struct World {
    src: LoopFs,
    drive: LoopFs,
    next: i64,
}

impl World {
    fn new() -> Self {
        World {
            src: LoopFs::new(160),
            drive: LoopFs::new(320),
            next: 1_700_000_000,
        }
    }

    fn src(&self) -> &Path {
        &self.src.mnt
    }

    /// Adds a generation as a run does (the newest as `link_dest`), with `syncer`.
    fn generation_with(&mut self, syncer: &RsyncSyncer) -> (PathBuf, SyncReport) {
        let gens = Generations::at(&self.drive.mnt);
        let prev = gens.newest().unwrap().map(|g| g.path);
        self.next += 60;
        let g = gens.start(Stamp(self.next)).unwrap();
        let o = SyncOptions {
            link_dest: prev,
            ..opts()
        };
        let r = syncer
            .sync(&self.src.mnt, &g.path, &o, &mut |_| {})
            .unwrap_or_else(|e| panic!("building a generation: {e:#}"));
        let done = gens.commit(&g).unwrap();
        (done.path, r)
    }

    fn generation(&mut self) -> PathBuf {
        self.generation_with(&RsyncSyncer::new()).0
    }
}

fn md(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// What a metadata-only change must leave alone: `change` alters `f` in the source
/// without touching its content, size or (unless it is the change) its mtime; `seen`
/// reads the changed attribute. Two generations before the change share the file's inode
/// (the second linked it); the third has the new attribute on a new inode, the first two
/// keep the old one, and an unchanged file stays linked in all three.
fn a_metadata_only_change_leaves_older_generations_alone<T: PartialEq + std::fmt::Debug>(
    change: impl Fn(&Path),
    seen: impl Fn(&Path) -> T,
) {
    let mut w = World::new();
    write(&w.src().join("dir/f"), b"the file whose metadata changes\n");
    write(&w.src().join("dir/g"), b"an unchanged neighbour\n");
    set_xattr(&w.src().join("dir/g"), "user.kept", b"1");
    let g1 = w.generation();
    let g2 = w.generation();
    assert_eq!(
        md(&g1.join("dir/f")).ino(),
        md(&g2.join("dir/f")).ino(),
        "linked"
    );
    let before = seen(&w.src().join("dir/f"));
    change(&w.src().join("dir/f"));
    let after = seen(&w.src().join("dir/f"));
    assert_ne!(before, after, "the change changed nothing in the source");
    let (g3, _) = w.generation_with(&RsyncSyncer::new());
    for old in [&g1, &g2] {
        assert_eq!(
            seen(&old.join("dir/f")),
            before,
            "an older generation's copy changed: {}",
            old.display()
        );
    }
    assert_eq!(seen(&g3.join("dir/f")), after);
    assert_ne!(md(&g3.join("dir/f")).ino(), md(&g2.join("dir/f")).ino());
    assert_eq!(md(&g3.join("dir/g")).ino(), md(&g1.join("dir/g")).ino());
    assert_same_tree(w.src(), &g3);
}

#[test]
fn generation_a_chmod_only_change_in_the_source_leaves_every_older_generations_copy_of_the_file_unchanged(
) {
    if !root_or_skip_here() {
        return;
    }
    a_metadata_only_change_leaves_older_generations_alone(
        |p| fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap(),
        |p| md(p).mode(),
    );
}

#[test]
fn generation_a_chown_only_change_in_the_source_leaves_every_older_generations_copy_unchanged() {
    if !root_or_skip_here() {
        return;
    }
    a_metadata_only_change_leaves_older_generations_alone(
        |p| std::os::unix::fs::lchown(p, Some(4242), Some(4343)).unwrap(),
        |p| (md(p).uid(), md(p).gid()),
    );
}

#[test]
fn generation_an_xattr_only_change_in_the_source_leaves_every_older_generations_copy_unchanged() {
    if !root_or_skip_here() {
        return;
    }
    a_metadata_only_change_leaves_older_generations_alone(
        |p| set_xattr(p, "user.tag", b"added later"),
        user_xattrs,
    );
}

#[test]
fn generation_an_acl_only_change_in_the_source_leaves_every_older_generations_copy_unchanged() {
    if !root_or_skip_here() {
        return;
    }
    a_metadata_only_change_leaves_older_generations_alone(|p| set_acl(p, 4321, false), user_xattrs);
}

#[test]
fn generation_an_mtime_only_change_in_the_source_leaves_every_older_generations_copy_unchanged() {
    if !root_or_skip_here() {
        return;
    }
    a_metadata_only_change_leaves_older_generations_alone(
        |p| {
            let f = fs::File::options().write(true).open(p).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_234_567_890))
                .unwrap();
        },
        |p| (md(p).mtime(), md(p).mtime_nsec()),
    );
}

#[test]
fn generation_the_odd_tree_is_identical_to_the_source_and_to_rsyncs_link_dest_generation() {
    if !root_or_skip_here() {
        return;
    }
    let mut w = World::new();
    odd_tree(w.src());
    let g1 = w.generation();
    assert_same_tree(w.src(), &g1);
    // Changes of every kind: content, a chmod, a new file, a deletion, an xattr.
    fs::write(w.src().join("plain/sub/b.bin"), b"new content\n").unwrap();
    fs::set_permissions(w.src().join("setuid"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&w.src().join("plain/new.txt"), b"new\n");
    fs::remove_file(w.src().join("names/with space")).unwrap();
    set_xattr(&w.src().join("plain/linked"), "user.late", b"x");
    let (by_rsync, _) = w.generation_with(&RsyncSyncer::new().without_linking_pass());
    let (ours, r) = w.generation_with(&RsyncSyncer::new());
    assert_same_tree(w.src(), &ours);
    assert_same_tree(&by_rsync, &ours);
    assert_eq!(r.files_deleted, 0, "{r:?}");
    // What did not change is linked to the previous generation, what changed is not.
    let ino = |g: &Path, p: &str| md(&g.join(p)).ino();
    assert_eq!(ino(&ours, "plain/a.txt"), ino(&g1, "plain/a.txt"));
    assert_eq!(ino(&ours, "sparse.img"), ino(&by_rsync, "sparse.img"));
    assert_ne!(ino(&ours, "plain/sub/b.bin"), ino(&g1, "plain/sub/b.bin"));
    assert_eq!(md(&g1.join("setuid")).mode() & 0o7777, 0o4755);
    assert!(user_xattrs(&g1.join("plain/linked")).is_empty());
}

#[test]
fn generation_a_hard_linked_source_set_stays_one_inode_and_a_broken_link_stays_broken() {
    if !root_or_skip_here() {
        return;
    }
    let mut w = World::new();
    let s = w.src().to_path_buf();
    write(&s.join("a"), b"one inode, three names\n");
    fs::hard_link(s.join("a"), s.join("b")).unwrap();
    fs::create_dir(s.join("sub")).unwrap();
    fs::hard_link(s.join("a"), s.join("sub/c")).unwrap();
    write(&s.join("x"), b"two names later\n");
    write(&s.join("y"), b"two names later\n");
    let g1 = w.generation();
    let g2 = w.generation();
    assert_same_tree(&s, &g2);
    let ino = |g: &Path, p: &str| md(&g.join(p)).ino();
    assert_eq!(ino(&g2, "a"), ino(&g1, "a"), "the group is linked whole");
    // Break the group: b becomes its own inode with the same content and metadata; and
    // y becomes a second name of x.
    let tmp = s.join("b.tmp");
    fs::copy(s.join("a"), &tmp).unwrap();
    let m = md(&s.join("a"));
    fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(m.modified().unwrap())
        .unwrap();
    fs::set_permissions(&tmp, m.permissions()).unwrap();
    fs::rename(&tmp, s.join("b")).unwrap();
    fs::remove_file(s.join("y")).unwrap();
    fs::hard_link(s.join("x"), s.join("y")).unwrap();
    let g3 = w.generation();
    assert_same_tree(&s, &g3);
    assert_ne!(ino(&g3, "a"), ino(&g3, "b"), "a broken link stays broken");
    assert_eq!(ino(&g3, "x"), ino(&g3, "y"), "a new link is made");
    // The older generations keep their shape.
    assert_eq!(ino(&g2, "a"), ino(&g2, "b"));
    assert_ne!(ino(&g2, "x"), ino(&g2, "y"));
}

#[test]
fn generation_files_past_the_link_limit_are_copied_through_the_linking_pass() {
    if !root_or_skip_here() {
        return;
    }
    let mut w = World::new();
    let dir = w.src().join("links");
    write(&dir.join("f"), b"many names\n");
    // ext4 allows 65,000 links per inode: 33,000 names fit once, not twice.
    for i in 1..33_000 {
        fs::hard_link(dir.join("f"), dir.join(format!("l{i:05}"))).unwrap();
    }
    write(&w.src().join("other"), b"linked as usual\n");
    let g1 = w.generation();
    let (g2, r) = w.generation_with(&RsyncSyncer::new());
    assert_eq!(r.copied_not_linked, 33_000, "{r:?}");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("33000 file(s) were copied instead")),
        "{r:?}"
    );
    let new = md(&g2.join("links/l32999"));
    assert_eq!(new.nlink(), 33_000, "one new inode for the whole group");
    assert_eq!(new.ino(), md(&g2.join("links/f")).ino());
    assert_ne!(new.ino(), md(&g1.join("links/f")).ino());
    assert_eq!(md(&g1.join("links/f")).nlink(), 33_000);
    assert_eq!(md(&g2.join("other")).ino(), md(&g1.join("other")).ino());
}

#[test]
fn generation_a_resumed_generation_never_changes_an_inode_it_shares_with_an_older_one() {
    if !root_or_skip_here() {
        return;
    }
    let mut w = World::new();
    write(&w.src().join("f"), b"linked by an interrupted run\n");
    write(&w.src().join("g"), b"unchanged\n");
    let g1 = w.generation();
    // An interrupted generation holding links to g1's files.
    let gens = Generations::at(&w.drive.mnt);
    let left = gens.start(Stamp(w.next + 30)).unwrap();
    fs::hard_link(g1.join("f"), left.path.join("f")).unwrap();
    fs::hard_link(g1.join("g"), left.path.join("g")).unwrap();
    // The source's f is chmodded meanwhile; the next run resumes the interrupted one.
    fs::set_permissions(w.src().join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    let mode = md(&g1.join("f")).mode();
    let g2 = w.generation();
    assert_eq!(
        md(&g1.join("f")).mode(),
        mode,
        "the older generation changed"
    );
    assert_same_tree(w.src(), &g2);
    assert_eq!(md(&g2.join("g")).ino(), md(&g1.join("g")).ino());
    assert_ne!(md(&g2.join("f")).ino(), md(&g1.join("f")).ino());
}

#[test]
fn generation_the_linking_pass_reports_progress_against_the_previous_generations_entries() {
    if !root_or_skip_here() {
        return;
    }
    let mut w = World::new();
    for i in 0..5000 {
        write(&w.src().join(format!("d{}/f{i}", i % 10)), b"x");
    }
    w.generation();
    let gens = Generations::at(&w.drive.mnt);
    let prev = gens.newest().unwrap().map(|g| g.path);
    w.next += 60;
    let g = gens.start(Stamp(w.next)).unwrap();
    let o = SyncOptions {
        link_dest: prev,
        ..opts()
    };
    let mut seen: Vec<f32> = vec![];
    let r = RsyncSyncer::new()
        .sync(&w.src.mnt, &g.path, &o, &mut |p| {
            if let Some(f) = p.fraction {
                seen.push(f);
            }
        })
        .unwrap();
    assert!(r.files_copied == 0, "{r:?}");
    // Every 1024 entries of the 5010 the linking pass walks: four steps below its share
    // (0.65), climbing; then rsync's own the rest of the way, never back below it.
    let linking: Vec<f32> = seen.iter().copied().take_while(|&f| f < 0.65).collect();
    assert!(linking.len() >= 4, "{seen:?}");
    assert!(linking.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(linking[0] > 0.1 && linking[3] > 0.5, "{seen:?}");
    assert!(
        seen[linking.len()..]
            .iter()
            .all(|&f| (0.65..=1.0).contains(&f)),
        "{seen:?}"
    );
}
