//! Integration tests of `MailNotifier` against real transports: an SMTP server
//! (Debian's python3-aiosmtpd) started on a free port of 127.0.0.1, a fake `sendmail`
//! script, and the `.eml` file transport (parsed back with Python's `email` module).

mod server;

use notifier::{
    ErrorKind, Event, MailConfig, MailNotifier, MailTransport, Notifier, Outcome, Security,
};
use server::{free_port, parse_eml, SmtpServer};
use std::fs;
use std::path::Path;
use std::time::Duration;

fn event(drive: &str, outcome: Outcome) -> Event {
    Event {
        drive: drive.into(),
        host: "phobos".into(),
        outcome,
        failed_step: (outcome == Outcome::Failure).then(|| "mount".to_string()),
        error_chain: vec![
            "mounting /dev/mapper/extbackup on /extbackup".into(),
            "wrong fs type, bad superblock".into(),
        ],
        log_tail: "step unlock ok\nstep mount failed".into(),
        duration: Duration::from_secs(42),
        files: 7,
        bytes: 4096,
        details: vec!["last successful backup: 3 days ago".into()],
    }
}

fn smtp_config(port: u16, spool: &Path, auth: Option<(&str, &Path)>) -> MailConfig {
    MailConfig {
        from: "extbackup <root@phobos.example>".into(),
        to: vec![
            "owner@example.org".into(),
            "Second Person <second@example.org>".into(),
        ],
        transport: MailTransport::Smtp {
            host: "127.0.0.1".into(),
            port,
            security: Security::None,
            username: auth.map(|(u, _)| u.to_string()),
            password_file: auth.map(|(_, p)| p.to_path_buf()),
        },
        spool_dir: spool.to_path_buf(),
    }
}

fn spool_count(dir: &Path) -> usize {
    match fs::read_dir(dir) {
        Ok(d) => d
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .count(),
        Err(_) => 0,
    }
}

#[test]
fn smtp_delivers_with_headers_and_body() {
    let tmp = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(free_port(), None);
    let n = MailNotifier::new(smtp_config(server.port, &tmp.path().join("spool"), None)).unwrap();
    let ev = event("offsite-a", Outcome::Failure);
    n.notify(&ev).expect("delivered");

    let msgs = server.wait_for(1);
    let m = &msgs[0];
    assert_eq!(m.mail_from, "root@phobos.example");
    assert_eq!(m.rcpt_to, vec!["owner@example.org", "second@example.org"]);
    let eml = parse_eml(&m.raw);
    assert_eq!(
        eml.header("Subject"),
        "extbackup: offsite-a FAILED at mount"
    );
    assert_eq!(eml.header("Subject"), ev.subject());
    assert!(eml.header("From").contains("root@phobos.example"));
    let to = eml.header("To");
    assert!(
        to.contains("owner@example.org") && to.contains("second@example.org"),
        "{to}"
    );
    assert!(!eml.header("Date").is_empty(), "Date header missing");
    let mid = eml.header("Message-ID");
    assert!(
        mid.starts_with('<') && mid.ends_with('>') && mid.contains('@'),
        "{mid}"
    );
    assert!(
        eml.body.contains("It failed at step: mount"),
        "{}",
        eml.body
    );
    assert!(eml
        .body
        .contains("caused by: wrong fs type, bad superblock"));
    assert!(eml.body.contains("step mount failed"));
    assert_eq!(spool_count(&tmp.path().join("spool")), 0);
}

#[test]
fn smtp_auth_with_password_file_and_password_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "Tr0ub4dor&3-unique-secret";
    let pw = tmp.path().join("smtp-password");
    fs::write(&pw, format!("{secret}\n")).unwrap();
    let server = SmtpServer::start(free_port(), Some(("nas", secret)));
    let spool = tmp.path().join("spool");
    let n = MailNotifier::new(smtp_config(server.port, &spool, Some(("nas", &pw)))).unwrap();
    n.notify(&event("offsite-b", Outcome::Success))
        .expect("delivered with AUTH");
    let msgs = server.wait_for(1);
    assert_eq!(msgs[0].auth, "nas", "server saw the login");
    assert!(
        !format!("{n:?}").contains(secret),
        "Debug shows the password"
    );

    // A wrong password: the server refuses AUTH, the mail is spooled, and neither the
    // error (Display, Debug, `{:#}`-style chain) nor the spool file shows any password.
    fs::write(&pw, "wrong-password-xyz\n").unwrap();
    let e = n.notify(&event("offsite-b", Outcome::Failure)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Spooled, "{e:?}");
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("wrong-password-xyz") && !shown.contains(secret),
        "{shown}"
    );
    assert_eq!(spool_count(&spool), 1);
    for f in fs::read_dir(&spool).unwrap() {
        let text = fs::read_to_string(f.unwrap().path()).unwrap();
        assert!(!text.contains("wrong-password-xyz") && !text.contains(secret));
    }
    assert_eq!(server.messages().len(), 1, "nothing delivered without AUTH");
}

