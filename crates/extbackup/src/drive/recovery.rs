//! The recovery passphrase: a second keyslot that opens a drive without the NAS's key file.
//!
//! `prepare` adds it (generated and shown once, or read from a file), `extbackup recovery
//! add NAME` adds it to a drive prepared before; both note it in the state directory
//! (`recovery/NAME.json`) so that `status` can warn about a drive without one. The slot is
//! argon2id at libcryptsetup's normal cost; tests may set
//! `EXTBACKUP_TEST_CHEAP_PASSPHRASE_KDF=1` ([`CHEAP_KDF_ENV`]) for the cheapest argon2id,
//! since the full cost takes many seconds under software emulation.

use crypt::{Crypt, PassphraseKdf, Secret};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::drive::layout::HEADERS_DIR;
use crate::Failure;

/// Environment variable: `1` makes new passphrase slots use the cheapest argon2id (tests
/// only; a cheap slot is easy to brute-force).
pub const CHEAP_KDF_ENV: &str = "EXTBACKUP_TEST_CHEAP_PASSPHRASE_KDF";

/// Groups of [`GROUP_LEN`] characters in a generated passphrase.
pub const GROUPS: usize = 8;
/// Characters per group.
pub const GROUP_LEN: usize = 4;
/// The shortest passphrase accepted from a file.
pub const MIN_LEN: usize = 12;

/// Base32 (RFC 4648) in lower case: no 0/1/8/9, so no 0-vs-o or 1-vs-l confusion.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// What `prepare` does about the recovery passphrase.
#[derive(Clone, Debug)]
pub enum RecoveryChoice {
    /// Add this passphrase in a second keyslot.
    Passphrase(Secret, PassphraseKdf),
    /// No recovery passphrase (`--no-recovery-passphrase`): the drive opens only with the
    /// key file, which lives on the NAS.
    None,
}

/// The PBKDF cost for new passphrase slots: cryptsetup's default unless [`CHEAP_KDF_ENV`]
/// is `1`.
pub fn kdf_from_env() -> PassphraseKdf {
    if std::env::var_os(CHEAP_KDF_ENV).is_some_and(|v| v == "1") {
        tracing::warn!(
            "{CHEAP_KDF_ENV}=1: the recovery passphrase slot gets the CHEAPEST argon2id \
             (tests only; easy to brute-force)"
        );
        PassphraseKdf::CheapForTests
    } else {
        PassphraseKdf::Default
    }
}

/// A new passphrase: 8 groups of 4 lower-case base32 characters joined by `-`
/// (160 random bits), e.g. `k7qp-mz3a-...`. The dashes are part of it.
pub fn generate_passphrase() -> Result<Secret, Failure> {
    let mut raw = zeroize::Zeroizing::new([0u8; GROUPS * GROUP_LEN]);
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw[..]))
        .map_err(|e| Failure::with("reading /dev/urandom", e))?;
    Ok(Secret::new(format_groups(&raw[..])))
}

/// Maps each byte to a base32 character (its low 5 bits: uniform for uniform bytes) and
/// groups them.
fn format_groups(raw: &[u8]) -> String {
    let mut s = String::with_capacity(raw.len() + raw.len() / GROUP_LEN);
    for (i, b) in raw.iter().enumerate() {
        if i > 0 && i % GROUP_LEN == 0 {
            s.push('-');
        }
        s.push(ALPHABET[usize::from(b & 31)] as char);
    }
    s
}

/// Reads a passphrase from `path`: its first line (a trailing newline is not part of it).
pub fn read_passphrase_file(path: &Path) -> Result<Secret, Failure> {
    let text = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| {
        Failure::with(format!("reading the passphrase file {}", path.display()), e)
    })?);
    let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let s = std::str::from_utf8(first).map_err(|_| {
        Failure::new(format!(
            "the passphrase file {} is not UTF-8 text",
            path.display()
        ))
    })?;
    check_strength(s).map_err(|why| Failure::new(format!("{}: {why}", path.display())))?;
    Ok(Secret::new(s))
}

fn check_strength(s: &str) -> Result<(), String> {
    if s.chars().count() < MIN_LEN {
        return Err(format!(
            "the recovery passphrase is shorter than {MIN_LEN} characters: it guards the whole \
             backup on a drive anyone may find; use a longer one (or let extbackup generate one)"
        ));
    }
    Ok(())
}

