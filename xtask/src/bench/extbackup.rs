//! `extbackup` benchmark (as root, on a loop device with the loopback-test crypt backend):
//!
//! 1. Time from starting `extbackup run` to the working indicator: the console indicator's
//!    first `working` line on stdout, read through a pipe (process start, config, identify
//!    with the key-file check, indicator). Target < 50 ms.
//! 2. Pipeline overhead outside the sync: `extbackup run` on a source with nothing changed,
//!    against bare `rsync -aHAX --delete` of the same tree onto the same, already mounted
//!    filesystem. Overhead = run - rsync. Target < 1 s. The drive keeps a plain mirror
//!    (`history = false`) so both sides mirror; `bench history` times generations.
//!
//! Release build; 7 repetitions each, interleaved; medians.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{median, LoopDev};

const REPS: usize = 7;
/// Where the loopback-test backend's data starts (crypt::HEADER_AREA).
const LOOPBACK_HEADER: u64 = 1 << 20;
const DIRS: usize = 20;
const FILES_PER_DIR: usize = 100;

/// Runs the benchmark.
pub fn run(root: &Path) -> Result<()> {
    if !crate::util::is_root() {
        eprintln!("bench extbackup: SKIP: needs root (loop devices, mounts)");
        return Ok(());
    }
    let exe = super::build_release(root, "extbackup", &[])?.join("extbackup");
    let dir = std::env::temp_dir().join(format!("extbackup-bench-{}", std::process::id()));
    let r = bench(&exe, &dir);
    let _ = fs::remove_dir_all(&dir);
    r
}

fn ok(cmd: &mut Command) -> Result<()> {
    super::output(cmd).map(|_| ())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn bench(exe: &Path, dir: &Path) -> Result<()> {
    let src = dir.join("source");
    for d in 0..DIRS {
        let sub = src.join(format!("d{d:03}"));
        fs::create_dir_all(&sub)?;
        for f in 0..FILES_PER_DIR {
            fs::write(
                sub.join(format!("f{f:03}.txt")),
                format!("file {d}/{f}\n").repeat(40),
            )?;
        }
    }
    fs::create_dir_all(dir.join("mail"))?;
    let img = dir.join("drive.img");
    fs::File::create(&img)?.set_len(128 << 20)?;
    let dev = LoopDev::attach(&[], &img)?;
    let config = dir.join("config.toml");
    let d = dir.display();
    fs::write(
        &config,
        format!(
            r#"source = "{d}/source"
history = false
state_dir = "{d}/state"
mount_root = "{d}/mnt"
[source_lock]
path = "{d}/source.lock"
[indicator]
backend = "console"
[mail]
to = ["bench@localhost"]
on_success = false
transport = {{ kind = "file", dir = "{d}/mail" }}
[crypt]
backend = "loopback-test"
[policy]
require_source_mount_point = false
"#
        ),
    )?;
    let eb = |args: &[&str]| {
        let mut c = Command::new(exe);
        c.arg("--config")
            .arg(&config)
            .arg("-q")
            .args(args)
            .env("EXTBACKUP_ALLOW_LOOPBACK_CRYPT", "1");
        c
    };
    ok(eb(&[
        "prepare",
        &dev.0,
        "--name",
        "bench",
        "--yes",
        "--no-recovery-passphrase",
        "--keys-dir",
        &dir.join("keys").display().to_string(),
    ])
    .stdout(Stdio::null()))?;
    // First run fills the drive.
    ok(&mut eb(&["run", "--device", &dev.0]))?;

    let mut to_working = vec![];
    let mut runs = vec![];
    let mut rsyncs = vec![];
    let bare_mnt = dir.join("bare");
    fs::create_dir_all(&bare_mnt)?;
    for _ in 0..REPS {
        // 1 + 2a: one `run` with nothing changed; note when `working` appears.
        let t0 = Instant::now();
        let mut child = eb(&["run", "--device", &dev.0])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = child.stdout.take().context("stdout piped")?;
        let mut first = None;
        for line in BufReader::new(out).lines() {
            let line = line?;
            if first.is_none() && line.contains("working") {
                first = Some(t0.elapsed());
            }
        }
        let st = child.wait()?;
        let total = t0.elapsed();
        if !st.success() {
            bail!("extbackup run failed ({st}) during the benchmark");
        }
        to_working.push(first.context("no `working` line from the console indicator")?);
        runs.push(total);

        // 2b: bare rsync of the same tree onto the same filesystem (mounted outside the
        // timing).
        let data = LoopDev::attach(&["--offset", &LOOPBACK_HEADER.to_string()], &dev_path(&dev))?;
        ok(Command::new("mount").arg(&data.0).arg(&bare_mnt))?;
        let t0 = Instant::now();
        let r = ok(Command::new("rsync")
            .args(["-aHAX", "--delete"])
            .arg(format!("{}/", src.display()))
            .arg(bare_mnt.join("data")));
        let took = t0.elapsed();
        ok(Command::new("umount").arg(&bare_mnt))?;
        drop(data);
        r?;
        rsyncs.push(took);
    }
    let w = median(&to_working);
    let run = median(&runs);
    let rs = median(&rsyncs);
    let overhead = run.saturating_sub(rs);
    println!(
        "extbackup: run start -> working indicator: median {} over {REPS} runs (target < 50 ms){}",
        ms(w),
        if w < Duration::from_millis(50) {
            ""
        } else {
            "  ** over target **"
        }
    );
    println!(
        "extbackup: re-run with nothing changed ({} files): extbackup run {} vs bare rsync -aHAX --delete {}: \
         overhead {} ({:.1}x) (target overhead < 1 s){}",
        DIRS * FILES_PER_DIR,
        ms(run),
        ms(rs),
        ms(overhead),
        run.as_secs_f64() / rs.as_secs_f64().max(1e-9),
        if overhead < Duration::from_secs(1) { "" } else { "  ** over target **" }
    );
    Ok(())
}

fn dev_path(l: &LoopDev) -> PathBuf {
    PathBuf::from(&l.0)
}
