//! `cargo xtask deb [--debug] [--check] [--out DIR]`: the Debian package.
//!
//! A staging tree packed with `dpkg-deb --build --root-owner-group`: the binary at
//! /usr/bin/extbackup, man pages and shell completions generated from the clap definition
//! (`extbackup generate-assets`), the config-independent systemd units that `extbackup
//! install` would otherwise write (the udev rule names the drives, so `extbackup install`
//! still writes it), the docs and an example configuration (the first TOML block of
//! docs/configuration.md). Depends: the packages holding the shared libraries the binary
//! links (`ldd` + `dpkg -S`), plus the programs it runs.
//!
//! `--check` installs the package with `dpkg --root` into an empty folder (a clean root:
//! nothing installed, dependencies not checked there, no maintainer scripts to run) and
//! runs `extbackup --version`, `man -w extbackup` and `extbackup config check` on the
//! example. `--debug` packages the debug binary (no release build: what `cargo xtask test`
//! uses, to keep CI short); a package for a NAS is built without it.

use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util;

/// Programs extbackup runs (besides the libraries it links).
const RUNS: &[&str] = &["rsync", "e2fsprogs", "util-linux", "mount"];

pub fn run(args: &[String]) -> Result<()> {
    let (mut debug, mut check) = (false, false);
    let root = util::root();
    let mut out = root.join("target/deb");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--debug" => debug = true,
            "--check" => check = true,
            "--out" => out = PathBuf::from(it.next().context("--out needs a folder")?),
            other => bail!("unknown option `{other}` for `cargo xtask deb`"),
        }
    }
    let deb = build(&root, debug, &out)?;
    eprintln!("xtask: built {}", deb.display());
    if check {
        check_install(&deb)?;
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

/// Builds the package into `out`; returns its path.
pub fn build(root: &Path, debug: bool, out: &Path) -> Result<PathBuf> {
    let mut args = vec!["build", "-p", "extbackup", "--bin", "extbackup"];
    if !debug {
        args.push("--release");
    }
    util::cargo(root, &args, &[])?;
    let bin = root.join(if debug {
        "target/debug/extbackup"
    } else {
        "target/release/extbackup"
    });
    let version = output(Command::new(&bin).arg("--version"))?
        .trim()
        .strip_prefix("extbackup ")
        .context("extbackup --version says `extbackup VERSION`")?
        .to_string();
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();

    let stage = out.join("staging");
    let _ = fs::remove_dir_all(&stage);
    let put = |rel: &str, from: &Path| -> Result<()> {
        let to = stage.join(rel);
        fs::create_dir_all(to.parent().unwrap())?;
        fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    put("usr/bin/extbackup", &bin)?;

    let assets = out.join("assets");
    let _ = fs::remove_dir_all(&assets);
    util::run(Command::new(&bin).arg("generate-assets").arg(&assets))?;
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
    for u in [
        "extbackup@.service",
        "extbackup-check.service",
        "extbackup-check.timer",
    ] {
        put(
            &format!("usr/lib/systemd/system/{u}"),
            &assets.join("systemd").join(u),
        )?;
    }

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
    let example = example_config(&fs::read_to_string(root.join("docs/configuration.md"))?)?;
    fs::create_dir_all(stage.join(doc).join("examples"))?;
    fs::write(stage.join(doc).join("examples/config.toml"), example)?;
    fs::write(
        stage.join(doc).join("copyright"),
        "extbackup: off-site backups onto rotating LUKS USB drives.\nLicense: see the project's Cargo.toml (workspace license).\n",
    )?;

    let mut depends = shlib_packages(&bin)?;
    depends.extend(RUNS.iter().map(|s| s.to_string()));
    depends.sort();
    depends.dedup();
    let size_kib = dir_size(&stage)? / 1024 + 1;
    let control = format!(
        "Package: extbackup\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: extbackup maintainers <root@localhost>\n\
         Installed-Size: {size_kib}\n\
         Depends: {}\n\
         Recommends: cryptsetup-bin, systemd\n\
         Section: admin\n\
         Priority: optional\n\
         Description: off-site backups onto rotating LUKS USB drives\n \
         Plug in a prepared LUKS drive; extbackup unlocks, checks and mounts it, mirrors\n \
         the NAS's backup onto it, unmounts and closes it, and shows green on a\n \
         BlinkStick LED (red and a mail on any failure). Run `extbackup install` after\n \
         writing /etc/extbackup/config.toml to add the udev rule for your drives.\n",
        depends.join(", ")
    );
    fs::create_dir_all(stage.join("DEBIAN"))?;
    fs::write(stage.join("DEBIAN/control"), control)?;
    let deb = out.join(format!("extbackup_{version}_{arch}.deb"));
    util::run(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zgzip"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// The first ```toml block of docs/configuration.md.
fn example_config(doc: &str) -> Result<String> {
    let start = doc
        .find("```toml\n")
        .context("docs/configuration.md has a ```toml example")?
        + 8;
    let len = doc[start..].find("```").context("the example ends")?;
    Ok(doc[start..start + len].to_string())
}

/// The packages holding the shared libraries `bin` links directly (its `NEEDED` entries,
/// found where `ldd` resolves them).
fn shlib_packages(bin: &Path) -> Result<Vec<String>> {
    let dynamic = output(Command::new("readelf").arg("-d").arg(bin))?;
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    let ldd = output(Command::new("ldd").arg(bin))?;
    let mut pkgs = vec![];
    for line in ldd.lines() {
        let soname = line.split_whitespace().next().unwrap_or("");
        if !needed.contains(&soname) {
            continue;
        }
        let Some(path) = line
            .split("=>")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        // usr-merged systems list /lib paths in dpkg's database as /lib or /usr/lib.
        let real = fs::canonicalize(path).unwrap_or_else(|_| path.into());
        let alt = real.to_string_lossy().replacen("/usr/lib/", "/lib/", 1);
        let found = [real.to_string_lossy().into_owned(), path.to_string(), alt]
            .iter()
            .find_map(|p| {
                let o = Command::new("dpkg").args(["-S", p]).output().ok()?;
                let s = String::from_utf8_lossy(&o.stdout).into_owned();
                o.status
                    .success()
                    .then(|| s.split(':').next().unwrap_or("").trim().to_string())
            });
        match found {
            Some(p) if !p.is_empty() => pkgs.push(p),
            _ => bail!("no package holds {path}, which {} links", bin.display()),
        }
    }
    Ok(pkgs)
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

/// Installs `deb` into an empty root with dpkg and runs the installed program there.
pub fn check_install(deb: &Path) -> Result<()> {
    ensure!(
        util::is_root(),
        "cargo xtask deb --check installs with dpkg: run it as root"
    );
    let tmp = std::env::temp_dir().join(format!("extbackup-deb-root-{}", std::process::id()));
    let result = check_in(deb, &tmp);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn check_in(deb: &Path, root: &Path) -> Result<()> {
    let admin = root.join("var/lib/dpkg");
    fs::create_dir_all(admin.join("info"))?;
    fs::create_dir_all(admin.join("updates"))?;
    fs::write(admin.join("status"), "")?;
    // A clean root has none of the dependencies: they are the host's to provide here.
    util::run(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-depends", "--log=/dev/null", "-i"])
            .arg(deb),
    )?;
    let listed = output(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["-L", "extbackup"]),
    )?;
    for f in [
        "/usr/bin/extbackup",
        "/usr/share/man/man1/extbackup.1.gz",
        "/usr/share/man/man1/extbackup-run.1.gz",
        "/usr/share/bash-completion/completions/extbackup",
        "/usr/share/zsh/vendor-completions/_extbackup",
        "/usr/share/fish/vendor_completions.d/extbackup.fish",
        "/usr/lib/systemd/system/extbackup@.service",
        "/usr/lib/systemd/system/extbackup-check.timer",
        "/usr/share/doc/extbackup/configuration.md",
        "/usr/share/doc/extbackup/examples/config.toml",
    ] {
        ensure!(
            listed.lines().any(|l| l == f),
            "the package lacks {f}:\n{listed}"
        );
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
    // The example configuration, its key files made real (0400) in the test root.
    let example = fs::read_to_string(root.join("usr/share/doc/extbackup/examples/config.toml"))?;
    let keys = root.join("keys");
    fs::create_dir_all(&keys)?;
    let mut cfg = String::new();
    for line in example.lines() {
        if let Some(k) = line.strip_prefix("key_file = \"/etc/extbackup/keys/") {
            let name = k.trim_end_matches('"');
            let p = keys.join(name);
            fs::write(&p, [7u8; 64])?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o400))?;
            cfg.push_str(&format!("key_file = \"{}\"\n", p.display()));
        } else {
            cfg.push_str(line);
            cfg.push('\n');
        }
    }
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
    fn the_example_is_the_first_toml_block() {
        let doc = "# x\n```\nno\n```\n```toml\nsource = \"/srv\"\n```\n```toml\nlater\n```\n";
        assert_eq!(super::example_config(doc).unwrap(), "source = \"/srv\"\n");
    }
}
