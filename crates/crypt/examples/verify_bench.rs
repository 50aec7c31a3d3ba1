//! Benchmark for `cargo xtask bench`: how long `verify_key_file` takes on a keyslot as
//! `LibcryptsetupCrypt::format` makes it (PBKDF2, minimum iterations) against a keyslot
//! made by `cryptsetup luksAddKey --pbkdf argon2id` with its default cost, on the same
//! image file. Prints both medians and the ratio; exits 1 if ours takes 0.2 s or more.
//!
//! Run: `cargo run --release -p crypt --example verify_bench` (needs cryptsetup-bin).

use crypt::{Crypt, FormatOptions, LibcryptsetupCrypt};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn median(c: &LibcryptsetupCrypt, img: &Path, key: &Path, runs: usize, slot: u32) -> Duration {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let got = c.verify_key_file(img, key).expect("verify_key_file");
            let d = start.elapsed();
            assert_eq!(got, slot, "the key opened an unexpected slot");
            d
        })
        .collect();
    t.sort();
    t[runs / 2]
}

fn main() -> ExitCode {
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("bench.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(32 * 1024 * 1024))
        .expect("image");
    let ours_key = dir.path().join("ours.key");
    let argon_key = dir.path().join("argon.key");
    let mut k = vec![0u8; 4096];
    for (p, seed) in [(&ours_key, 1u8), (&argon_key, 2u8)] {
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        k[0] = seed;
        std::fs::write(p, &k).expect("key file");
    }
    let c = LibcryptsetupCrypt::new();
    c.format(
        &img,
        &FormatOptions {
            key_file: ours_key.clone(),
            passphrase: None,
            label: None,
            uuid: None,
            fast_pbkdf_for_tests: false,
        },
    )
    .expect("format");
    eprintln!("bench crypt: adding a default argon2id keyslot with cryptsetup (slow by design)");
    let st = Command::new("cryptsetup")
        .args([
            "luksAddKey",
            "--batch-mode",
            "--pbkdf",
            "argon2id",
            "--key-file",
        ])
        .arg(&ours_key)
        .arg(&img)
        .arg(&argon_key)
        .status()
        .expect("run cryptsetup (install cryptsetup-bin)");
    assert!(st.success(), "cryptsetup luksAddKey failed");

    let ours = median(&c, &img, &ours_key, 7, 0);
    let argon = median(&c, &img, &argon_key, 3, 1);
    let ratio = argon.as_secs_f64() / ours.as_secs_f64();
    println!(
        "crypt verify_key_file: ours (pbkdf2 key-file slot) {:.3} s, default argon2id slot {:.3} s, argon2id/ours = {ratio:.1}x (target: ours < 0.200 s)",
        ours.as_secs_f64(),
        argon.as_secs_f64()
    );
    if ours >= Duration::from_millis(200) {
        eprintln!("bench crypt: MISSED the target: verify_key_file took 0.2 s or more");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
