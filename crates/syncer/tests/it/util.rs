//! Test helpers: loop-mounted ext4 (on `testkit`), odd trees, and a metadata comparison.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use testkit::LoopImage;

pub use testkit::root_or_skip_here;

/// An ext4 filesystem (no reserved blocks) in an image file on a loop device, mounted;
/// unmounted and detached on drop.
pub struct LoopFs {
    pub mnt: PathBuf,
    _img: LoopImage,
}

impl LoopFs {
    pub fn new(size_mib: u64) -> Self {
        let img = LoopImage::ext4_with(size_mib, &["-m", "0"]);
        Self {
            mnt: img.mount("mnt"),
            _img: img,
        }
    }
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// The `user.*` extended attributes of `path` and its POSIX ACLs (`system.posix_acl_*`),
/// not following symlinks.
pub fn user_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(
        n >= 0,
        "listxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        if !name.starts_with(b"user.") && !name.starts_with(b"system.posix_acl_") {
            continue;
        }
        let cname = CString::new(name).unwrap();
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: as above.
        let len = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        assert!(len >= 0);
        val.truncate(len as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), val);
    }
    out
}

/// Sets a POSIX ACL (`default`: the folder's default ACL) granting `uid` read and execute,
/// in the kernel's `system.posix_acl_*` format (no `setfacl` needed).
pub fn set_acl(path: &Path, uid: u32, default: bool) {
    const UNDEFINED: u32 = u32::MAX;
    // (tag, permissions, id): USER_OBJ, USER, GROUP_OBJ, MASK, OTHER, sorted by tag.
    let entries = [
        (0x01u16, 7u16, UNDEFINED),
        (0x02, 5, uid),
        (0x04, 5, UNDEFINED),
        (0x10, 7, UNDEFINED),
        (0x20, 0, UNDEFINED),
    ];
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    let name = if default {
        "system.posix_acl_default"
    } else {
        "system.posix_acl_access"
    };
    set_xattr(path, name, &v);
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Fills `root` with the awkward cases: hard links, symlinks (one dangling), `user.*`
/// xattrs, setgid/sticky folders, a 0000 and a setuid file, a foreign owner, odd names
/// (spaces, newline, non-UTF-8 bytes, leading dashes), a sparse file, fixed mtimes.
pub fn odd_tree(root: &Path) {
    let d = |p: &str| {
        let path = root.join(p);
        fs::create_dir_all(&path).unwrap();
        path
    };
    d("plain/sub");
    write(&root.join("plain/a.txt"), b"hello\n");
    write(
        &root.join("plain/sub/b.bin"),
        &(0..=255u8).cycle().take(70_000).collect::<Vec<_>>(),
    );
    // Hard links: three names, one inode; another pair across folders.
    write(&root.join("plain/linked"), b"one inode, three names\n");
    fs::hard_link(root.join("plain/linked"), root.join("plain/linked2")).unwrap();
    fs::hard_link(root.join("plain/linked"), root.join("plain/sub/linked3")).unwrap();
    // Symlinks, one dangling, one absolute.
    std::os::unix::fs::symlink("a.txt", root.join("plain/to-a")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("plain/dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("plain/absolute")).unwrap();
    // xattrs on a file and a folder.
    set_xattr(&root.join("plain/a.txt"), "user.comment", b"keep me");
    set_xattr(&root.join("plain/sub"), "user.bin", &[0, 1, 2, 255]);
    // Odd permissions and owners.
    let sg = d("setgid-dir");
    fs::set_permissions(&sg, fs::Permissions::from_mode(0o2775)).unwrap();
    write(&sg.join("inside"), b"x");
    let sticky = d("sticky");
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).unwrap();
    let zero = root.join("mode-0000");
    write(&zero, b"secret-ish");
    fs::set_permissions(&zero, fs::Permissions::from_mode(0o000)).unwrap();
    let suid = root.join("setuid");
    write(&suid, b"#!/bin/sh\n");
    fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).unwrap();
    let foreign = root.join("owned-by-1234");
    write(&foreign, b"not root's");
    std::os::unix::fs::lchown(&foreign, Some(1234), Some(5678)).unwrap();
    // Odd names.
    let names = d("names");
    for n in [
        &b"with space"[..],
        b"new\nline",
        b"bad-\xff\xfe-utf8",
        b"-leading-dash",
        b"--delete",
        b"tab\there",
        b"\xc3\xa9t\xc3\xa9",
    ] {
        write(&names.join(OsStr::from_bytes(n)), n);
    }
    // A sparse file: 8 MiB with two written blocks.
    let mut f = fs::File::create(root.join("sparse.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"data in the middle").unwrap();
    f.seek(SeekFrom::Start((8 << 20) - 4)).unwrap();
    f.write_all(b"end!").unwrap();
    drop(f);
    // Fixed, distinct mtimes on the files (folders get theirs from rsync at the end).
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    for (i, p) in ["plain/a.txt", "plain/sub/b.bin", "sparse.img", "setuid"]
        .iter()
        .enumerate()
    {
        let f = fs::File::options().write(true).open(root.join(p)).unwrap();
        f.set_modified(base + Duration::from_nanos(i as u64 * 1_000_000_123))
            .unwrap();
    }
}

/// [`odd_tree`] and more: POSIX ACLs (access and default), a fifo, empty folders, a file
/// owned by a uid and gid without a passwd entry, an xattr and an ACL on `root` itself,
/// then fixed mtimes on folders (the root's too) and a distinct mode on the root.
pub fn odder_tree(root: &Path) {
    odd_tree(root);
    let acl = root.join("acl");
    fs::create_dir(&acl).unwrap();
    write(&acl.join("shared.txt"), b"readable by uid 4321\n");
    set_acl(&acl.join("shared.txt"), 4321, false);
    set_acl(&acl, 4321, false);
    set_acl(&acl, 4321, true);
    nix::unistd::mkfifo(
        &root.join("plain/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::create_dir_all(root.join("empty/and-empty-inside")).unwrap();
    let nobody = root.join("uid-without-passwd");
    write(&nobody, b"owner 777777:888888\n");
    std::os::unix::fs::lchown(&nobody, Some(777_777), Some(888_888)).unwrap();
    set_xattr(&root.join("sparse.img"), "user.sparse", b"yes");
    set_xattr(root, "user.root", b"top");
    set_acl(root, 4321, true);
    fs::set_permissions(root, fs::Permissions::from_mode(0o2750)).unwrap();
    // Folder mtimes last: writing inside a folder changes its mtime.
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let mut dirs: Vec<PathBuf> = entries(root)
        .into_iter()
        .filter(|r| fs::symlink_metadata(root.join(r)).unwrap().is_dir())
        .collect();
    dirs.reverse();
    dirs.push(PathBuf::new());
    for (i, d) in dirs.iter().enumerate() {
        let f = fs::File::open(root.join(d)).unwrap();
        f.set_modified(base + Duration::from_nanos(i as u64 * 7_000_000_011))
            .unwrap();
    }
}

/// Bytes allocated on the disk for `path` (holes take none).
/// A source folder in `dir` holding one 24 MiB file: too big for an 8 MiB drive.
pub fn too_big_source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i % 253) as u8).collect();
    fs::write(src.join("too-big"), data).unwrap();
    src
}

pub fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// Relative paths of every entry below `root` (not `root` itself), skipping a top-level
/// `lost+found`.
pub fn entries(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let mut names: Vec<OsString> = fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            if rel.as_os_str().is_empty() && n == "lost+found" {
                continue;
            }
            let r = rel.join(&n);
            out.push(r.clone());
            if fs::symlink_metadata(root.join(&r)).unwrap().is_dir() {
                walk(root, &r, out);
            }
        }
    }
    let mut out = vec![];
    walk(root, Path::new(""), &mut out);
    out
}

