//! `blinkstick`: the command-line tool, a drop-in for the Python `blinkstick` CLI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use blinkstick::anim::{python_morph_frames, Frame, PRO_FRAME_INTERVAL};
use blinkstick::emulator::EmulatedBus;
use blinkstick::slots;
use blinkstick::transport::hex;
use blinkstick::{Backend, BlinkStick, Direction, Mode, Player, Rgb, Selector, Variant};
use clap::Parser;

#[path = "cli/emufile.rs"]
mod emufile;

/// The environment variable that makes the tool use emulated sticks
/// (`variant:serial[,variant:serial...]`), for tests. Never the default.
const EMULATE_ENV: &str = "BLINKSTICK_EMULATE";
/// With [`EMULATE_ENV`]: keep the emulated sticks' state in this directory, shared by
/// every process that names it (else each process has its own in-memory sticks).
const EMULATE_DIR_ENV: &str = "BLINKSTICK_EMULATE_DIR";
/// With [`EMULATE_DIR_ENV`]: append every report to this file (`<unix ns> set|get <hex>`).
const EMULATE_LOG_ENV: &str = "BLINKSTICK_EMULATE_LOG";
/// Steps of a morph (and of each half of a pulse), as in the Python tool.
const STEPS: u32 = 50;

// The rules `--add-udev-rule` writes and the Debian package ships (the same text, as
// /usr/lib/udev/rules.d/85-blinkstick.rules): group plugdev (services, remote users) and the
// desktop's active user (uaccess). `RUN{builtin}+="uaccess"` applies the user's ACL here:
// at 85 the file sorts after 73-seat-late.rules, which does it only for devices tagged
// before it. Never 0666 (the Python tool's): any local user could drive the LED.
const HIDRAW_RULE: &str = "KERNEL==\"hidraw*\", SUBSYSTEM==\"hidraw\", ATTRS{idVendor}==\"20a0\", ATTRS{idProduct}==\"41e5\", MODE=\"0660\", GROUP=\"plugdev\", TAG+=\"uaccess\", RUN{builtin}+=\"uaccess\"";
const USB_RULE: &str = "SUBSYSTEM==\"usb\", ENV{DEVTYPE}==\"usb_device\", ATTR{idVendor}==\"20a0\", ATTR{idProduct}==\"41e5\", MODE=\"0660\", GROUP=\"plugdev\", TAG+=\"uaccess\", RUN{builtin}+=\"uaccess\"";

