//! The Debian architectures xtask builds for: amd64 (this machine's) and arm64 (most
//! small NAS boards), with the Rust target and the environment of a cross build.

use anyhow::{bail, Result};

/// One architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    /// Debian's name (`dpkg --print-architecture`): `amd64`, `arm64`.
    pub deb: &'static str,
    /// The Rust target triple.
    pub triple: &'static str,
    /// The multiarch folder name (`/usr/lib/<multiarch>`), also the cross tools' prefix.
    pub multiarch: &'static str,
}

/// x86_64.
pub const AMD64: Arch = Arch {
    deb: "amd64",
    triple: "x86_64-unknown-linux-gnu",
    multiarch: "x86_64-linux-gnu",
};
/// aarch64.
pub const ARM64: Arch = Arch {
    deb: "arm64",
    triple: "aarch64-unknown-linux-gnu",
    multiarch: "aarch64-linux-gnu",
};

impl Arch {
    /// `amd64` or `arm64`.
    pub fn parse(name: &str) -> Result<Arch> {
        match name {
            "amd64" | "x86_64" => Ok(AMD64),
            "arm64" | "aarch64" => Ok(ARM64),
            other => bail!("unknown architecture `{other}`: use amd64 or arm64"),
        }
    }

    /// Whether this is the machine's own architecture (no cross build).
    pub fn is_host(&self) -> bool {
        cfg!(target_arch = "x86_64") == (self.deb == "amd64")
    }

    /// Where cargo puts this architecture's `profile` (`debug`/`release`) output, relative
    /// to the target folder: `release` for the host, `aarch64-unknown-linux-gnu/release`
    /// when cross-building.
    pub fn out_dir(&self, profile: &str) -> String {
        if self.is_host() {
            profile.to_string()
        } else {
            format!("{}/{profile}", self.triple)
        }
    }

    /// Extra cargo arguments: `--target TRIPLE` when cross-building.
    pub fn cargo_args(&self) -> Vec<&'static str> {
        if self.is_host() {
            vec![]
        } else {
            vec!["--target", self.triple]
        }
    }

    /// The environment of a cross build: Debian's cross gcc as linker and C compiler, and
    /// pkg-config and bindgen looking at the target's -dev packages (`:arm64`).
    pub fn cargo_env(&self) -> Vec<(String, String)> {
        if self.is_host() {
            return vec![];
        }
        let up = self.triple.to_uppercase().replace('-', "_");
        let gcc = format!("{}-gcc", self.multiarch);
        vec![
            (format!("CARGO_TARGET_{up}_LINKER"), gcc.clone()),
            (format!("CC_{}", self.triple.replace('-', "_")), gcc),
            ("PKG_CONFIG_ALLOW_CROSS".into(), "1".into()),
            (
                "PKG_CONFIG_LIBDIR".into(),
                format!(
                    "/usr/lib/{0}/pkgconfig:/usr/share/pkgconfig",
                    self.multiarch
                ),
            ),
            (
                "BINDGEN_EXTRA_CLANG_ARGS".into(),
                format!("--target={0} -I/usr/include/{0}", self.multiarch),
            ),
        ]
    }

    /// The `strip` for this architecture's binaries.
    pub fn strip(&self) -> String {
        if self.is_host() {
            "strip".into()
        } else {
            format!("{}-strip", self.multiarch)
        }
    }
}
