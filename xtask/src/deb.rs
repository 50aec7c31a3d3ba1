//! `cargo xtask deb [--arch amd64|arm64] [--debug] [--check] [--out DIR]`: the Debian
//! package.
//!
//! A staging tree packed with `dpkg-deb --build --root-owner-group`: the binaries at
//! /usr/bin/extbackup and /usr/bin/blinkstick (stripped), man pages and shell completions
//! generated from the clap definition (`extbackup generate-assets`), the four systemd units
//! (`extbackup install` adds the udev rule for the drives and drop-ins), the BlinkStick udev
//! rule (the one `blinkstick --add-udev-rule` writes), `/etc/extbackup` (0755) with `keys/`
//! (0700), the docs, a changelog, the copyright file and the example configuration
//! (`packaging/config.toml`, a template that `extbackup prepare` completes), and the
//! maintainer scripts of `packaging/` (what `apt remove` and `purge` take away is in their
//! comments and README.md). Depends: the packages holding the shared libraries the binary
//! links (its `NEEDED` entries, found in the architecture's multiarch folders with
//! `dpkg -S`), plus the non-essential programs it runs.
//!
//! `--arch arm64` cross-builds with the Rust target `aarch64-unknown-linux-gnu`, Debian's
//! cross gcc and the `:arm64` -dev packages (`cargo xtask deps --arch arm64` installs them);
//! the man pages and completions come from a host build (they do not depend on the
//! architecture).
//!
//! `--check` runs lintian (no error, no warning: overrides carry their reason), installs
//! the package with `dpkg --root` into an empty folder (a clean root: nothing installed,
//! dependencies not checked there, no maintainer scripts run) and, for the host's
//! architecture, runs `extbackup --version`, `man -w extbackup` and `extbackup config
//! check` on the example there. `--debug` packages the debug binaries (no release build:
//! what `cargo xtask test` uses, to keep CI short); a package for a NAS is built without.

use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::arch::{self, Arch};
use crate::util;

/// Programs extbackup runs (besides the libraries it links); essential ones (util-linux)
/// are left out, as Debian's policy asks.
const RUNS: &[&str] = &["rsync", "e2fsprogs", "util-linux", "mount"];

/// The package's maintainer (lintian refuses an address on localhost). `DEBFULLNAME` and
/// `DEBEMAIL` override it.
const MAINTAINER: (&str, &str) = ("extbackup maintainers", "extbackup@example.org");

