//! `cargo xtask bench`: every benchmark of the workspace, in one run.
//!
//! Each area has a module with `pub fn run(root: &Path) -> anyhow::Result<()>` that
//! measures its subject and a baseline in the same run and prints the ratio.

pub mod blinkstick;
pub mod crypt;
pub mod extbackup;
pub mod first_copy;
pub mod history;
pub mod indicator;
pub mod manifest;
pub mod scale;
pub mod sync;
pub mod verify;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One area's benchmark: `run(root)`.
type Bench = fn(&Path) -> Result<()>;

/// The benchmark areas, in the order `cargo xtask bench` runs them.
const AREAS: &[(&str, Bench)] = &[
    ("blinkstick", blinkstick::run),
    ("crypt", crypt::run),
    ("extbackup", extbackup::run),
    ("first-copy", first_copy::run),
    ("history", history::run),
    ("indicator", indicator::run),
    ("manifest", manifest::run),
    ("scale", scale::run),
    ("sync", sync::run),
    ("verify", verify::run),
];

/// Runs every benchmark in turn (or only the areas named, e.g. `cargo xtask bench verify`);
/// stops at the first that fails. `scale` runs only when named; `--files N` sets its number
/// of files.
pub fn run(args: &[String]) -> Result<()> {
    let mut args = args.to_vec();
    if let Some(i) = args.iter().position(|a| a == "--files") {
        let n = args
            .get(i + 1)
            .and_then(|n| n.replace(['_', ','], "").parse::<usize>().ok())
            .filter(|n| *n > 0)
            .context(
                "--files needs a number of files, e.g. `cargo xtask bench scale --files 50000`",
            )?;
        let _ = scale::FILES.set(n);
        args.drain(i..i + 2);
    }
    let args = &args[..];
    for a in args {
        if !AREAS.iter().any(|(n, _)| n == a) {
            let names: Vec<&str> = AREAS.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown benchmark `{a}` for `cargo xtask bench` (areas: {})",
                names.join(", ")
            );
        }
    }
    let root = crate::util::root();
    for (name, f) in AREAS {
        // `scale` takes minutes and gigabytes: only when named.
        if (args.is_empty() && *name != "scale") || args.iter().any(|a| a == name) {
            f(&root)?;
        }
    }
    Ok(())
}

/// Cargo's target folder: `$CARGO_TARGET_DIR`, or `target/` under the workspace root.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// `cargo build --release --quiet -p PKG [TARGETS...]` (e.g. `["--bin", "x"]`); returns
/// the folder the release artifacts land in (`<target>/release`).
pub fn build_release(root: &Path, pkg: &str, targets: &[&str]) -> Result<PathBuf> {
    eprintln!("bench {pkg}: building the release build");
    let mut args = vec!["build", "--release", "--quiet", "-p", pkg];
    args.extend_from_slice(targets);
    crate::util::cargo(root, &args, &[])?;
    Ok(target_dir(root).join("release"))
}

/// Builds the example `example` of `pkg` in release mode and returns its path.
pub fn release_example(root: &Path, pkg: &str, example: &str) -> Result<PathBuf> {
    Ok(build_release(root, pkg, &["--example", example])?
        .join("examples")
        .join(example))
}

