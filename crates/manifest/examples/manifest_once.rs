//! Makes the manifest of the new generation TREE as a run does after the copy (entries
//! carried over from the sidecar PREVIOUS for the inodes it lists, the rest read on the
//! hashing threads; `MANIFEST_MIRROR=1`: inode, size and mtime must match, as for a
//! mirror) and writes the sidecar to OUT and the `sha256sum` listing beside it as the run
//! does (`Beneath::write_atomic_all`: temporary files fsynced, renamed, the folder fsynced
//! once). Prints what it did. Used by
//! `cargo xtask bench manifest`.
//!
//! usage: manifest_once TREE OUT [PREVIOUS]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (tree, out, prev) = match args.as_slice() {
        [t, o] => (t, o, None),
        [t, o, p] => (t, o, Some(p)),
        _ => {
            eprintln!("usage: manifest_once TREE OUT [PREVIOUS]");
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    let result = (|| -> Result<manifest::Stats, String> {
        let previous = match prev {
            Some(p) => Some(
                manifest::Manifest::parse_sidecar(&std::fs::read(p).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let (m, stats) = manifest::build(
            tree,
            previous.as_ref(),
            if std::env::var_os("MANIFEST_MIRROR").is_some() {
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
