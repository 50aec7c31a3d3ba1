//! Makes the manifest of TREE as a run does after the copy (hashes carried over from the
//! sidecar PREVIOUS where inode, size and mtime match, the rest read on the hashing
//! threads) and writes the sidecar to OUT and the `sha256sum` listing beside it, each
//! atomically (temporary file, fsync, rename). Prints what it did. Used by
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
        let (m, stats) = manifest::build(tree, previous.as_ref()).map_err(|e| e.to_string())?;
        oskit::write_atomic(out, &m.to_sidecar(), Some(0o644)).map_err(|e| e.to_string())?;
        oskit::write_atomic(
            &out.with_extension("sha256"),
            &m.to_sha256sum(),
            Some(0o644),
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