/// What the state directory knows about a drive's recovery passphrase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryNote {
    /// Whether the drive has a recovery passphrase slot.
    pub passphrase: bool,
    /// When this was noted, seconds since the epoch.
    pub noted: u64,
}

fn note_path(state_dir: &Path, drive: &str) -> PathBuf {
    state_dir.join("recovery").join(format!("{drive}.json"))
}

/// Notes whether `drive` has a recovery passphrase.
pub fn note(state_dir: &Path, drive: &str, passphrase: bool) -> std::io::Result<()> {
    let p = note_path(state_dir, drive);
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    let n = RecoveryNote {
        passphrase,
        noted: crate::fmt::now(),
    };
    oskit::write_atomic(&p, &serde_json::to_vec_pretty(&n)?, Some(0o644))
}

/// The noted state of `drive`, if any.
pub fn read_note(state_dir: &Path, drive: &str) -> Option<RecoveryNote> {
    let b = std::fs::read(note_path(state_dir, drive)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// The warning `status` shows for a drive without a recovery passphrase.
pub fn status_note(state_dir: &Path, drive: &str) -> Option<String> {
    match read_note(state_dir, drive) {
        Some(RecoveryNote {
            passphrase: true, ..
        }) => None,
        Some(_) => Some(format!(
            "WARNING: no recovery passphrase: without the NAS's key file this drive cannot be \
             opened; add one with `extbackup recovery add {drive}`"
        )),
        None => Some(format!(
            "recovery passphrase: not recorded (a drive prepared before recovery passphrases \
             existed?); `extbackup recovery add {drive}` adds one"
        )),
    }
}

/// Adds the recovery passphrase to `device`, authorised by `key_file`.
pub fn add(
    crypt: &dyn Crypt,
    device: &Path,
    key_file: &Path,
    pass: &Secret,
    kdf: PassphraseKdf,
) -> Result<u32, Failure> {
    tracing::info!(
        "adding the recovery passphrase keyslot on {} (argon2id{})",
        device.display(),
        if kdf == PassphraseKdf::CheapForTests {
            ", cheapest cost: tests only"
        } else {
            ""
        }
    );
    crypt
        .add_passphrase(device, key_file, pass, kdf)
        .map_err(|e| {
            Failure::with(
                format!("adding the recovery passphrase to {}", device.display()),
                e,
            )
        })
}

/// Shows a new passphrase on the controlling terminal (`/dev/tty`, never stdout or
/// stderr, which may go to a log) and asks the owner to confirm they stored it; `Ok(false)`
/// when they did not.
pub fn show_and_confirm(drive: &str, pass: &Secret) -> Result<bool, Failure> {
    let mut tty = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/tty")
        .map_err(|e| {
            Failure::with(
                "no terminal to show the recovery passphrase on: pass \
                 --recovery-passphrase-file FILE",
                e,
            )
        })?;
    let shown = writeln!(
        tty,
        "\nRecovery passphrase for drive {drive} (shown ONCE; it opens the drive without the \
         NAS's key file, e.g. after a fire or theft):\n\n    {}\n\n\
         Write it down and keep it away from the NAS (the dashes are part of it). \
         See docs/restore.md for how it is used.",
        pass.expose()
    )
    .and_then(|_| write!(tty, "Type `stored` once you have stored it: "))
    .and_then(|_| tty.flush());
    shown.map_err(|e| Failure::with("writing to the terminal", e))?;
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::with("reading the answer", e))?;
    Ok(line.trim() == "stored")
}

/// Reads a passphrase: from the terminal without echo (up to the caller's tries), or one
/// line from stdin when it is not a terminal.
pub fn read_passphrase(prompt: &str) -> Result<Secret, Failure> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = zeroize::Zeroizing::new(String::new());
        stdin
            .read_line(&mut line)
            .map_err(|e| Failure::with("reading the passphrase from stdin", e))?;
        let s = line.strip_suffix('\n').unwrap_or(&line);
        let s = s.strip_suffix('\r').unwrap_or(s);
        return Ok(Secret::new(s));
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let line = read_without_echo()?;
    eprintln!();
    Ok(Secret::new(line.trim_end_matches(['\n', '\r'])))
}