/// Control BlinkStick USB LEDs (compatible with the Python `blinkstick` tool).
///
/// Without -s/--serial every attached stick is acted on. Colours: CSS3 names (green),
/// #rgb, #rrggbb, six hex digits (33c280), random, off.
#[derive(Parser, Debug)]
#[command(
    name = "blinkstick",
    version,
    max_term_width = 100,
    args_override_self = true
)]
#[command(
    after_help = "Examples:\n  blinkstick --index 1 --limit 10 --set-color 33c280\n  \
blinkstick --set-color green\n  blinkstick --pulse --repeats 3 red\n\n\
Testing: BLINKSTICK_EMULATE=square:BS000001-3.0 makes the tool use an in-process emulated stick."
)]
struct Cli {
    /// Display BlinkStick info.
    #[arg(short = 'i', long)]
    info: bool,
    /// Select the device by serial number; without it, act on all BlinkSticks.
    #[arg(short = 's', long, value_name = "SERIAL")]
    serial: Option<String>,
    /// Channel (0-2, Pro only) [default: 0].
    #[arg(long = "channel", value_name = "CHANNEL")]
    channel_arg: Option<u8>,
    /// LED index [default: 0].
    #[arg(long = "index", value_name = "INDEX")]
    index_arg: Option<u8>,
    /// Limit the brightness of the colour, 0..100 (same as --limit; the last one given
    /// counts).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100), value_name = "PERCENT",
          overrides_with = "limit")]
    brightness: Option<u8>,
    /// Limit the brightness of the colour, 0..100 (default 100).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100), value_name = "PERCENT",
          overrides_with = "brightness")]
    limit: Option<u8>,
    /// Set the colour (name, #rgb, #rrggbb, rrggbb, random, off).
    #[arg(long, value_name = "COLOR")]
    set_color: Option<String>,
    /// The colour, as an alternative to --set-color.
    #[arg(value_name = "COLOR")]
    color: Option<String>,
    /// Send 255 - value for each channel (common-anode LEDs), after the limit.
    #[arg(long)]
    inverse: bool,
    /// Set the number of LEDs (Flex).
    #[arg(long, value_name = "COUNT")]
    set_led_count: Option<u8>,
    /// Blink the LED (with --repeats, --delay).
    #[arg(long)]
    blink: bool,
    /// Pulse the LED (with --repeats, --duration).
    #[arg(long)]
    pulse: bool,
    /// Morph from the current colour to the new one (with --duration).
    #[arg(long)]
    morph: bool,
    /// Duration of one morph or pulse half, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    duration: u64,
    /// Delay between blinks, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    delay: u64,
    /// How many times to blink or pulse.
    #[arg(long, default_value_t = 1)]
    repeats: u32,
    /// Set the mode: 0 normal, 1 inverse, 2 WS2812, 3 WS2812 mirror.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=3), value_name = "MODE")]
    set_mode: Option<u8>,
    /// Write info block 1 (the name, up to 32 bytes).
    #[arg(long, value_name = "TEXT")]
    set_infoblock1: Option<String>,
    /// Write info block 2 (data, up to 32 bytes).
    #[arg(long, value_name = "TEXT")]
    set_infoblock2: Option<String>,
    /// Install the udev rules (hidraw and libusb) so users in group plugdev can use sticks.
    #[arg(long)]
    add_udev_rule: bool,
    /// With --add-udev-rule: print the rules instead of writing them.
    #[arg(long, requires = "add_udev_rule")]
    print: bool,
    /// Where --add-udev-rule writes.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/udev/rules.d/85-blinkstick.rules"
    )]
    udev_rules_file: PathBuf,
    /// List the attached sticks (path, serial, variant, product).
    #[arg(long)]
    list: bool,
    /// Print every report sent and received, as hex, on stderr.
    #[arg(long)]
    trace: bool,
    /// Display debug output (the Python option; same as --trace).
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Treat the sticks as this variant (blinkstick, pro, square, strip, nano, flex)
    /// instead of detecting it.
    #[arg(long, value_name = "VARIANT")]
    variant: Option<Variant>,
    /// Share the LED with other jobs: act on this job's slot (with --state, --ack or
    /// --clear); the LED shows the most severe slot (failure > attention > working >
    /// success). See docs/blinkstick-cli.md.
    #[arg(long, value_name = "NAME", help_heading = "Shared LED")]
    slot: Option<String>,
    /// With --slot: the job's state (working, success, attention, failure). A failure
    /// stays until the slot's next success or --ack.
    #[arg(
        long,
        value_name = "STATE",
        requires = "slot",
        help_heading = "Shared LED"
    )]
    state: Option<slots::SlotState>,
    /// With --slot: acknowledge its failure.
    #[arg(long, requires = "slot", conflicts_with_all = ["state", "clear"], help_heading = "Shared LED")]
    ack: bool,
    /// With --slot: the job is done with its slot (an unacknowledged failure stays).
    #[arg(
        long,
        requires = "slot",
        conflicts_with = "state",
        help_heading = "Shared LED"
    )]
    clear: bool,
    /// The process that owns the slot: while it runs, `working` stays; when it is gone,
    /// the slot is cleared [default: the calling process (the script)].
    #[arg(
        long,
        value_name = "PID",
        requires = "slot",
        help_heading = "Shared LED"
    )]
    owner_pid: Option<u32>,
    /// List the slots and what the LED shows.
    #[arg(long, help_heading = "Shared LED")]
    slots: bool,
    /// Internal: wait for the slot's owner to exit, then redraw the LED.
    #[arg(long, hide = true, requires = "slot")]
    slot_watch: bool,
}

impl Cli {
    fn channel(&self) -> u8 {
        self.channel_arg.unwrap_or(0)
    }
    fn index(&self) -> u8 {
        self.index_arg.unwrap_or(0)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blinkstick: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn backend() -> Result<Arc<dyn Backend>> {
    if let Ok(spec) = std::env::var(EMULATE_ENV) {
        if let Some(dir) = std::env::var_os(EMULATE_DIR_ENV) {
            let log = std::env::var_os(EMULATE_LOG_ENV).map(PathBuf::from);
            let bus = emufile::FileBus::new(&spec, std::path::Path::new(&dir), log)
                .with_context(|| format!("parsing {EMULATE_ENV}"))?;
            return Ok(Arc::new(bus));
        }
        let bus =
            EmulatedBus::from_spec(&spec).with_context(|| format!("parsing {EMULATE_ENV}"))?;
        return Ok(Arc::new(bus));
    }
    hidapi_backend()
}

#[cfg(feature = "hidapi")]
fn hidapi_backend() -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(blinkstick::hidapi_backend::HidapiBackend::new()?))
}

