//! Makes the manifest of the new generation TREE as a run does after the copy (entries
//! carried over from the sidecar PREVIOUS for the inodes it lists, the rest read on the
//! hashing threads; `MANIFEST_MIRROR=1`: inode, size and mtime must match, as for a
//! mirror) and writes the sidecar to OUT and the `sha256sum` listing beside it as the run
//! does (`Beneath::write_atomic_all`: temporary files fsynced, renamed, the folder fsynced
//! once). Prints what it did. Used by
//! `cargo xtask bench manifest`.
//!
//! With `--copy-with PROGRAM SOURCE TREE OUT` it first runs `PROGRAM SOURCE TREE` (the
//! first copy: the syncer's `sync_once`) and hashes TREE's finished files while it runs
//! (`manifest::follow`), as the run's sync step does, then reads what is left.
//!
//! usage: manifest_once TREE OUT [PREVIOUS] | manifest_once --copy-with PROGRAM SOURCE TREE OUT

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (tree, out, prev, copy) = match args.as_slice() {
        [t, o] => (t, o, None, None),
        [t, o, p] => (t, o, Some(p), None),
        [flag, prog, src, t, o] if flag.as_os_str() == "--copy-with" => {
            (t, o, None, Some((prog, src)))
        }
        _ => {
            eprintln!(
                "usage: manifest_once TREE OUT [PREVIOUS] | manifest_once --copy-with PROGRAM SOURCE TREE OUT"
            );
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    let result = (|| -> Result<manifest::Stats, String> {
        let mut previous = match prev {
            Some(p) => Some(
                manifest::Manifest::parse_sidecar(&std::fs::read(p).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        // A first copy: `PROGRAM SOURCE TREE` runs while the hashing follows it, as the
        // run's sync step does (manifest::follow), then the rest is read.
        if let Some((prog, src)) = copy {
            let stop = std::sync::atomic::AtomicBool::new(false);
            let started = std::time::SystemTime::now();
            let mut child = std::process::Command::new(prog)
                .arg(src)
                .arg(tree)
                .stdout(std::process::Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            let (status, during) = std::thread::scope(|s| {
                let h = s.spawn(|| {
                    manifest::follow(tree, started, &stop, std::time::Duration::from_millis(250))
                });
                let status = child.wait();
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                (status, h.join().expect("the follower does not panic"))
            });
            let status = status.map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("{} failed: {status}", prog.display()));
            }
            eprintln!("{} file(s) hashed during the copy", during.entries.len());
            previous = Some(during);
        }
        let (m, stats) = manifest::build(
            tree,
            previous.as_ref(),
            if copy.is_some() || std::env::var_os("MANIFEST_MIRROR").is_some() {
                manifest::Carry::SameInodeSizeMtime
            } else {
                manifest::Carry::SameInode
            },
        )
        .map_err(|e| e.to_string())?;
        // As the run writes them: both through the drive handle, fsynced, renamed, the
        // folder fsynced once.
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let h = oskit::beneath::Beneath::open(dir).map_err(|e| e.to_string())?;
        let side = std::path::Path::new(out.file_name().ok_or("OUT has no name")?);
        let list = side.with_extension("sha256");
        h.write_atomic_all(
            &[(side, &m.to_sidecar()), (&list, &m.to_sha256sum())],
            0o644,
        )
        .map_err(|e| e.to_string())?;
        Ok(stats)
    })();
    match result {
        Ok(s) => {
            println!(
                "{} files, {} read ({} bytes), {} carried over, in {:.3} s",
                s.files,
                s.read,
                s.bytes_read,
                s.carried,
                t0.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("manifest_once: {e}");
            ExitCode::FAILURE
        }
    }
}