/// One line from the terminal on stdin with echo off (restored afterwards).
fn read_without_echo() -> Result<zeroize::Zeroizing<String>, Failure> {
    let stdin = std::io::stdin();
    let mut line = zeroize::Zeroizing::new(String::new());
    oskit::without_echo(&stdin, || stdin.read_line(&mut line))
        .map_err(|e| Failure::with("reading the passphrase from the terminal", e))?;
    Ok(line)
}

/// Where `prepare` keeps the LUKS header backup of `drive` (beside its key file).
pub fn header_backup_path(drive: &crate::config::DriveConfig) -> PathBuf {
    drive
        .key_file
        .with_file_name(format!("{}.luks-header", drive.name))
}

/// The header backups of the configured drives that exist on this machine: (name, file).
pub fn header_backups(cfg: &crate::config::Config) -> Vec<(String, PathBuf)> {
    cfg.drives
        .iter()
        .map(|d| (d.name.to_string(), header_backup_path(d)))
        .collect()
}

/// Stores the header backups of the drives other than `this` on the drive mounted at
/// `mountpoint` (`.extbackup/headers/NAME.img`), so that a damaged header can be restored
/// from the other drive. A header is no secret beyond what the drive itself carries (its
/// keyslots are as strong as the drive's). Missing backups are skipped; errors are only
/// logged: this never fails a backup.
pub fn store_headers(mountpoint: &Path, headers: &[(String, PathBuf)], this: &str) {
    for (name, file) in headers.iter().filter(|(n, _)| n != this) {
        if !file.exists() {
            tracing::debug!("no header backup of {name} at {}", file.display());
            continue;
        }
        // Through the drive's handle: a symlink at `.extbackup` or `.extbackup/headers` is
        // an error, never a header backup stored on the NAS.
        let dir = Path::new(HEADERS_DIR);
        let r = oskit::beneath::Beneath::open(mountpoint).and_then(|drive| {
            let data = std::fs::read(file)?;
            drive.create_dir_all(dir, 0o755)?;
            drive.write_atomic(&dir.join(format!("{name}.img")), &data, 0o400)
        });
        match r {
            Ok(()) => tracing::info!("stored the LUKS header backup of {name} on this drive"),
            Err(e) => tracing::warn!(
                "storing the LUKS header backup of {name} ({}) on this drive: {e}",
                file.display()
            ),
        }
    }
}

/// Replaces the header backup at `path` with a fresh one of `device` (after a keyslot
/// change: the old backup lacks the new slot).
pub fn refresh_header_backup(crypt: &dyn Crypt, device: &Path, path: &Path) -> Result<(), Failure> {
    let tmp = path.with_extension("luks-header.new");
    let _ = std::fs::remove_file(&tmp);
    crypt
        .backup_header(device, &tmp)
        .map_err(|e| Failure::with(format!("saving the LUKS header of {}", device.display()), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400));
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| Failure::with(format!("replacing {}", path.display()), e))
}

/// What a recovery kit holds.
#[derive(Clone, Debug)]
pub struct Kit {
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Copies the key file `k` to `to` (a new file, mode 0400, synced).
fn copy_key_file(k: &Path, to: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(k).map_err(|e| Failure::with(format!("reading {}", k.display()), e))?,
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(to)
        .map_err(|e| Failure::with(format!("creating {}", to.display()), e))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Failure::with(format!("writing {}", to.display()), e))
}