pub fn run(args: &[String]) -> Result<()> {
    let (mut debug, mut check) = (false, false);
    let root = util::root();
    let mut out = root.join("target/deb");
    let mut arch = if cfg!(target_arch = "aarch64") {
        arch::ARM64
    } else {
        arch::AMD64
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--debug" => debug = true,
            "--check" => check = true,
            "--out" => out = PathBuf::from(it.next().context("--out needs a folder")?),
            "--arch" => arch = Arch::parse(it.next().context("--arch needs amd64 or arm64")?)?,
            other => bail!("unknown option `{other}` for `cargo xtask deb`"),
        }
    }
    if !arch.is_host() {
        crate::deps::ensure(crate::deps::Set::Arm64)?;
    }
    let deb = build(&root, arch, debug, &out)?;
    eprintln!("xtask: built {}", deb.display());
    if check {
        lintian(&deb)?;
        check_install(&deb, arch)?;
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .output()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    ensure!(
        o.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Builds `extbackup` and `blinkstick` for `arch` (and for the host, when cross-building:
/// the assets come from running it); returns the folder of the `arch` binaries and of the
/// host's.
fn build_binaries(root: &Path, arch: Arch, debug: bool) -> Result<(PathBuf, PathBuf)> {
    let profile = if debug { "debug" } else { "release" };
    let bins = [
        "-p",
        "extbackup",
        "--bin",
        "extbackup",
        "-p",
        "blinkstick-hid",
        "--bin",
        "blinkstick",
    ];
    let mut args = vec!["build"];
    args.extend(bins);
    if !debug {
        args.push("--release");
    }
    args.extend(arch.cargo_args());
    let env = arch.cargo_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    util::cargo(root, &args, &env)?;
    let target = root.join("target");
    let arch_dir = target.join(arch.out_dir(profile));
    if arch.is_host() {
        return Ok((arch_dir.clone(), arch_dir));
    }
    let mut host = vec!["build"];
    host.extend(bins);
    util::cargo(root, &host, &[])?;
    Ok((arch_dir, target.join("debug")))
}

/// The workspace's version (`cargo metadata`).
fn version(root: &Path) -> Result<String> {
    let meta = output(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["metadata", "--no-deps", "--format-version", "1"]),
    )?;
    let v: serde_json::Value = serde_json::from_str(&meta)?;
    v["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "extbackup"))
        .and_then(|p| p["version"].as_str())
        .map(str::to_string)
        .context("cargo metadata names the extbackup package's version")
}

/// Builds the package into `out`; returns its path.
pub fn build(root: &Path, arch: Arch, debug: bool, out: &Path) -> Result<PathBuf> {
    let (bin_dir, host_dir) = build_binaries(root, arch, debug)?;
    let bin = bin_dir.join("extbackup");
    let host_bin = host_dir.join("extbackup");
    let version = version(root)?;

    let stage = out.join(format!("staging-{}", arch.deb));
    let _ = fs::remove_dir_all(&stage);
    let put = |rel: &str, from: &Path| -> Result<()> {
        let to = stage.join(rel);
        fs::create_dir_all(to.parent().unwrap())?;
        fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    let write = |rel: &str, text: &str, mode: u32| -> Result<()> {
        let to = stage.join(rel);
        fs::create_dir_all(to.parent().unwrap())?;
        fs::write(&to, text)?;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    for name in ["extbackup", "blinkstick"] {
        let to = format!("usr/bin/{name}");
        put(&to, &bin_dir.join(name))?;
        util::run(
            Command::new(arch.strip())
                .args(["--strip-unneeded", "--remove-section=.comment"])
                .arg(stage.join(&to)),
        )?;
        fs::set_permissions(stage.join(&to), fs::Permissions::from_mode(0o755))?;
    }

    let assets = out.join(format!("assets-{}", arch.deb));
    let _ = fs::remove_dir_all(&assets);
    util::run(Command::new(&host_bin).arg("generate-assets").arg(&assets))?;
    let man1 = stage.join("usr/share/man/man1");
    fs::create_dir_all(&man1)?;
    for e in fs::read_dir(assets.join("man"))? {
        let e = e?;
        let to = man1.join(e.file_name());
        fs::copy(e.path(), &to)?;
        util::run(Command::new("gzip").args(["-9n", "-f"]).arg(&to))?;
    }
    let comp = assets.join("completions");
    put(
        "usr/share/bash-completion/completions/extbackup",
        &comp.join("extbackup.bash"),
    )?;
    put(
        "usr/share/zsh/vendor-completions/_extbackup",
        &comp.join("_extbackup"),
    )?;
    put(
        "usr/share/fish/vendor_completions.d/extbackup.fish",
        &comp.join("extbackup.fish"),
    )?;
    for u in UNITS {
        put(
            &format!("usr/lib/systemd/system/{u}"),
            &assets.join("systemd").join(u),
        )?;
    }
    // The BlinkStick rule, exactly what `blinkstick --add-udev-rule` writes (at the same
    // name, so the admin's /etc/udev/rules.d copy replaces it).
    let rule =
        output(Command::new(host_dir.join("blinkstick")).args(["--add-udev-rule", "--print"]))?;
    write(BLINKSTICK_RULE, &rule, 0o644)?;
    put(
        "usr/lib/tmpfiles.d/extbackup.conf",
        &root.join("packaging/tmpfiles.conf"),
    )?;

    // /etc/extbackup; its keys/ (0700) is made by postinst (lintian: a package's folders
    // are 0755).
    fs::create_dir_all(stage.join("etc/extbackup"))?;
    fs::set_permissions(
        stage.join("etc/extbackup"),
        fs::Permissions::from_mode(0o755),
    )?;
    put(
        "usr/share/man/man1/blinkstick.1",
        &root.join("packaging/blinkstick.1"),
    )?;
    util::run(
        Command::new("gzip")
            .args(["-9n", "-f"])
            .arg(stage.join("usr/share/man/man1/blinkstick.1")),
    )?;

    let doc = "usr/share/doc/extbackup";
    put(&format!("{doc}/README.md"), &root.join("README.md"))?;
    for e in fs::read_dir(root.join("docs"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "md") {
            put(
                &format!("{doc}/{}", p.file_name().unwrap().to_string_lossy()),
                &p,
            )?;
        }
    }
    put(
        &format!("{doc}/examples/config.toml"),
        &root.join("packaging/config.toml"),
    )?;
    let (name, email) = maintainer();
    write(&format!("{doc}/copyright"), &copyright(), 0o644)?;
    write(
        &format!("{doc}/changelog"),
        &changelog(root, &version, &name, &email)?,
        0o644,
    )?;
    util::run(
        Command::new("gzip")
            .args(["-9n", "-f"])
            .arg(stage.join(doc).join("changelog")),
    )?;

    let mut depends = shlib_packages(&bin, arch)?;
    depends.extend(shlib_packages(&bin_dir.join("blinkstick"), arch)?);
    depends.extend(RUNS.iter().filter(|p| !essential(p)).map(|s| s.to_string()));
    depends.sort();
    depends.dedup();
    let size_kib = dir_size(&stage)? / 1024 + 1;
    let control = format!(
        "Package: extbackup\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {name} <{email}>\n\
         Installed-Size: {size_kib}\n\
         Depends: {}\n\
         Recommends: cryptsetup-bin, systemd, udev\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: {homepage}\n\
         Description: off-site backups onto rotating LUKS USB drives\n \
         Plug in a prepared LUKS drive; extbackup unlocks, checks and mounts it, mirrors\n \
         the NAS's backup onto it, unmounts and closes it, and shows green on a\n \
         BlinkStick LED (red and a mail on any failure). Write\n \
         /etc/extbackup/config.toml, prepare the drives with `extbackup prepare`, then\n \
         `extbackup install` turns on the backups when a drive is plugged in.\n \
         .\n \
         Also ships `blinkstick`, a drop-in for the Python BlinkStick tool, and a udev\n \
         rule that lets the desktop user and the group plugdev use the LED.\n",
        depends.join(", "),
        arch = arch.deb,
        homepage = HOMEPAGE,
    );
    write("DEBIAN/control", &control, 0o644)?;
    write("DEBIAN/md5sums", &md5sums(&stage)?, 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        let text = fs::read_to_string(root.join("packaging").join(script))?;
        write(&format!("DEBIAN/{script}"), &text, 0o755)?;
    }
    let overrides = root.join("packaging/lintian-overrides");
    if overrides.is_file() {
        put("usr/share/lintian/overrides/extbackup", &overrides)?;
    }
    let deb = out.join(format!("extbackup_{version}_{}.deb", arch.deb));
    util::run(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zxz"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// The units the package ships (what `extbackup generate-assets` renders).
const UNITS: [&str; 4] = [
    "extbackup@.service",
    "extbackup-failed@.service",
    "extbackup-check.service",
    "extbackup-check.timer",
];

/// Where the package puts the BlinkStick rule.
const BLINKSTICK_RULE: &str = "usr/lib/udev/rules.d/85-blinkstick.rules";

/// The project's home (the workspace's `repository`).
const HOMEPAGE: &str = "https://example.invalid/extbackup";

fn maintainer() -> (String, String) {
    (
        std::env::var("DEBFULLNAME").unwrap_or_else(|_| MAINTAINER.0.into()),
        std::env::var("DEBEMAIL").unwrap_or_else(|_| MAINTAINER.1.into()),
    )
}

/// Whether `pkg` is an essential package (never listed in Depends).
fn essential(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Essential}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "yes")
}

/// A Debian changelog with one entry for this version, dated by the last commit.
fn changelog(root: &Path, version: &str, name: &str, email: &str) -> Result<String> {
    let date = Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%aD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "Thu, 01 Jan 2026 00:00:00 +0000".into());
    Ok(format!(
        "extbackup ({version}) unstable; urgency=medium\n\n  \
         * Built from the extbackup workspace by `cargo xtask deb`.\n    \
         The project's history is its version control log.\n\n -- {name} <{email}>  {date}\n"
    ))
}

/// The copyright file (machine-readable format).
fn copyright() -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: extbackup\n\
         Source: {HOMEPAGE}\n\
         \n\
         Files: *\n\
         Copyright: 2026 The extbackup authors\n\
         License: MIT or Apache-2.0\n\
         \n\
         License: Apache-2.0\n \
         On Debian systems, the full text of the Apache License, Version 2.0, is in\n \
         /usr/share/common-licenses/Apache-2.0.\n\
         \n\
         License: MIT\n \
         Permission is hereby granted, free of charge, to any person obtaining a copy of\n \
         this software and associated documentation files (the \"Software\"), to deal in\n \
         the Software without restriction, including without limitation the rights to\n \
         use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of\n \
         the Software, and to permit persons to whom the Software is furnished to do so,\n \
         subject to the following conditions:\n \
         .\n \
         The above copyright notice and this permission notice shall be included in all\n \
         copies or substantial portions of the Software.\n \
         .\n \
         THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR\n \
         IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS\n \
         FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR\n \
         COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN\n \
         AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION\n \
         WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.\n"
    )
}

/// lintian on the package: no error and no warning (an override in
/// `packaging/lintian-overrides` carries its reason).
fn lintian(deb: &Path) -> Result<()> {
    let o = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--display-info"])
        .arg(deb)
        .output()
        .context("running lintian (cargo xtask deps installs it)")?;
    let text = String::from_utf8_lossy(&o.stdout);
    eprint!("{text}");
    ensure!(
        o.status.success(),
        "lintian found errors or warnings in {}:\n{text}{}",
        deb.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("xtask: deb: lintian: no errors, no warnings");
    Ok(())
}

/// The packages holding the shared libraries `bin` links directly (its `NEEDED` entries,
/// looked up in `arch`'s multiarch folders: no `ldd`, which cannot run a foreign binary).
fn shlib_packages(bin: &Path, arch: Arch) -> Result<Vec<String>> {
    let dynamic = output(Command::new("readelf").arg("-d").arg(bin))?;
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    let mut pkgs = vec![];
    for soname in needed {
        let candidates = ["/lib", "/usr/lib"].map(|d| format!("{d}/{}/{soname}", arch.multiarch));
        let found = candidates.iter().find_map(|path| {
            let real = fs::canonicalize(path).ok()?;
            // usr-merged systems list /lib paths in dpkg's database as /lib or /usr/lib.
            let alt = real.to_string_lossy().replacen("/usr/lib/", "/lib/", 1);
            [path.clone(), real.to_string_lossy().into_owned(), alt]
                .iter()
                .find_map(|p| {
                    let o = Command::new("dpkg").args(["-S", p]).output().ok()?;
                    let s = String::from_utf8_lossy(&o.stdout).into_owned();
                    o.status
                        .success()
                        .then(|| s.split(':').next().unwrap_or("").trim().to_string())
                })
        });
        match found {
            Some(p) if !p.is_empty() => pkgs.push(p),
            _ => bail!(
                "no package holds {soname} for {}, which {} links (cargo xtask deps{})",
                arch.deb,
                bin.display(),
                if arch.is_host() { "" } else { " --arch arm64" }
            ),
        }
    }
    Ok(pkgs)
}

/// `DEBIAN/md5sums`: every file below `stage` but DEBIAN/, relative, sorted.
fn md5sums(stage: &Path) -> Result<String> {
    fn files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                files(&p, out)?;
            } else {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut all = Vec::new();
    for e in fs::read_dir(stage)? {
        let p = e?.path();
        if p.file_name().is_some_and(|n| n != "DEBIAN") && p.is_dir() {
            files(&p, &mut all)?;
        }
    }
    all.sort();
    let rel: Vec<String> = all
        .iter()
        .map(|p| p.strip_prefix(stage).unwrap().display().to_string())
        .collect();
    output(Command::new("md5sum").current_dir(stage).args(&rel))
}

fn dir_size(p: &Path) -> Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}

/// Installs `deb` into an empty root with dpkg and, for the host's architecture, runs the
/// installed program there.
pub fn check_install(deb: &Path, arch: Arch) -> Result<()> {
    ensure!(
        util::is_root(),
        "cargo xtask deb --check installs with dpkg: run it as root"
    );
    let tmp = std::env::temp_dir().join(format!("extbackup-deb-root-{}", std::process::id()));
    let result = check_in(deb, arch, &tmp);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn check_in(deb: &Path, arch: Arch, root: &Path) -> Result<()> {
    let admin = root.join("var/lib/dpkg");
    fs::create_dir_all(admin.join("info"))?;
    fs::create_dir_all(admin.join("updates"))?;
    fs::write(admin.join("status"), "")?;
    // A clean root has none of the dependencies: they are the host's to provide here. A
    // foreign architecture's package unpacks all the same.
    util::run(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-depends",
                "--force-architecture",
                "--force-script-chrootless",
                "--no-triggers",
                "--log=/dev/null",
                "--unpack",
            ])
            .arg(deb),
    )?;
    let listed = output(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["-L", "extbackup"]),
    )?;
    for f in [
        "/usr/bin/extbackup",
        "/usr/bin/blinkstick",
        "/usr/share/man/man1/extbackup.1.gz",
        "/usr/share/man/man1/extbackup-run.1.gz",
        "/usr/share/bash-completion/completions/extbackup",
        "/usr/share/zsh/vendor-completions/_extbackup",
        "/usr/share/fish/vendor_completions.d/extbackup.fish",
        "/usr/lib/systemd/system/extbackup@.service",
        "/usr/lib/systemd/system/extbackup-failed@.service",
        "/usr/lib/systemd/system/extbackup-check.service",
        "/usr/lib/systemd/system/extbackup-check.timer",
        "/usr/lib/udev/rules.d/85-blinkstick.rules",
        "/usr/lib/tmpfiles.d/extbackup.conf",
        "/etc/extbackup",
        "/usr/share/man/man1/blinkstick.1.gz",
        "/usr/share/doc/extbackup/configuration.md",
        "/usr/share/doc/extbackup/examples/config.toml",
        "/usr/share/doc/extbackup/changelog.gz",
    ] {
        ensure!(
            listed.lines().any(|l| l == f),
            "the package lacks {f}:\n{listed}"
        );
    }
    let mode =
        |p: &str| -> Result<u32> { Ok(fs::metadata(root.join(p))?.permissions().mode() & 0o7777) };
    ensure!(mode("etc/extbackup")? == 0o755, "/etc/extbackup is 0755");
    let header = output(
        Command::new("readelf")
            .arg("-h")
            .arg(root.join("usr/bin/extbackup")),
    )?;
    let machine = header
        .lines()
        .find_map(|l| l.trim().strip_prefix("Machine:"))
        .unwrap_or("")
        .trim();
    let want = if arch.deb == "arm64" {
        "AArch64"
    } else {
        "X86-64"
    };
    ensure!(
        machine.contains(want),
        "usr/bin/extbackup is an {} ELF, not {machine}",
        arch.deb
    );
    eprintln!("xtask: deb: usr/bin/extbackup is an ELF for {machine}");
    // Everything a unit names is shipped: the binary, the failure unit, the man pages.
    let sd = root.join("usr/lib/systemd/system");
    for u in UNITS {
        let text = fs::read_to_string(sd.join(u))?;
        for l in text.lines() {
            if let Some(x) = l.strip_prefix("ExecStart=") {
                let prog = x.split_whitespace().next().unwrap_or("");
                ensure!(
                    listed.lines().any(|f| f == prog),
                    "{u} runs {prog}, not in the package"
                );
            }
            if let Some(x) = l.strip_prefix("OnFailure=") {
                let unit = x.replace("%i", "");
                ensure!(
                    sd.join(&unit).is_file(),
                    "{u} names {x}, not in the package"
                );
            }
            if let Some(x) = l.strip_prefix("Documentation=") {
                for page in x.split_whitespace() {
                    let (name, sect) = page
                        .strip_prefix("man:")
                        .and_then(|p| p.strip_suffix(')'))
                        .and_then(|p| p.split_once('('))
                        .with_context(|| format!("{u}: Documentation={x}"))?;
                    let path = format!("/usr/share/man/man{sect}/{name}.{sect}.gz");
                    ensure!(
                        listed.lines().any(|f| f == path),
                        "{u} names {page}, not in the package ({path})"
                    );
                }
            }
        }
        ensure!(
            !text.lines().any(|l| l.starts_with("RuntimeDirectory=lock")),
            "{u} takes over /run/lock"
        );
    }
    if !arch.is_host() {
        eprintln!(
            "xtask: deb: unpacked with dpkg, contents and units checked (an {} binary does not run here)",
            arch.deb
        );
        return Ok(());
    }
    let bin = root.join("usr/bin/extbackup");
    let v = output(Command::new(&bin).arg("--version"))?;
    ensure!(v.starts_with("extbackup "), "extbackup --version: {v}");
    eprintln!("xtask: deb: {}", v.trim());
    let page = output(
        Command::new("man")
            .arg("-M")
            .arg(root.join("usr/share/man"))
            .args(["-w", "extbackup"]),
    )?;
    ensure!(
        Path::new(page.trim()) == root.join("usr/share/man/man1/extbackup.1.gz"),
        "man -w extbackup: {page}"
    );
    let unit = fs::read_to_string(root.join("usr/lib/systemd/system/extbackup@.service"))?;
    ensure!(
        unit.contains(
            "ExecStart=/usr/bin/extbackup --config /etc/extbackup/config.toml run --uuid %i"
        ),
        "the packaged unit runs the packaged binary:\n{unit}"
    );
    // The example configuration as a person completes it: the source made real, one
    // drive with its key file (0400) as `prepare` appends it.
    let example = fs::read_to_string(root.join("usr/share/doc/extbackup/examples/config.toml"))?;
    let src = root.join("srv/backup");
    fs::create_dir_all(&src)?;
    let key = root.join("etc/extbackup/keys/offsite-a.key");
    fs::create_dir_all(key.parent().unwrap())?;
    fs::write(&key, [7u8; 64])?;
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400))?;
    let cfg = example.replace(
        "source = \"/srv/backup\"",
        &format!("source = \"{}\"", src.display()),
    ) + &format!(
        "\n[[drive]]\nname = \"offsite-a\"\nuuid = \"0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab\"\nkey_file = \"{}\"\n",
        key.display()
    );
    ensure!(cfg != example, "the example names source = \"/srv/backup\"");
    let cfg_path = root.join("config.toml");
    fs::write(&cfg_path, cfg)?;
    let check = output(
        Command::new(&bin)
            .arg("--config")
            .arg(&cfg_path)
            .args(["config", "check"]),
    )?;
    ensure!(check.contains(": valid"), "extbackup config check: {check}");
    eprintln!(
        "xtask: deb: installed with dpkg, --version, man -w and config check on the example: ok"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_copyright_file_names_both_licenses() {
        let c = super::copyright();
        assert!(c.contains("License: MIT or Apache-2.0"));
        assert!(c.contains("\nLicense: MIT\n") && c.contains("\nLicense: Apache-2.0\n"));
    }
}