#[cfg(all(not(feature = "hidapi"), feature = "rusb"))]
fn hidapi_backend() -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(blinkstick::rusb_backend::RusbBackend::new()?))
}

#[cfg(all(not(feature = "hidapi"), not(feature = "rusb")))]
fn hidapi_backend() -> Result<Arc<dyn Backend>> {
    bail!("built without a USB backend (features `hidapi` or `rusb`); set {EMULATE_ENV} to use an emulated stick")
}

fn run(cli: &Cli) -> Result<()> {
    if cli.add_udev_rule {
        return add_udev_rule(cli);
    }
    if cli.slot.is_some() || cli.slots {
        return slot_command(cli);
    }
    let color_word = cli.set_color.as_deref().or(cli.color.as_deref());
    // parse before touching any device: an unknown colour is an error, never black
    let color = color_word.map(Rgb::parse).transpose()?;
    let has_action = cli.info
        || cli.list
        || color.is_some()
        || cli.set_mode.is_some()
        || cli.set_led_count.is_some()
        || cli.set_infoblock1.is_some()
        || cli.set_infoblock2.is_some();
    if !has_action {
        bail!("nothing to do: give a colour (e.g. `blinkstick --set-color green`), --info, --list or a --set-* option; see --help");
    }
    if (cli.blink || cli.pulse || cli.morph) && color.is_none() {
        bail!("--blink, --pulse and --morph need a colour (--set-color COLOR)");
    }
    let backend = backend()?;
    if cli.list {
        let list = backend.list()?;
        if list.is_empty() && cli.serial.is_none() && !cli.info && color.is_none() {
            bail!("no BlinkStick found: plug one in (and install the udev rules with `sudo blinkstick --add-udev-rule`)");
        }
        for d in &list {
            let v = cli
                .variant
                .or_else(|| Variant::detect(&d.serial, d.release, &d.product));
            println!(
                "{}\t{}\t{}\t{}",
                d.path,
                d.serial,
                v.map_or("unknown", Variant::name),
                d.product
            );
        }
    }
    if !(cli.info
        || color.is_some()
        || cli.set_mode.is_some()
        || cli.set_led_count.is_some()
        || cli.set_infoblock1.is_some()
        || cli.set_infoblock2.is_some())
    {
        return Ok(());
    }
    let sticks: Vec<blinkstick::Result<BlinkStick>> = match &cli.serial {
        Some(s) => vec![Ok(BlinkStick::open_with(
            backend.clone(),
            &Selector::Serial(s.clone()),
        )?)],
        None => BlinkStick::open_all_with(backend.clone())?,
    };
    if sticks.is_empty() {
        bail!("no BlinkStick found: plug one in (and install the udev rules with `sudo blinkstick --add-udev-rule`)");
    }
    let mut failed = 0;
    for stick in sticks {
        let r = stick.map_err(anyhow::Error::from).and_then(|mut s| {
            act(cli, &mut s, color).with_context(|| format!("BlinkStick {}", s.serial()))
        });
        if let Err(e) = r {
            eprintln!("blinkstick: error: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} stick(s) failed");
    }
    Ok(())
}

fn act(cli: &Cli, stick: &mut BlinkStick, color: Option<Rgb>) -> Result<()> {
    if let Some(v) = cli.variant {
        stick.set_variant(v);
    }
    if cli.trace || cli.verbose {
        stick.set_trace(|serial, dir, data| {
            let d = match dir {
                Direction::Sent => "set",
                Direction::Received => "get",
            };
            eprintln!("blinkstick: trace {serial} {d} {}", hex(data));
        });
    }
    if let Some(t) = &cli.set_infoblock1 {
        stick.set_info_block1(t).context("writing info block 1")?;
    }
    if let Some(t) = &cli.set_infoblock2 {
        stick.set_info_block2(t).context("writing info block 2")?;
    }
    if let Some(m) = cli.set_mode {
        let mode = Mode::from_byte(m).context("mode must be 0-3")?;
        if let Some(w) = mode.warning_for(stick.variant()) {
            eprintln!("blinkstick: warning: {w}");
        }
        stick.set_mode(mode).context("setting the mode")?;
    }
    if let Some(n) = cli.set_led_count {
        stick.set_led_count(n).context("setting the LED count")?;
    }
    if cli.info {
        print_info(cli, stick)?;
    }
    if let Some(c) = color {
        set_color(cli, stick, c)?;
    }
    Ok(())
}

fn set_color(cli: &Cli, stick: &mut BlinkStick, c: Rgb) -> Result<()> {
    // `--limit` and `--brightness` override each other: the last one given counts
    let limit = cli.limit.or(cli.brightness).unwrap_or(100);
    let target = c.limited(limit);
    if !(cli.blink || cli.pulse || cli.morph) {
        return show(cli, stick, target);
    }
    let player = Player::new(cli.channel(), cli.index()).with_min_interval(PRO_FRAME_INTERVAL);
    if cli.blink {
        // Python: per repeat (after `delay` if not the first) the colour, `delay`, off
        let delay = Duration::from_millis(cli.delay);
        let frames = (0..cli.repeats).flat_map(move |i| {
            let on = delay.saturating_mul(i).saturating_mul(2);
            [(on, target), (on.saturating_add(delay), Rgb::OFF)]
        });
        return play(cli, stick, &player, frames);
    }
    let duration = Duration::from_millis(cli.duration);
    if cli.morph {
        return morph(cli, stick, &player, target, duration);
    }
    // pulse: off, then per repeat a morph up to the colour and one back down
    show(cli, stick, Rgb::OFF)?;
    for _ in 0..cli.repeats {
        morph(cli, stick, &player, target, duration)?;
        morph(cli, stick, &player, Rgb::OFF, duration)?;
    }
    Ok(())
}

/// The colour as sent: `255 - v` with `--inverse`.
fn wire(cli: &Cli, c: Rgb) -> Rgb {
    if cli.inverse {
        c.inverted()
    } else {
        c
    }
}

/// Sets the selected LED to `c` (inverted with `--inverse`).
fn show(cli: &Cli, stick: &mut BlinkStick, c: Rgb) -> Result<()> {
    stick
        .set_led(cli.channel(), cli.index(), wire(cli, c))
        .with_context(|| format!("setting LED {} of channel {}", cli.index(), cli.channel()))
}

/// Python's morph: from the LED's current colour (read back) to `to`.
fn morph(
    cli: &Cli,
    stick: &mut BlinkStick,
    player: &Player,
    to: Rgb,
    duration: Duration,
) -> Result<()> {
    let from = wire(cli, stick.led(cli.channel(), cli.index())?);
    let frames = python_morph_frames(from, to, duration, STEPS);
    play(
        cli,
        stick,
        player,
        frames.into_iter().map(|f| (f.at, f.color)),
    )
}

fn play(
    cli: &Cli,
    stick: &mut BlinkStick,
    player: &Player,
    frames: impl Iterator<Item = (Duration, Rgb)>,
) -> Result<()> {
    // frames are made one at a time: `--repeats 4000000000` must not need a huge Vec
    let frames = frames.map(|(at, c)| Frame {
        at,
        color: wire(cli, c),
    });
    player.play(stick, frames).context("animating")?;
    Ok(())
}

fn print_info(cli: &Cli, stick: &mut BlinkStick) -> Result<()> {
    // the Python tool's fields, names and order
    let v = stick.variant();
    let info = stick.info().clone();
    println!("Found device:");
    println!("    Manufacturer:  {}", info.manufacturer);
    println!("    Description:   {}", info.product);
    println!("    Variant:       {}", v.description());
    println!("    Serial:        {}", info.serial);
    let c = stick
        .led(cli.channel(), cli.index())
        .context("reading the current colour")?;
    println!("    Current Color: {}", wire(cli, c));
    if v.supports_report(4) {
        let m = stick.mode().context("reading the mode")?;
        println!("    Mode:          {}", m.as_byte());
    }
    if v.has_led_count() {
        println!("    LED conf:      {}", stick.led_count()?);
    }
    println!("    Info Block 1:  {}", stick.info_block1()?);
    println!("    Info Block 2:  {}", stick.info_block2()?);
    Ok(())
}

/// `--slot NAME --state S | --ack | --clear`, `--slots`, and the internal `--slot-watch`.
fn slot_command(cli: &Cli) -> Result<()> {
    let dir = slots::Slots::from_env();
    if cli.slots && cli.slot.is_none() {
        let mut g = dir.lock()?;
        for s in g.slots()? {
            println!(
                "{}\t{}\tpid {}{}",
                s.name,
                s.shown(),
                s.owner.pid,
                if s.unacked_failure && s.state != slots::SlotState::Failure {
                    format!(" (now {}; failure not acknowledged)", s.state)
                } else {
                    String::new()
                }
            );
        }
        match g.shown()? {
            Some(st) => println!("LED: {st}"),
            None => println!("LED: off (no slot set)"),
        }
        return Ok(());
    }
    let name = cli.slot.as_deref().expect("--slot given");
    slots::check_name(name)?;
    if cli.slot_watch {
        let pid = cli.owner_pid.context("--slot-watch needs --owner-pid")?;
        let Ok(owner) = slots::Owner::of(pid) else {
            return render_slots(cli, &dir);
        };
        slots::wait_for_exit(&owner, Duration::from_millis(500));
        return render_slots(cli, &dir);
    }
    let owner = match cli.owner_pid {
        Some(pid) => slots::Owner::of(pid)?,
        None => slots::Owner::parent()?,
    };
    {
        let mut g = dir.lock()?;
        if cli.ack {
            if !g.ack(name)? {
                eprintln!("blinkstick: slot {name} had no failure to acknowledge");
            }
        } else if cli.clear {
            g.clear(name)?;
        } else if let Some(st) = cli.state {
            g.set(name, st, owner)?;
        } else {
            bail!("--slot {name}: give --state STATE, --ack or --clear");
        }
        // explicit drawing options become the shared display for every writer
        if cli.channel_arg.is_some()
            || cli.index_arg.is_some()
            || cli.limit.is_some()
            || cli.brightness.is_some()
        {
            let mut d = g.display();
            d.channel = cli.channel();
            d.index = cli.index();
            d.limit = cli.limit.or(cli.brightness).unwrap_or(100);
            g.set_display(&d)?;
        }
    }
    render_slots(cli, &dir)?;
    if cli.state == Some(slots::SlotState::Working) {
        spawn_watcher(name, owner);
    }
    Ok(())
}

/// Draws what the slots show on every stick (or the one `-s` names), under the lock.
fn render_slots(cli: &Cli, dir: &slots::Slots) -> Result<()> {
    let backend = backend()?;
    let mut g = dir.lock()?;
    let sticks: Vec<blinkstick::Result<BlinkStick>> = match &cli.serial {
        Some(s) => vec![BlinkStick::open_with(backend, &Selector::Serial(s.clone()))],
        None => BlinkStick::open_all_with(backend)?,
    };
    if sticks.is_empty() {
        bail!("slot recorded, but no BlinkStick found to show it on");
    }
    for stick in sticks {
        let mut stick = stick?;
        if let Some(v) = cli.variant {
            stick.set_variant(v);
        }
        g.render(&mut stick)
            .with_context(|| format!("showing the slots on BlinkStick {}", stick.serial()))?;
    }
    Ok(())
}

/// Starts `blinkstick --slot NAME --slot-watch --owner-pid PID` in the background: it
/// redraws the LED as soon as the owner exits, so a killed job's `working` goes at once.
fn spawn_watcher(name: &str, owner: slots::Owner) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let r = Command::new(exe)
        .args(["--slot", name, "--slot-watch", "--owner-pid"])
        .arg(owner.pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = r {
        eprintln!("blinkstick: warning: no watcher for slot {name} ({e}): if the job dies, its slot goes only at the next slot change");
    }
}

fn add_udev_rule(cli: &Cli) -> Result<()> {
    let text = format!(
        "# BlinkStick: hidraw (hidapi) and raw USB (libusb) access for group plugdev and the\n\
         # desktop's active user (uaccess); written by `blinkstick --add-udev-rule`, shipped\n\
         # by the extbackup package as /usr/lib/udev/rules.d/85-blinkstick.rules.\n\
         {HIDRAW_RULE}\n{USB_RULE}\n"
    );
    if cli.print {
        print!("{text}");
        return Ok(());
    }
    std::fs::write(&cli.udev_rules_file, &text).with_context(|| {
        format!(
            "writing {} (run as root, or use --print and install it yourself)",
            cli.udev_rules_file.display()
        )
    })?;
    println!(
        "wrote {}; now run `udevadm control --reload-rules && udevadm trigger` and re-plug the stick",
        cli.udev_rules_file.display()
    );
    Ok(())
}