/// RESTORE.txt of a kit: the drive's facts and the exact commands, for a person with a
/// Linux machine and no extbackup. `key` is the kit's copy of the key file, if any.
fn restore_text(name: &str, info: &crypt::LuksInfo, hdr: &str, key: Option<&str>) -> String {
    let label = info.label.clone().unwrap_or_default();
    let fs_label: String = name.chars().take(16).collect();
    let uuid = &info.uuid;
    let open_with = match key {
        Some(k) => format!(
            "    sudo cryptsetup open --readonly --key-file {k} /dev/disk/by-uuid/{uuid} {name}\n\
             \x20   (or without the key file: sudo cryptsetup open --readonly /dev/disk/by-uuid/{uuid} {name}\n\
             \x20    and type the recovery passphrase)\n"
        ),
        None => format!(
            "    sudo cryptsetup open --readonly /dev/disk/by-uuid/{uuid} {name}\n\
             \x20   (type the recovery passphrase; or --key-file KEYFILE if you have the key file)\n"
        ),
    };
    format!(
        "Recovery kit of backup drive {name}\n\
         ===================================\n\n\
         LUKS UUID:        {uuid}\n\
         LUKS label:       {label}\n\
         LUKS version:     {ver}, cipher {cipher}, keyslots {slots:?}\n\
         Filesystem label: {fs_label} (ext4)\n\
         Header backup:    {hdr}\n\
         Written:          {when}\n\n\
         The backup is on the drive's filesystem under generations/DATE/, one full copy per\n\
         run, the newest last (a drive kept as a plain mirror, history = false, has a single\n\
         copy under data/ instead). A folder ending in .incomplete is an interrupted run: do\n\
         not restore from it. You need: a Linux machine with cryptsetup and rsync (Debian:\n\
         sudo apt-get install cryptsetup-bin rsync), this drive, and its recovery\n\
         passphrase{kf}.\n\n\
         1. Plug the drive in and find it (its LUKS UUID is above):\n\
         \x20   lsblk -o NAME,SIZE,FSTYPE,UUID,LABEL\n\
         2. Open it read-only:\n\
         {open_with}\
         3. Mount it read-only and look (noload: a journal left by an unplugged run is not\n\
         \x20  replayed, so nothing at all is written to the drive):\n\
         \x20   sudo mkdir -p /mnt/{name}\n\
         \x20   sudo mount -o ro,noload /dev/mapper/{name} /mnt/{name}\n\
         \x20   ls /mnt/{name}/generations\n\
         4. Copy back what you need, keeping owners, modes, times, hard links, ACLs, xattrs,\n\
         \x20  and sparse files sparse (DATE: a name the ls showed; or G=/mnt/{name}/data):\n\
         \x20   G=/mnt/{name}/generations/DATE\n\
         \x20   sudo mkdir -p /srv/restored\n\
         \x20   sudo rsync -aHAXS --numeric-ids $G/SOME/FOLDER/ /srv/restored/FOLDER/\n\
         5. Close it:\n\
         \x20   sudo umount /mnt/{name} && sudo cryptsetup close {name}\n\n\
         If cryptsetup says the device is not a LUKS device (a damaged header), write the\n\
         header backup back first, then start again at step 2:\n\
         \x20   sudo cryptsetup luksHeaderRestore /dev/sdX --header-backup-file {hdr}\n\
         (/dev/sdX: the drive, e.g. /dev/sdb, which lsblk shows by its size; /dev/sdX1 if\n\
         it was prepared with --partition. The header file is this kit's; if the kit has\n\
         moved, give its path where it is now.) The other backup drive carries this header\n\
         too, in .extbackup/headers/{name}.img.\n\n\
         With extbackup installed: sudo extbackup mount --device /dev/sdX --passphrase\n\
         See docs/restore.md of extbackup for the whole story.\n",
        ver = info.version,
        cipher = info.cipher,
        slots = info.keyslots,
        when = crate::fmt::fmt_utc(crate::fmt::now()),
        kf = if key.is_some() {
            " (or the key file in this kit)"
        } else {
            ""
        },
    )
}