#[test]
fn refused_connection_spools_and_flush_delivers_oldest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let port = free_port(); // nothing listens here yet
    let n = MailNotifier::new(smtp_config(port, &spool, None)).unwrap();

    let first = n
        .notify(&event("first-drive", Outcome::Failure))
        .unwrap_err();
    assert_eq!(first.kind(), ErrorKind::Spooled, "{first:?}");
    assert!(first.to_string().contains("next run"), "{first}");
    let second = n
        .notify(&event("second-drive", Outcome::Success))
        .unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Spooled);
    assert_eq!(spool_count(&spool), 2);
    assert_eq!(n.spooled().unwrap().len(), 2);

    // Still down: flushing keeps everything.
    let e = n.flush_spool().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Spooled);
    assert_eq!(spool_count(&spool), 2);

    let server = SmtpServer::start(port, None);
    assert_eq!(n.flush_spool().expect("flush"), 2);
    let msgs = server.wait_for(2);
    let subjects: Vec<String> = msgs
        .iter()
        .map(|m| parse_eml(&m.raw).header("Subject"))
        .collect();
    assert_eq!(
        subjects,
        vec![
            "extbackup: first-drive FAILED at mount".to_string(),
            "extbackup: second-drive done, safe to remove".to_string()
        ]
    );
    assert_eq!(spool_count(&spool), 0, "delivered mails are removed");
    assert_eq!(n.flush_spool().unwrap(), 0, "nothing sent twice");
    assert_eq!(server.messages().len(), 2);
}

/// A server that accepts connections and sends its greeting one byte every 20 s.
fn trickling_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                for b in b"220 slow.example ESMTP\r\n" {
                    if std::io::Write::write_all(&mut c, &[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(20));
                }
            });
        }
    });
    port
}

#[test]
fn a_slow_server_costs_at_most_the_deadline_and_the_mail_waits_in_the_spool() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let port = trickling_server();
    let n = MailNotifier::new(smtp_config(port, &spool, None))
        .unwrap()
        .with_deadline(Duration::from_secs(2));
    // Without the deadline each read waits 30 s for the next byte: this never ends.
    let e = n.notify(&event("slow", Outcome::Failure)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Spooled, "{e:?}");
    assert!(backend_error::chain(&e).contains("within 2 s"), "{e}");
    assert_eq!(spool_count(&spool), 1, "the mail waits in the spool");
    // Its delivery is still going on in the background: not sent a second time.
    assert_eq!(n.flush_spool().unwrap(), 0);
    assert_eq!(spool_count(&spool), 1);
    // The next run, with a server that answers, delivers it exactly once.
    let server = SmtpServer::start(free_port(), None);
    let next = MailNotifier::new(smtp_config(server.port, &spool, None)).unwrap();
    assert_eq!(next.flush_spool().unwrap(), 1);
    assert_eq!(server.wait_for(1).len(), 1);
    assert_eq!(spool_count(&spool), 0);
}

