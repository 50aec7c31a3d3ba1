//! `extbackup::system::escape` against the real `systemd-escape` (Debian's `systemd` package).
//! If the tool is missing these tests FAIL: an escaping we cannot compare is not verified.

use extbackup::system::escape;
use std::process::Command;

/// Runs `systemd-escape <args> -- <input>`; `Ok(stdout without the newline)` or
/// `Err(stderr)` when the tool refuses the input.
fn tool(args: &[&str], input: &str) -> Result<String, String> {
    let out = Command::new("systemd-escape")
        .args(args)
        .arg("--")
        .arg(input)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-escape ({e}): install Debian's `systemd` package \
                 (cargo xtask deps) to compare the escaping with the real tool"
            )
        });
    if out.status.success() {
        let mut s = String::from_utf8(out.stdout).expect("systemd-escape printed UTF-8");
        assert_eq!(
            s.pop(),
            Some('\n'),
            "systemd-escape ends its output with a newline"
        );
        Ok(s)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const INPUTS: &[&str] = &[
    "",
    "/",
    "//",
    "/.",
    "a",
    "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
    "/dev/disk/by-uuid/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
    "/dev/disk/by-label/My Backup",
    r"My\x20Backup",
    r"/dev/disk/by-label/My\x20Backup",
    "My Backup",
    ".hidden",
    "/.hidden/x",
    "./a",
    "x/.y",
    "a..b",
    "/a/..b",
    "/a/b..",
    "..",
    ".",
    "/a/../b",
    "/..",
    "../a",
    "//a///b//",
    "/a/./b/.",
    "-",
    "--a--",
    "a-b_c:d.e",
    "ä",
    "Sicherung äöü ß",
    "日本語",
    "🙂 emoji",
    "tab\there",
    "new\nline",
    "back\\slash",
    "quote\"and'apos",
    "percent%i",
    "at@sign",
    "UPPER lower 0123456789",
    "!#$&()*+,;<=>?[]^`{|}~",
];

#[test]
fn escape_equals_systemd_escape() {
    for input in INPUTS {
        let want = tool(&[], input).expect("plain systemd-escape accepts every input");
        assert_eq!(escape::escape(input), want, "escape({input:?})");
    }
}

#[test]
fn escape_path_equals_systemd_escape_path() {
    let long_component = format!("/{}", "a".repeat(256));
    let ok_component = format!("/{}", "a".repeat(255));
    let long_path = format!("/{}", ["b"; 2048].join("/"));
    let mut inputs: Vec<&str> = INPUTS.to_vec();
    inputs.extend([
        long_component.as_str(),
        ok_component.as_str(),
        long_path.as_str(),
    ]);
    for input in inputs {
        match (escape::escape_path(input), tool(&["--path"], input)) {
            (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "escape_path({input:?})"),
            (Err(_), Err(_)) => {}
            (ours, theirs) => {
                panic!("escape_path({input:?}): ours {ours:?}, systemd-escape {theirs:?}")
            }
        }
    }
}

#[test]
fn unescape_equals_systemd_escape_unescape_on_escaped_and_broken_inputs() {
    let mut inputs: Vec<String> = INPUTS.iter().map(|s| escape::escape(s)).collect();
    inputs.extend(
        [
            r"a\x2Db",
            r"a\xZZ",
            r"a\X2d",
            r"x\",
            r"a\x",
            "-a",
            "a-",
            "a--b",
            r"\x2e\x2e",
            "a-..-b",
            "a-.-b",
            r"a\x2f",
            "-",
            "",
        ]
        .map(String::from),
    );
    for input in &inputs {
        // Inputs decoding to NUL are refused by us; the C tool truncates at the NUL.
        let plain = tool(&["--unescape"], input);
        match (escape::unescape(input), &plain) {
            (Ok(ours), Ok(theirs)) => assert_eq!(&ours, theirs, "unescape({input:?})"),
            (Err(_), Err(_)) => {}
            (ours, theirs) => panic!("unescape({input:?}): ours {ours:?}, tool {theirs:?}"),
        }
        let path = tool(&["--unescape", "--path"], input);
        match (escape::unescape_path(input), &path) {
            (Ok(ours), Ok(theirs)) => assert_eq!(&ours, theirs, "unescape_path({input:?})"),
            (Err(_), Err(_)) => {}
            (ours, theirs) => {
                panic!("unescape_path({input:?}): ours {ours:?}, tool {theirs:?}")
            }
        }
    }
}

#[test]
fn round_trips_through_the_tool() {
    for input in INPUTS.iter().filter(|s| !s.is_empty()) {
        let escaped = tool(&[], input).expect("escapes");
        assert_eq!(
            escape::unescape(&escaped).as_deref(),
            Ok(*input),
            "{input:?}"
        );
    }
}

#[test]
fn device_unit_equals_systemd_escape_suffix_device() {
    let uuid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
    let want = tool(
        &["--path", "--suffix=device"],
        &format!("/dev/disk/by-uuid/{uuid}"),
    )
    .expect("escapes");
    assert_eq!(escape::device_unit_for_uuid(uuid).unwrap(), want);
    let want = tool(&["--template=extbackup@.service"], uuid).expect("escapes");
    assert_eq!(escape::instance_unit("extbackup", "service", uuid), want);
}
