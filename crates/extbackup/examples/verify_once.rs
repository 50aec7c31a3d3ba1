//! `verify_once SOURCE COPY`: what `extbackup verify NAME --full` does once the drive is
//! open, for the benchmark (`cargo xtask bench`, xtask/src/bench/verify.rs): compares every
//! entry's metadata and every file's SHA-256 on both sides. Prints the summary; exit 0 when
//! clean, 1 on differences, 2 on errors.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, source, copy] = args.as_slice() else {
        eprintln!("usage: verify_once SOURCE COPY");
        return ExitCode::from(2);
    };
    let single = extbackup::config::Source {
        name: None,
        path: source.into(),
        exclude: Default::default(),
        lock: None,
    };
    match extbackup::drive::verify::verify(
        "bench",
        &[single],
        Path::new(copy),
        extbackup::drive::verify::Depth::Full,
    ) {
        Ok(r) => {
            for d in r.differences.iter().take(10) {
                eprintln!("{d}");
            }
            println!("{}", r.summary());
            ExitCode::from(if r.clean() { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("{}", e.chain().join(": "));
            ExitCode::from(2)
        }
    }
}