/// Runs a built benchmark program, prints its stdout after `prefix`, and fails with
/// `failure` followed by its stderr when it exits non-zero (a target was missed).
pub fn run_printing(exe: &Path, prefix: &str, failure: &str) -> Result<()> {
    let name = exe.file_name().unwrap_or_default().to_string_lossy();
    let out = Command::new(exe)
        .output()
        .with_context(|| format!("running the {name} example"))?;
    print!("{prefix}{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("{failure}{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The shape of a benchmark's source tree: `dirs` folders of `files_per_dir` small files
/// (200..4000 bytes each), and `big_files` files of `big_size` bytes at the top.
pub struct Tree {
    pub dirs: usize,
    pub files_per_dir: usize,
    pub big_files: usize,
    pub big_size: usize,
}

impl Tree {
    /// How many small files.
    pub const fn small_files(&self) -> usize {
        self.dirs * self.files_per_dir
    }

    /// The big files' total size, in MiB.
    pub const fn big_mib(&self) -> usize {
        (self.big_files * self.big_size) >> 20
    }

    /// Says on stderr what the benchmark `bench` is generating, then writes the tree under
    /// `src` ([`generate_tree`]).
    pub fn generate(&self, bench: &str, src: &Path) -> Result<()> {
        let big = if self.big_files == 0 {
            String::new()
        } else {
            format!(" and {} x {} MiB", self.big_files, self.big_size >> 20)
        };
        eprintln!(
            "bench {bench}: generating {} small files{big} in {}",
            self.small_files(),
            src.display()
        );
        generate_tree(src, self)
    }
}

/// Runs `f` in a new work folder `extbackup-bench-NAME-PID` in the temp folder, then
/// removes the folder whatever `f` returned.
pub fn in_work_dir(name: &str, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let work = std::env::temp_dir().join(format!("extbackup-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = f(&work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Writes `tree` under `src` with cheap pseudo-random content (xorshift: not compressible,
/// no two files alike), the same for every run; big files are written 1 MiB at a time.
pub fn generate_tree(src: &Path, tree: &Tree) -> Result<()> {
    use std::io::Write;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    std::fs::create_dir_all(src)?;
    for d in 0..tree.dirs {
        let dir = src.join(format!("dir{d:03}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..tree.files_per_dir {
            let len = 200 + (next() % 3800) as usize;
            let data: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
            std::fs::write(dir.join(format!("file{f:03}.dat")), data)?;
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    for b in 0..tree.big_files {
        let mut f = std::fs::File::create(src.join(format!("big{b}.bin")))?;
        let mut left = tree.big_size;
        while left > 0 {
            for c in buf.chunks_mut(8) {
                c.copy_from_slice(&next().to_le_bytes());
            }
            let n = left.min(buf.len());
            f.write_all(&buf[..n])?;
            left -= n;
        }
    }
    Ok(())
}

/// Runs `cmd` without echoing it (benches run commands inside their timed loops): its
/// trimmed standard output, or an error with its output when it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A loop device over an image file, detached on drop.
pub struct LoopDev(pub String);

impl LoopDev {
    /// `losetup ARGS --find --show IMAGE`.
    pub fn attach(args: &[&str], image: &Path) -> Result<Self> {
        output(
            Command::new("losetup")
                .args(args)
                .args(["--find", "--show"])
                .arg(image),
        )
        .map(LoopDev)
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A new filesystem (`mkfs` is its command, e.g. `["mkfs.ext4", "-q", "-F"]`) on a 2 GiB
/// image `work/NAME.img` over a loop device, mounted at `work/NAME-mnt`; unmounted and
/// detached on drop.
pub struct LoopFs {
    /// The mount point.
    pub mnt: PathBuf,
    /// The image file.
    pub image: PathBuf,
    /// Held for its drop: detached after the unmount.
    _dev: LoopDev,
}

impl LoopFs {
    pub fn new(work: &Path, name: &str, mkfs: &[&str]) -> Result<Self> {
        let image = work.join(format!("{name}.img"));
        std::fs::File::create(&image)?.set_len(2 << 30)?;
        // mkfs on the image file, before it is attached (as the first-copy bench always did).
        output(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image))?;
        let dev = LoopDev::attach(&[], &image)?;
        let mnt = work.join(format!("{name}-mnt"));
        std::fs::create_dir_all(&mnt)?;
        output(Command::new("mount").arg(&dev.0).arg(&mnt))?;
        Ok(LoopFs {
            mnt,
            image,
            _dev: dev,
        })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // The loop device is detached after this, when the field `_dev` is dropped.
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// The median of `times` (the upper one of the middle two for an even count).
///
/// Panics on an empty slice.
pub fn median(times: &[Duration]) -> Duration {
    let mut v = times.to_vec();
    v.sort();
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(&[ms(4), ms(1), ms(3), ms(2)]), ms(3));
        assert_eq!(median(&[ms(7)]), ms(7));
    }
}

#[cfg(test)]
mod tree_tests {
    #[test]
    fn a_tree_has_its_shape_and_the_same_content_each_time() {
        let t = tempfile_dir();
        let shape = super::Tree {
            dirs: 2,
            files_per_dir: 3,
            big_files: 1,
            big_size: (3 << 20) / 2,
        };
        super::generate_tree(&t.join("a"), &shape).unwrap();
        super::generate_tree(&t.join("b"), &shape).unwrap();
        let big = std::fs::read(t.join("a/big0.bin")).unwrap();
        assert_eq!(big.len(), (3 << 20) / 2);
        assert_eq!(big, std::fs::read(t.join("b/big0.bin")).unwrap());
        assert_eq!(std::fs::read_dir(t.join("a/dir001")).unwrap().count(), 3);
        assert_eq!((shape.small_files(), shape.big_mib()), (6, 1));
        let _ = std::fs::remove_dir_all(&t);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("bench-tree-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