#[test]
fn a_spooled_mail_refused_for_good_is_set_aside_and_the_rest_still_go() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let server = SmtpServer::start(free_port(), None);
    let down = free_port();
    // Three mails spooled while the server was down; the middle one it will refuse.
    let offline = MailNotifier::new(smtp_config(down, &spool, None)).unwrap();
    let mut refused = event("second", Outcome::Failure);
    refused.details.push("REFUSE-ME-FOR-GOOD".into());
    for ev in [
        event("first", Outcome::Failure),
        refused,
        event("third", Outcome::Failure),
    ] {
        assert_eq!(offline.notify(&ev).unwrap_err().kind(), ErrorKind::Spooled);
    }
    assert_eq!(spool_count(&spool), 3);
    let n = MailNotifier::new(smtp_config(server.port, &spool, None)).unwrap();
    assert_eq!(
        n.flush_spool()
            .expect("the refusal does not block the rest"),
        2
    );
    let got: Vec<String> = server
        .wait_for(2)
        .iter()
        .map(|m| parse_eml(&m.raw).header("Subject"))
        .collect();
    assert_eq!(
        got,
        vec![
            "extbackup: first FAILED at mount".to_string(),
            "extbackup: third FAILED at mount".to_string()
        ]
    );
    assert_eq!(spool_count(&spool), 0);
    assert_eq!(spool_count(&spool.join("rejected")), 1, "kept aside");
    // The next mail says so, once.
    n.notify(&event("fourth", Outcome::Success)).unwrap();
    let body = parse_eml(&server.wait_for(3)[2].raw).body;
    assert!(body.contains("refused for good"), "{body}");
    assert!(body.contains("554"), "{body}");
    n.notify(&event("fifth", Outcome::Success)).unwrap();
    let body = parse_eml(&server.wait_for(4)[3].raw).body;
    assert!(!body.contains("refused for good"), "{body}");
}

#[test]
fn a_spooled_mail_answered_500_line_too_long_is_set_aside_and_the_rest_still_go() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let server = SmtpServer::start(free_port(), None);
    let offline = MailNotifier::new(smtp_config(free_port(), &spool, None)).unwrap();
    assert_eq!(
        offline
            .notify(&event("first", Outcome::Failure))
            .unwrap_err()
            .kind(),
        ErrorKind::Spooled
    );
    // A spooled message with a line longer than SMTP allows (998 octets; aiosmtpd's limit
    // is 1001): the real server answers its DATA with "500 Line too long".
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let long = spool.join(format!("{nanos:024}-1-000000.eml"));
    fs::write(
        &long,
        format!(
            "From: root@phobos.example\r\nTo: owner@example.org\r\nSubject: long\r\n\r\n{}\r\n",
            "x".repeat(5000)
        ),
    )
    .unwrap();
    assert_eq!(
        offline
            .notify(&event("third", Outcome::Failure))
            .unwrap_err()
            .kind(),
        ErrorKind::Spooled
    );
    assert_eq!(spool_count(&spool), 3);

    let n = MailNotifier::new(smtp_config(server.port, &spool, None)).unwrap();
    assert_eq!(n.flush_spool().expect("the 500 does not block the rest"), 2);
    let got: Vec<String> = server
        .wait_for(2)
        .iter()
        .map(|m| parse_eml(&m.raw).header("Subject"))
        .collect();
    assert_eq!(
        got,
        vec![
            "extbackup: first FAILED at mount".to_string(),
            "extbackup: third FAILED at mount".to_string()
        ]
    );
    assert_eq!(
        spool_count(&spool),
        0,
        "nothing left to block the next runs"
    );
    let aside = spool.join("rejected").join(long.file_name().unwrap());
    assert!(aside.exists(), "kept aside as {}", aside.display());
    let reason = fs::read_to_string(aside.with_extension("reason")).unwrap();
    assert!(
        reason.contains("500") && reason.contains("Line too long"),
        "{reason}"
    );
    // A second flush has nothing to send.
    assert_eq!(n.flush_spool().unwrap(), 0);
}

#[test]
fn unwritable_spool_reports_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_dir = tmp.path().join("file");
    fs::write(&not_a_dir, "x").unwrap();
    let n = MailNotifier::new(smtp_config(free_port(), &not_a_dir.join("spool"), None)).unwrap();
    let e = n.notify(&event("x", Outcome::Failure)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Lost, "{e:?}");
    assert!(e.to_string().contains("lost"), "{e}");
}

