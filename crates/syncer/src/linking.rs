//! The linking pass of a new generation (issue 22): before rsync runs, every regular file
//! of the source whose copy in the previous generation is identical in every respect
//! `rsync -aHAX --numeric-ids` compares (size, modification time to the nanosecond, the
//! whole mode, owner, group, and every extended attribute, POSIX ACLs included as their
//! `system.posix_acl_*` attributes) is hard-linked into the new generation, its folders
//! made on the way. rsync then runs over the nearly complete tree without `--link-dest`:
//! it finds the linked files up to date and changes nothing about them, and copies the
//! rest as new inodes (without `--inplace` it writes a temporary file and renames it).
//!
//! Measured (`cargo xtask bench scale`, 200,000 files on loop-device ext4): rsync
//! `--link-dest` alone built a no-change generation in 13.0 s, this pass and rsync in
//! 7.6 s; the whole run 1.09x `cp -al` + a bare no-change `rsync -aHAX --delete` (before:
//! 2.4x at 300,000 files, issue 22). The pass is a `cp -al` that looks before it links;
//! rsync after it is a no-change mirror run.
//!
//! What is never linked, so that no inode an older generation holds is ever changed in
//! place by the rsync pass:
//! - a file that differs in anything rsync compares (a `chmod`, `chown`, `setfattr`,
//!   `setfacl` or `touch` alone in the source): rsync writes a new inode for it;
//! - a file whose copy in the previous generation was changed (its ctime) since this pass
//!   began (the filesystem's clock, read off the target folder): that is how a copy already linked under another name of this
//!   pass is seen without remembering every inode (two files of the source that were one
//!   hard-link group when the previous generation was made, and no longer are, must not
//!   become one again);
//! - a hard-link group of the source (several names, one inode) whose names do not all
//!   lead to one identical inode of the previous generation; each group is linked whole or
//!   not at all (the names rsync's `-H` then makes are links to a copy of ours or to its
//!   own, never a change of an old inode);
//! - a group whose copy in the previous generation would pass the filesystem's links per
//!   inode (`link_max`): counted in [`Linked::over_link_limit`], rsync copies it as one new
//!   inode (rsync given such a link loops on "Too many links").
//!
//! When resuming an interrupted generation, an entry already in the target is not linked
//! again; a regular file there with more than one link that is not identical to the source
//! is removed, so that the rsync pass writes a new inode instead of changing a shared one.

use crate::{generations, guard, Excludes};
use nix::libc;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

/// What the linking pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Linked {
    /// Files hard-linked to the previous generation.
    pub linked: u64,
    /// Folders made in the target.
    pub folders: u64,
    /// Names of files left to rsync because their copy in the previous generation has too
    /// many links already (see [`crate::generations::link_max`]).
    pub over_link_limit: u64,
    /// Files of a resumed target removed because they shared an inode and were no longer
    /// identical to the source.
    pub unshared: u64,
    /// What the new and changed files and the folders take on the drive, measured on the
    /// way as [`crate::generations::new_cost`] measures it (a file whose copy in the previous
    /// generation fails rsync's quick check of size and mtime counts its blocks, a hard-link
    /// group once; every folder a block). Files left unlinked for any other reason (a
    /// chmod-only change, the link limit) are not in it: what the generation takes beyond
    /// it is what the link-dest alarm looks at.
    pub new_bytes: u64,
}

