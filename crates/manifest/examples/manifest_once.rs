//! Makes the manifest of the new generation TREE as a run does after the copy (entries
//! carried over from the sidecar PREVIOUS for the inodes it lists, the rest read on the
//! hashing threads; `MANIFEST_MIRROR=1`: inode, size and mtime must match, as for a
//! mirror) and writes the sidecar to OUT and the `sha256sum` listing beside it as the run
//! does (`Beneath::stage`, written as the walk goes: temporary files fsynced, renamed, the
//! folder fsynced once). Prints what it did. Used by
//! `cargo xtask bench manifest`.
//!
//! With `-- COPY COMMAND...` it first runs the command (which makes TREE: a first copy),
//! hashing each file the command writes as it closes it ([`manifest::follow`]), as a run
//! does on a first copy.
//!
//! usage: manifest_once TREE OUT [PREVIOUS] [-- COPY COMMAND...]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let copy = match args.iter().position(|a| a.as_os_str() == "--") {
        Some(i) => {
            let c = args.split_off(i);
            c[1..].to_vec()
        }
        None => vec![],
    };
    let (tree, out, prev) = match args.as_slice() {
        [t, o] => (t, o, None),
        [t, o, p] => (t, o, Some(p)),
        _ => {
            eprintln!("usage: manifest_once TREE OUT [PREVIOUS] [-- COPY COMMAND...]");
            return ExitCode::from(2);
        }
    };
    let t0 = Instant::now();
    let result = (|| -> Result<manifest::Stats, String> {
        // The copy command, its files hashed as it writes them (as a run's first copy).
        let seen = match copy.split_first() {
            Some((cmd, cargs)) => {
                let parent = tree.parent().ok_or("TREE has no parent")?;
                let follower = manifest::follow::Follower::start(parent)
                    .map_err(|e| format!("fanotify: {e}"))?;
                let st = std::process::Command::new(cmd)
                    .args(cargs)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .map_err(|e| e.to_string())?;
                let seen = follower.finish();
                if !st.success() {
                    return Err(format!("{cmd:?} failed: {st}"));
                }
                Some(seen)
            }
            None => None,
        };
        let previous = match prev {
            Some(p) => Some(
                manifest::format::SidecarReader::new(std::io::BufReader::new(
                    std::fs::File::open(p).map_err(|e| e.to_string())?,
                ))
                .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        // As the run writes them: both through the drive handle as the walk goes, fsynced,
        // renamed, the folder fsynced once.
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let h = oskit::beneath::Beneath::open(dir).map_err(|e| e.to_string())?;
        let side = std::path::Path::new(out.file_name().ok_or("OUT has no name")?);
        let list = side.with_extension("sha256");
        let mut staged = h.stage(&[side, &list], 0o644).map_err(|e| e.to_string())?;
        let file = |f: &mut std::fs::File| f.try_clone().map(std::io::BufWriter::new);
        let mut s = file(staged.file(0)).map_err(|e| e.to_string())?;
        let mut l = file(staged.file(1)).map_err(|e| e.to_string())?;
        let stats = manifest::write(
            tree,
            previous.into_iter().flatten(),
            if std::env::var_os("MANIFEST_MIRROR").is_some() {
                manifest::Carry::SameInodeSizeMtime
            } else {
                manifest::Carry::SameInode
            },
            seen.as_ref(),
            &mut s,
            &mut l,
        )
        .map_err(|e| e.to_string())?;
        std::io::Write::flush(&mut s).map_err(|e| e.to_string())?;
        std::io::Write::flush(&mut l).map_err(|e| e.to_string())?;
        staged.commit().map_err(|e| e.to_string())?;
        Ok(stats)
    })();
    match result {
        Ok(s) => {
            println!(
                "{} files, {} read ({} bytes), {} carried over, {} hashed alongside the copy, in {:.3} s",
                s.files,
                s.read,
                s.bytes_read,
                s.carried,
                s.alongside,
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