#[test]
fn file_transport_writes_a_parsable_eml() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let n = MailNotifier::new(MailConfig {
        from: "root@phobos.example".into(),
        to: vec!["owner@example.org".into()],
        transport: MailTransport::File { dir: out.clone() },
        spool_dir: tmp.path().join("spool"),
    })
    .unwrap();
    let ev = event("offsite-a", Outcome::Reminder);
    n.notify(&ev).unwrap();
    let files: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().unwrap(), "eml");
    let eml = parse_eml(&fs::read(&files[0]).unwrap());
    assert_eq!(eml.header("Subject"), ev.subject());
    assert_eq!(eml.header("To"), "owner@example.org");
    assert!(!eml.header("Message-ID").is_empty());
    assert!(!eml.header("Date").is_empty());
    assert!(eml.body.contains("has no recent backup"), "{}", eml.body);
}

#[test]
fn sendmail_transport_pipes_the_message_to_the_program() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("sendmail");
    let args = tmp.path().join("args");
    let stdin = tmp.path().join("stdin");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\ncat > '{}'\n",
            args.display(),
            stdin.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let n = MailNotifier::new(MailConfig {
        from: "root@phobos.example".into(),
        to: vec!["owner@example.org".into()],
        transport: MailTransport::Sendmail { program: script },
        spool_dir: tmp.path().join("spool"),
    })
    .unwrap();
    n.notify(&event("offsite-a", Outcome::Failure)).unwrap();
    let a = fs::read_to_string(&args).unwrap();
    assert!(a.lines().any(|l| l == "owner@example.org"), "{a}");
    assert!(a.lines().any(|l| l == "root@phobos.example"), "{a}");
    let eml = parse_eml(&fs::read(&stdin).unwrap());
    assert_eq!(
        eml.header("Subject"),
        "extbackup: offsite-a FAILED at mount"
    );
}

#[test]
fn failing_sendmail_spools() {
    let tmp = tempfile::tempdir().unwrap();
    let n = MailNotifier::new(MailConfig {
        from: "root@phobos.example".into(),
        to: vec!["owner@example.org".into()],
        transport: MailTransport::Sendmail {
            program: "/bin/false".into(),
        },
        spool_dir: tmp.path().join("spool"),
    })
    .unwrap();
    let e = n.notify(&event("a", Outcome::Failure)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Spooled);
    assert_eq!(spool_count(&tmp.path().join("spool")), 1);
}

#[test]
fn starttls_required_never_falls_back_to_plain_text() {
    let tmp = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(free_port(), None); // offers no STARTTLS
    let mut config = smtp_config(server.port, &tmp.path().join("spool"), None);
    if let MailTransport::Smtp { security, .. } = &mut config.transport {
        *security = Security::StartTls;
    }
    let n = MailNotifier::new(config).unwrap();
    let e = n.notify(&event("offsite-a", Outcome::Failure)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Spooled, "{e:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.messages().is_empty(), "sent in clear text");
    assert_eq!(spool_count(&tmp.path().join("spool")), 1);
}

/// What every `Notifier` promises, run on the recording fake and on the mail backend (over
/// a real SMTP server) alike: each event is delivered once, under its own subject, in
/// order; an empty spool sends nothing.
fn keeps_the_notifier_promises(n: &dyn Notifier, delivered: &dyn Fn() -> Vec<String>) {
    let name = n.describe();
    assert_eq!(n.flush_spool().unwrap(), 0, "{name}: nothing spooled");
    assert!(delivered().is_empty(), "{name}");
    let a = event("offsite-a", Outcome::Failure);
    let b = event("offsite-b", Outcome::Success);
    n.notify(&a).unwrap();
    n.notify(&b).unwrap();
    assert_eq!(delivered(), vec![a.subject(), b.subject()], "{name}");
    assert_eq!(n.flush_spool().unwrap(), 0, "{name}: nothing sent twice");
    assert_eq!(delivered().len(), 2, "{name}");
}

#[test]
fn the_fake_keeps_the_notifier_promises() {
    let n = notifier::fake::RecordingNotifier::new();
    let seen = n.clone();
    keeps_the_notifier_promises(&n, &|| seen.events().iter().map(|e| e.subject()).collect());
}

#[test]
fn mail_over_smtp_keeps_the_notifier_promises() {
    let tmp = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(free_port(), None);
    let n = MailNotifier::new(smtp_config(server.port, &tmp.path().join("spool"), None)).unwrap();
    keeps_the_notifier_promises(&n, &|| {
        server
            .messages()
            .iter()
            .map(|m| parse_eml(&m.raw).header("Subject"))
            .collect()
    });
}
