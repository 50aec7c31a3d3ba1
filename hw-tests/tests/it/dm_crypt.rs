//! The guest's own sanity check that dm-crypt works (modules dm-mod, dm-crypt, xts, ecb),
//! with the cryptsetup binary only: it proves the harness before any crate's vm_ tests.

use std::fs;
use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("starting {}: {e}", args[0]));
    assert!(
        out.status.success(),
        "`{}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Closes the mapping and the loop device even when an assertion fails.
struct Cleanup {
    mapping: String,
    mountpoint: String,
    loopdev: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mountpoint).status();
        let _ = Command::new("cryptsetup")
            .args(["close", &self.mapping])
            .status();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

#[test]
#[ignore = "needs dm-crypt: run in the QEMU guest by cargo xtask vm-test"]
fn vm_dm_crypt_luks_roundtrip_with_cryptsetup_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    let key = dir.path().join("key");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    fs::File::create(&img)
        .and_then(|f| f.set_len(40 << 20))
        .expect("image file");
    fs::write(&key, [0x5au8; 64]).expect("key file");
    let img_s = img.to_str().expect("utf-8 path");
    let key_s = key.to_str().expect("utf-8 path");
    let mnt_s = mnt.to_str().expect("utf-8 path");
    let loopdev = run(&["losetup", "-f", "--show", img_s]);
    let mapping = format!("vmsanity{}", std::process::id());
    let _c = Cleanup {
        mapping: mapping.clone(),
        mountpoint: mnt_s.to_string(),
        loopdev: loopdev.clone(),
    };
    run(&[
        "cryptsetup",
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--cipher",
        "aes-xts-plain64",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        key_s,
        &loopdev,
    ]);
    let open = || {
        run(&[
            "cryptsetup",
            "open",
            "--key-file",
            key_s,
            &loopdev,
            &mapping,
        ])
    };
    open();
    let mapped = format!("/dev/mapper/{mapping}");
    assert!(Path::new(&mapped).exists(), "{mapped} appears after open");
    let table = run(&["dmsetup", "table", &mapping]);
    assert!(table.contains("crypt aes-xts-plain64"), "dm table: {table}");
    run(&["mkfs.ext4", "-q", &mapped]);
    run(&["mount", &mapped, mnt_s]);
    let payload = b"written through dm-crypt in the guest\n";
    fs::write(mnt.join("hello.txt"), payload).expect("write on the mapped ext4");
    run(&["umount", mnt_s]);
    run(&["cryptsetup", "close", &mapping]);
    assert!(!Path::new(&mapped).exists(), "{mapped} gone after close");

    // The plaintext must not be on the raw device (grep: a byte loop in a debug build
    // under TCG takes many seconds)...
    let found = Command::new("grep")
        .args(["-a", "-F", "-q", "written through dm-crypt in the guest"])
        .arg(&img)
        .status()
        .expect("running grep");
    assert_eq!(
        found.code(),
        Some(1),
        "grep must find no plaintext on the raw image (0 = found, 2 = error)"
    );
    // ...and must come back after reopening with the key.
    open();
    run(&["mount", "-o", "ro", &mapped, mnt_s]);
    let back = fs::read(mnt.join("hello.txt")).expect("read back");
    assert_eq!(back, payload);
}