/// Asserts `target` mirrors `source`: same entries and, for each, same type, mode,
/// uid/gid, mtime (ns), size, content, symlink target, `user.*` xattrs and link count
/// within the tree;
/// hard links share an inode on the target exactly when they do on the source.
pub fn assert_same_tree(source: &Path, target: &Path) {
    let se = entries(source);
    let te = entries(target);
    assert_eq!(se, te, "the trees hold different entries");
    // Link counts within each tree: a generation's files are also linked from the other
    // generations, so the inode's own count says more than the tree's.
    let in_tree = |root: &Path| {
        let mut n: HashMap<u64, u64> = HashMap::new();
        for r in &se {
            let m = fs::symlink_metadata(root.join(r)).unwrap();
            if !m.is_dir() {
                *n.entry(m.ino()).or_default() += 1;
            }
        }
        n
    };
    let (s_links, t_links) = (in_tree(source), in_tree(target));
    let mut inode_map: HashMap<u64, u64> = HashMap::new();
    for rel in std::iter::once(PathBuf::new()).chain(se) {
        let (s, t) = (source.join(&rel), target.join(&rel));
        let (sm, tm) = (
            fs::symlink_metadata(&s).unwrap(),
            fs::symlink_metadata(&t).unwrap(),
        );
        let what = rel.display();
        assert_eq!(sm.mode(), tm.mode(), "mode of {what}");
        assert_eq!(
            (sm.uid(), sm.gid()),
            (tm.uid(), tm.gid()),
            "owner of {what}"
        );
        assert_eq!(
            (sm.mtime(), sm.mtime_nsec()),
            (tm.mtime(), tm.mtime_nsec()),
            "mtime of {what}"
        );
        assert_eq!(user_xattrs(&s), user_xattrs(&t), "xattrs of {what}");
        if sm.is_dir() {
            continue;
        }
        assert_eq!(sm.len(), tm.len(), "size of {what}");
        assert_eq!(
            s_links[&sm.ino()],
            t_links[&tm.ino()],
            "link count of {what} within the tree"
        );
        if sm.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&s).unwrap(),
                fs::read_link(&t).unwrap(),
                "{what}"
            );
        } else if sm.is_file() {
            assert!(
                fs::read(&s).unwrap() == fs::read(&t).unwrap(),
                "content of {what}"
            );
            let mapped = *inode_map.entry(sm.ino()).or_insert(tm.ino());
            assert_eq!(mapped, tm.ino(), "hard links of {what} are not shared");
        } else {
            // A fifo, socket or device node: never opened (a fifo would block).
            assert_eq!(sm.rdev(), tm.rdev(), "device number of {what}");
        }
    }
    // Distinct source inodes must stay distinct.
    let mut seen: Vec<u64> = inode_map.values().copied().collect();
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "distinct files were merged into one inode");
}

/// Sum of regular file sizes plus symlink target lengths (rsync's "Total file size").
pub fn total_size(root: &Path) -> u64 {
    entries(root)
        .iter()
        .map(|r| fs::symlink_metadata(root.join(r)).unwrap())
        .filter(|m| !m.is_dir())
        .map(|m| m.len())
        .sum()
}

/// A name that is not valid UTF-8, for callers that need an OsString.
pub fn non_utf8(name: &[u8]) -> OsString {
    OsString::from_vec(name.to_vec())
}
