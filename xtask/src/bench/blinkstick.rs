//! `blinkstick` benchmark: process time of `blinkstick --set-color red` with no stick
//! attached (our release build) against the Python CLI (PyPI `BlinkStick` 1.2.0 +
//! pyusb, installed into a venv under target/ by pyenv.rs), the time from a job's
//! `blinkstick --slot NAME --state STATE` to the LED showing it (an emulated stick
//! shared through files, as several processes share one), and the number of reports
//! needed to set 64 LEDs (counted on the emulator).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const RUNS: usize = 25;

/// Runs the benchmark and prints the figures and the ratio (target: >= 20x faster).
pub fn run(root: &Path) -> Result<()> {
    let release = super::build_release(
        root,
        "blinkstick-hid",
        &["--bin", "blinkstick", "--example", "frames_bench"],
    )?;
    let ours = release.join("blinkstick");

    let mut cmd = Command::new(&ours);
    cmd.args(["--set-color", "red"]);
    let (ours_t, ours_code) = median_run(&mut cmd)?;
    if ours_code != Some(1) {
        bail!(
            "`{} --set-color red` exited {ours_code:?}, expected 1 with no stick \
             (is a BlinkStick attached?)",
            ours.display()
        );
    }
    println!(
        "blinkstick: `blinkstick --set-color red`, no stick, median of {RUNS}: ours (Rust) {}",
        fmt(ours_t)
    );

    match python_cli(&super::target_dir(root)) {
        Ok(mut py) => {
            py.args(["--set-color", "red"]);
            let (py_t, py_code) = median_run(&mut py)?;
            println!(
                "blinkstick: Python CLI (BlinkStick 1.2.0 + pyusb) {} (exit {py_code:?}: it \
                 exits 0 with no stick)",
                fmt(py_t)
            );
            let ratio = py_t.as_secs_f64() / ours_t.as_secs_f64();
            println!(
                "blinkstick: ours is {ratio:.1}x faster (target >= 20x): {}",
                if ratio >= 20.0 { "met" } else { "NOT met" }
            );
        }
        Err(e) => println!(
            "blinkstick: the Python CLI could not be installed, no ratio: {e:#} \
             (our figure above stands alone)"
        ),
    }

    slot_latency(&ours, &super::target_dir(root))?;

    super::run_printing(
        &release.join("examples/frames_bench"),
        "blinkstick: ",
        "frames_bench: setting 64 LEDs did not take exactly one report: ",
    )
}

/// Median wall-clock time of `RUNS` runs (after one warm-up), and the last exit code.
fn median_run(cmd: &mut Command) -> Result<(Duration, Option<i32>)> {
    cmd.env_remove("BLINKSTICK_EMULATE")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut times = Vec::with_capacity(RUNS);
    let mut code = None;
    for i in 0..=RUNS {
        let t = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("running {:?}", cmd.get_program()))?;
        if i > 0 {
            times.push(t.elapsed());
        }
        code = status.code();
    }
    Ok((super::median(&times), code))
}

fn fmt(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The Python CLI (see pyenv.rs): `python <script>`.
fn python_cli(target: &Path) -> Result<Command> {
    let (python, script) = crate::pyenv::blinkstick_cli(target)?;
    let mut c = Command::new(python);
    c.arg(script);
    Ok(c)
}

/// A slot update until the LED shows it: `blinkstick --slot bench --state failure|success`
/// on a file-backed emulated Square (the state is drawn before the command exits; each
/// run is checked afterwards through `--info`), median of `RUNS`, against `--set-color`
/// on the same stick (the work a slot update adds: lock, slot files, recompute).
fn slot_latency(ours: &Path, target: &Path) -> Result<()> {
    let dir = target.join("bench-slots");
    let _ = std::fs::remove_dir_all(&dir);
    let env = |c: &mut Command| {
        c.env("BLINKSTICK_EMULATE", "square:BS000001-3.0")
            .env("BLINKSTICK_EMULATE_DIR", dir.join("emu"))
            .env("BLINKSTICK_SLOTS_DIR", dir.join("slots"))
            .env_remove("BLINKSTICK_EMULATE_LOG");
    };
    let led = || -> Result<String> {
        let mut c = Command::new(ours);
        env(&mut c);
        let out = c.args(["--index", "1", "--info"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Current Color:")
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_default())
    };
    let mut slot = Vec::with_capacity(RUNS);
    let mut plain = Vec::with_capacity(RUNS);
    for i in 0..=RUNS {
        let (state, want) = if i % 2 == 0 {
            ("failure", "#190000")
        } else {
            ("success", "#000c00")
        };
        let mut c = Command::new(ours);
        env(&mut c);
        c.args(["--slot", "bench", "--state", state, "--owner-pid"])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null());
        let t = Instant::now();
        let st = c.status().context("running blinkstick --slot")?;
        let took = t.elapsed();
        if !st.success() || led()? != want {
            bail!("`blinkstick --slot bench --state {state}` did not show {want} on the LED");
        }
        let mut p = Command::new(ours);
        env(&mut p);
        p.args(["--index", "1", "--limit", "10", "--set-color", "red"])
            .stdout(Stdio::null());
        let t = Instant::now();
        p.status().context("running blinkstick --set-color")?;
        let plain_took = t.elapsed();
        if i > 0 {
            slot.push(took);
            plain.push(plain_took);
        }
    }
    let (s, p) = (super::median(&slot), super::median(&plain));
    println!(
        "blinkstick: slot update to LED (shared emulated stick), median of {RUNS}: {} \
         (target <= 50 ms: {}); plain --set-color on the same stick {} ({:.2}x)",
        fmt(s),
        if s <= Duration::from_millis(50) {
            "met"
        } else {
            "NOT met"
        },
        fmt(p),
        s.as_secs_f64() / p.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