/// The filesystem's clock now, as the ctime it gives an inode changed now: `target`'s
/// mode set to itself (a change of its ctime and nothing else; rsync sets the folder's
/// metadata afterwards anyway), then read back. Any inode linked by this pass gets a ctime
/// at or after it.
///
/// On a filesystem that keeps whole seconds (ext4 with 128-byte inodes, as `mkfs.ext4`
/// makes below 512 MiB), an inode changed earlier in the same second would read as
/// changed by this pass: the clock is read again until its second has passed (at most a
/// second, and only there).
fn now_on(target: &Path) -> io::Result<(i64, i64)> {
    let perms = fs::symlink_metadata(target)?.permissions();
    let mut first = None;
    loop {
        fs::set_permissions(target, perms.clone())?;
        let md = fs::symlink_metadata(target)?;
        let now = (md.ctime(), md.ctime_nsec());
        match first {
            _ if now.1 != 0 => return Ok(now),
            Some(s) if now.0 > s => return Ok(now),
            None => first = Some(now.0),
            Some(_) => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What became of a hard-link group of the source (several names on one source inode).
#[derive(Clone, Copy)]
enum Group {
    /// Linked to this inode of the previous generation (device, inode).
    To(u64),
    /// Not linked; `true` when for the link limit.
    No(bool),
}

/// Links the unchanged files of `source` from `previous` into `target` (see the module).
/// `target` exists. `walked` is told every 1024 entries of the source how many it has
/// walked (for progress). Errors are the filesystem's (e.g. ENOSPC making a folder); the caller
/// decides what a failed pass means (the files linked so far are identical to the source,
/// so the tree stays correct for rsync to finish).
pub fn link_unchanged(
    source: &Path,
    previous: &Path,
    target: &Path,
    exclude: &Excludes,
    link_max: Option<u64>,
    walked: &mut dyn FnMut(u64),
) -> io::Result<Linked> {
    let fresh_before = now_on(target)?;
    let mut out = Linked {
        new_bytes: generations::FOLDER_BYTES,
        ..Linked::default()
    };
    let mut counted: HashSet<(u64, u64)> = HashSet::new();
    let mut groups: HashMap<(u64, u64), Group> = HashMap::new();
    // Folders this pass made: nothing of theirs is in the target yet, so no look first.
    let mut made: Vec<std::path::PathBuf> = Vec::new();
    let mut it = walkdir::WalkDir::new(source).min_depth(1).into_iter();
    let mut entries = 0u64;
    while let Some(e) = it.next() {
        entries += 1;
        if entries.is_multiple_of(1024) {
            walked(entries);
        }
        let e = match e {
            Ok(e) => e,
            // Vanished meanwhile: rsync sees what is there when it gets there.
            Err(err) if err.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
                continue
            }
            Err(err) => return Err(err.into()),
        };
        let rel = e.path().strip_prefix(source).unwrap_or(e.path());
        let ft = e.file_type();
        let dir = ft.is_dir();
        if (e.depth() == 1 && guard::IGNORED_AT_ROOT.iter().any(|n| e.file_name() == *n))
            || exclude.excludes(rel, dir)
        {
            if dir {
                it.skip_current_dir();
            }
            continue;
        }
        // Folders left behind by walkdir's depth-first order are no longer "made".
        while made
            .last()
            .is_some_and(|m| !rel.starts_with(m) || rel == m.as_path())
        {
            made.pop();
        }
        let parent_made = made
            .last()
            .is_some_and(|m| rel.parent() == Some(m.as_path()));
        let dst = target.join(rel);
        if dir {
            out.new_bytes += generations::FOLDER_BYTES;
            let mut b = fs::DirBuilder::new();
            b.mode(0o700);
            match b.create(&dst) {
                Ok(()) => {
                    out.folders += 1;
                    made.push(rel.to_path_buf());
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && !parent_made => {
                    if !fs::symlink_metadata(&dst)?.is_dir() {
                        // Something else by that name (resumed target): rsync replaces it;
                        // nothing is linked beneath.
                        it.skip_current_dir();
                    }
                }
                Err(err) => return Err(err),
            }
            continue;
        }
        if !ft.is_file() {
            continue;
        }
        let src = match e.metadata() {
            Ok(m) => m,
            Err(err) if err.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) => {
                continue
            }
            Err(err) => return Err(err.into()),
        };
        if !parent_made {
            match fs::symlink_metadata(&dst) {
                Ok(have) => {
                    let prev = fs::symlink_metadata(previous.join(rel)).ok();
                    count_new(&mut out, &mut counted, &src, prev.as_ref());
                    if have.is_file()
                        && have.nlink() > 1
                        && !identical(&src, e.path(), &have, &dst)?
                    {
                        fs::remove_file(&dst)?;
                        out.unshared += 1;
                    }
                    continue;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        let from = previous.join(rel);
        let prev = match fs::symlink_metadata(&from) {
            Ok(p) if p.is_file() => p,
            Ok(_) => {
                count_new(&mut out, &mut counted, &src, None);
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                count_new(&mut out, &mut counted, &src, None);
                continue;
            }
            Err(err) => return Err(err),
        };
        count_new(&mut out, &mut counted, &src, Some(&prev));
        let group_key = (src.nlink() > 1).then(|| (src.dev(), src.ino()));
        if let Some(k) = group_key {
            match groups.get(&k) {
                Some(Group::To(ino)) => {
                    if prev.ino() == *ino && identical(&src, e.path(), &prev, &from)? {
                        link(&from, &dst, &mut out)?;
                    }
                    continue;
                }
                Some(Group::No(limit)) => {
                    out.over_link_limit += u64::from(*limit);
                    continue;
                }
                None => {}
            }
        }
        let changed_lately = (prev.ctime(), prev.ctime_nsec()) >= fresh_before;
        let over_limit = link_max.is_some_and(|max| prev.nlink() + src.nlink() > max);
        let linkable = !changed_lately && !over_limit && identical(&src, e.path(), &prev, &from)?;
        if let Some(k) = group_key {
            groups.insert(
                k,
                if linkable {
                    Group::To(prev.ino())
                } else {
                    Group::No(over_limit)
                },
            );
        }
        if over_limit {
            out.over_link_limit += 1;
        }
        if linkable {
            link(&from, &dst, &mut out)?;
        }
    }
    Ok(out)
}

/// Adds the file `src` to [`Linked::new_bytes`] unless `prev`, its copy in the previous
/// generation, passes rsync's quick check (same size and mtime); a hard-link group once.
fn count_new(
    out: &mut Linked,
    counted: &mut HashSet<(u64, u64)>,
    src: &fs::Metadata,
    prev: Option<&fs::Metadata>,
) {
    if src.nlink() > 1 && !counted.insert((src.dev(), src.ino())) {
        return;
    }
    if !prev.is_some_and(|p| generations::quick_same(p, src)) {
        out.new_bytes += src.blocks() * 512;
    }
}

fn link(from: &Path, to: &Path, out: &mut Linked) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => {
            out.linked += 1;
            Ok(())
        }
        // Passed the limit meanwhile (another name linked elsewhere): rsync copies it.
        Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {
            out.over_link_limit += 1;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether the file `b` (metadata `bm`) is what `rsync -aHAX --numeric-ids
/// --modify-window=-1` would leave alone as a copy of `a`: same size, modification time to
/// the nanosecond, mode, owner and group, and the same extended attributes (names and
/// values, ACLs included).
pub fn identical(am: &fs::Metadata, a: &Path, bm: &fs::Metadata, b: &Path) -> io::Result<bool> {
    if am.size() != bm.size()
        || (am.mtime(), am.mtime_nsec()) != (bm.mtime(), bm.mtime_nsec())
        || am.mode() != bm.mode()
        || am.uid() != bm.uid()
        || am.gid() != bm.gid()
    {
        return Ok(false);
    }
    match (xattrs(a), xattrs(b)) {
        (Ok(x), Ok(y)) => Ok(x == y),
        // Vanished meanwhile: not linked; rsync sees what is there.
        (Err(e), _) | (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Every extended attribute of `p` (not following a symbolic link), sorted by name.
fn xattrs(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let names = grow(|buf, len| {
        // SAFETY: a NUL-terminated path and a buffer of `len` bytes (null when 0: size query).
        unsafe { libc::llistxattr(c.as_ptr(), buf.cast(), len) }
    })?;
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let value = grow(|buf, len| {
            // SAFETY: NUL-terminated path and name, a buffer of `len` bytes.
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.cast(), len) }
        })?;
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Calls a size-query-then-fill xattr call until the buffer is big enough.
fn grow(mut call: impl FnMut(*mut u8, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let n = call(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; n as usize];
        let got = call(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source with a two-name group, a single file and a changed file; a "previous
    /// generation" that is a hard-linked copy of it (as `cp -al` makes).
    fn setup(t: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (src, prev, new) = (t.join("src"), t.join("prev"), t.join("new"));
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/a"), b"group\n").unwrap();
        fs::hard_link(src.join("d/a"), src.join("b")).unwrap();
        fs::write(src.join("single"), b"single\n").unwrap();
        fs::write(src.join("changed"), b"old\n").unwrap();
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&prev)
            .status()
            .unwrap();
        assert!(st.success());
        fs::write(src.join("changed"), b"new content\n").unwrap();
        fs::create_dir(&new).unwrap();
        (src, prev, new)
    }

    use std::path::PathBuf;

    #[test]
    fn measures_what_new_and_changed_files_take_as_new_cost_does_and_not_a_chmod() {
        let t = tempfile::tempdir().unwrap();
        let (src, prev, new) = setup(t.path());
        // A new file, and a chmod-only change: rsync's quick check calls its content
        // unchanged, so it is not "new" (the alarm looks at what it costs beyond).
        fs::write(src.join("fresh"), vec![7u8; 20_000]).unwrap();
        let mut p = fs::metadata(src.join("single")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o600);
        fs::set_permissions(src.join("single"), p).unwrap();
        let want = crate::generations::new_cost(&src, &prev, &Excludes::default()).unwrap();
        let l = link_unchanged(&src, &prev, &new, &Excludes::default(), None, &mut |_| ()).unwrap();
        assert_eq!(l.new_bytes, want.bytes, "{l:?}");
        let blocks = |p: &str| fs::metadata(src.join(p)).unwrap().blocks() * 512;
        assert_eq!(
            l.new_bytes,
            blocks("fresh") + blocks("changed") + 2 * generations::FOLDER_BYTES,
            "the two folders, the new and the changed file; not the chmod-only one"
        );
    }

    #[test]
    fn links_identical_files_and_groups_whole_and_leaves_the_rest() {
        let t = tempfile::tempdir().unwrap();
        let (src, prev, new) = setup(t.path());
        let l = link_unchanged(&src, &prev, &new, &Excludes::default(), None, &mut |_| ()).unwrap();
        assert_eq!((l.linked, l.folders, l.over_link_limit), (3, 1, 0), "{l:?}");
        let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
        assert_eq!(ino(&new.join("d/a")), ino(&prev.join("d/a")));
        assert_eq!(ino(&new.join("b")), ino(&new.join("d/a")));
        assert_eq!(ino(&new.join("single")), ino(&prev.join("single")));
        assert!(
            !new.join("changed").exists(),
            "a changed file is left to rsync"
        );
    }

    #[test]
    fn a_group_past_the_link_limit_is_counted_and_not_linked() {
        let t = tempfile::tempdir().unwrap();
        let (src, prev, new) = setup(t.path());
        // prev's group inode has 2 links; the group adds 2: past a limit of 3. The single
        // file (1 + 1) fits.
        let l = link_unchanged(
            &src,
            &prev,
            &new,
            &Excludes::default(),
            Some(3),
            &mut |_| (),
        )
        .unwrap();
        assert_eq!((l.linked, l.over_link_limit), (1, 2), "{l:?}");
        assert!(!new.join("b").exists() && !new.join("d/a").exists());
    }

    #[test]
    fn an_excluded_entry_is_neither_linked_nor_entered() {
        let t = tempfile::tempdir().unwrap();
        let (src, prev, new) = setup(t.path());
        let ex = Excludes::new(&["/d/", "single"]).unwrap();
        let l = link_unchanged(&src, &prev, &new, &ex, None, &mut |_| ()).unwrap();
        assert!(
            !new.join("d").exists() && !new.join("single").exists(),
            "{l:?}"
        );
    }
}