/// Writes the recovery kit of `drive` into `dir`: its LUKS header backup, and RESTORE.txt
/// with its UUID, labels and the exact commands; with `key_file`, a copy of the key file.
pub fn write_kit(
    crypt: &dyn Crypt,
    drive: &crate::drive::browse::Drive,
    dir: &Path,
    key_file: Option<&Path>,
) -> Result<Kit, Failure> {
    use std::os::unix::fs::DirBuilderExt;
    let name = &drive.name;
    let info = crypt.inspect(&drive.device).map_err(|e| {
        Failure::with(
            format!("reading the LUKS header of {}", drive.device.display()),
            e,
        )
    })?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Failure::with(format!("creating {}", dir.display()), e))?;
    let header = dir.join(format!("{name}.luks-header"));
    let restore_txt = dir.join(format!("RESTORE-{name}.txt"));
    for p in [&header, &restore_txt] {
        if p.exists() {
            return Err(Failure::new(format!(
                "{} exists already: write the kit into an empty folder",
                p.display()
            )));
        }
    }
    crypt
        .backup_header(&drive.device, &header)
        .map_err(|e| Failure::with("saving the LUKS header backup", e))?;
    let mut files = vec![header.clone()];
    let key_copy = match key_file {
        None => None,
        Some(k) => {
            let to = dir.join(format!("{name}.key"));
            copy_key_file(k, &to)?;
            files.push(to.clone());
            Some(to)
        }
    };
    // The kit's files by absolute paths: a relative one depends on where the reader stands.
    let absolute = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .to_string_lossy()
            .into_owned()
    };
    let text = restore_text(
        name,
        &info,
        &absolute(&header),
        key_copy.as_deref().map(absolute).as_deref(),
    );
    std::fs::write(&restore_txt, text)
        .map_err(|e| Failure::with(format!("writing {}", restore_txt.display()), e))?;
    files.push(restore_txt);
    Ok(Kit { files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passphrases_are_grouped_base32_and_differ() {
        let a = generate_passphrase().unwrap();
        let b = generate_passphrase().unwrap();
        assert_ne!(a, b);
        let groups: Vec<&str> = a.expose().split('-').collect();
        assert_eq!(groups.len(), GROUPS);
        for g in groups {
            assert_eq!(g.len(), GROUP_LEN);
            assert!(g.bytes().all(|c| ALPHABET.contains(&c)), "{g}");
        }
        assert!(!format!("{a:?}").contains(a.expose()));
        // Every byte value maps into the alphabet, each character by exactly 8 byte values.
        let all: Vec<u8> = (0..=255).collect();
        let s = format_groups(&all).replace('-', "");
        for c in ALPHABET {
            assert_eq!(s.bytes().filter(|x| x == c).count(), 8);
        }
    }

    #[test]
    fn passphrase_files_give_their_first_line_and_short_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "correct horse battery staple\r\n").unwrap();
        assert_eq!(
            read_passphrase_file(&p).unwrap().expose(),
            "correct horse battery staple"
        );
        std::fs::write(&p, "short\n").unwrap();
        let e = read_passphrase_file(&p).unwrap_err().chain().join(": ");
        assert!(e.contains("shorter than 12"), "{e}");
        assert!(!e.contains("short\n"), "{e}");
    }

    #[test]
    fn status_warns_without_a_passphrase_and_is_quiet_with_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(status_note(dir.path(), "a")
            .unwrap()
            .contains("not recorded"));
        note(dir.path(), "a", false).unwrap();
        let n = status_note(dir.path(), "a").unwrap();
        assert!(n.contains("WARNING: no recovery passphrase"), "{n}");
        assert!(n.contains("extbackup recovery add a"), "{n}");
        note(dir.path(), "a", true).unwrap();
        assert_eq!(status_note(dir.path(), "a"), None);
    }

    #[test]
    fn other_drives_headers_are_stored_and_missing_ones_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().join("mnt");
        std::fs::create_dir_all(&mp).unwrap();
        std::fs::write(dir.path().join("a.luks-header"), "header a").unwrap();
        std::fs::write(dir.path().join("b.luks-header"), "header b").unwrap();
        let headers = vec![
            ("a".to_string(), dir.path().join("a.luks-header")),
            ("b".to_string(), dir.path().join("b.luks-header")),
            ("c".to_string(), dir.path().join("c.luks-header")),
        ];
        store_headers(&mp, &headers, "a");
        let names: Vec<String> = std::fs::read_dir(mp.join(HEADERS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["b.img"]);
        assert_eq!(
            std::fs::read_to_string(mp.join(HEADERS_DIR).join("b.img")).unwrap(),
            "header b"
        );
    }

    #[test]
    fn add_goes_through_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let (k, other) = (dir.path().join("k"), dir.path().join("other"));
        std::fs::write(&k, [1u8; 64]).unwrap();
        std::fs::write(&other, [2u8; 64]).unwrap();
        let c = crypt::fake::FakeCrypt::new();
        c.add_volume("/dev/sdx", "11111111-2222-4333-8444-555555555555", &k);
        let pass = Secret::new("abcd-efgh-ijkl-mnop");
        let e = add(
            &c,
            Path::new("/dev/sdx"),
            &other,
            &pass,
            PassphraseKdf::Default,
        )
        .unwrap_err();
        assert!(e.chain().join(": ").contains("opens no keyslot"));
        assert_eq!(
            add(&c, Path::new("/dev/sdx"), &k, &pass, PassphraseKdf::Default).unwrap(),
            1
        );
    }
}
