//! Telling people, through real HTTP and SMTP servers that answer as the hosted services
//! document (`tests/sinks/`): a quarantine reaches a webhook (signed), Slack, Telegram and an
//! SMTP server once each; a notification accepted survives vigil's SIGKILL and is delivered
//! after the restart; `vigil notify test` says what the channel answered.

mod common;

use std::path::Path;
use std::time::Duration;

use common::sink::Sink;
use common::{Fleet, metric, required_env};
use serde_json::Value;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// An agent whose exchange says its key is invalid: quarantined at its first exit.
const BAD_KEY: &str = r#"
[agents.bot]
command = ["sh", "-c", "echo 'binance: Invalid API-key, IP, or permissions for action' >&2; exit 1"]
"#;

fn hmac_sha256_hex(secret: &str, body: &[u8]) -> String {
    // The receiving side's check, written out as a receiver would (RFC 2104).
    use sha2::{Digest, Sha256};
    let mut key = [0u8; 64];
    key[..secret.len()].copy_from_slice(secret.as_bytes());
    let pad = |b: u8| key.iter().map(|k| k ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_quarantine_is_told_once_to_a_webhook_slack_and_telegram() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Sink::http(dir.path(), &[]);
    let slack = Sink::http(dir.path(), &[]);
    let telegram = Sink::http(dir.path(), &["--telegram-token", "123:ABCsecret"]);
    std::fs::write(dir.path().join("hook-secret"), "s3cret-for-hmac\n").unwrap();
    std::fs::write(dir.path().join("tg-token"), "123:ABCsecret\n").unwrap();
    std::fs::write(
        dir.path().join("slack-url"),
        slack.url("/services/T000/B000/XXXXSECRET"),
    )
    .unwrap();
    let config = format!(
        r#"{BAD_KEY}
[notify.hook]
kind = "webhook"
url = "{}"
secret_file = "{}"

[notify.slack]
kind = "slack"
url_file = "{}"

[notify.tg]
kind = "telegram"
api_url = "{}"
token_file = "{}"
chat_id = "-100200300"
"#,
        hook.url("/vigil"),
        dir.path().join("hook-secret").display(),
        dir.path().join("slack-url").display(),
        telegram.url(""),
        dir.path().join("tg-token").display(),
    );
    let mut fleet = Fleet::new(&config);
    fleet.start();
    fleet.wait_for("three notified records", SECS(15), |f| {
        f.records(Some("notified")).len() >= 3
    });

    let got = hook.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    let n = &body["notifications"][0];
    assert_eq!(n["event"], "escalated");
    assert_eq!(n["agent"], "bot");
    assert!(
        n["text"]
            .as_str()
            .unwrap()
            .contains("a restart cannot help"),
        "{n}"
    );
    assert_eq!(n["metadata"]["diagnosis"]["rule"], "invalid_api_key");
    assert!(
        body["title"]
            .as_str()
            .unwrap()
            .contains("bot: needs a human")
    );
    let signature = got[0]["headers"]["x-vigil-signature"].as_str().unwrap();
    assert_eq!(
        signature,
        format!(
            "sha256={}",
            hmac_sha256_hex(
                "s3cret-for-hmac",
                got[0]["body"].as_str().unwrap().as_bytes()
            )
        )
    );

    let got = slack.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["path"], "/services/T000/B000/XXXXSECRET");
    let text: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert!(
        text["text"]
            .as_str()
            .unwrap()
            .contains("bot: needs a human")
    );

    let got = telegram.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["path"], "/bot123:ABCsecret/sendMessage");
    let sent: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["chat_id"], "-100200300");

    // The journal says who was told, and never a secret URL or token.
    let told = fleet.records(Some("notified"));
    let mut channels: Vec<&str> = told
        .iter()
        .map(|r| r["metadata"]["channel"].as_str().unwrap())
        .collect();
    channels.sort();
    assert_eq!(channels, ["hook", "slack", "tg"]);
    let journal = std::fs::read_to_string(fleet.state().join("audit.jsonl")).unwrap();
    assert!(!journal.contains("XXXXSECRET") && !journal.contains("ABCsecret"));
    let metrics = fleet.http("GET", "/metrics", &[], "").1;
    assert_eq!(
        metric(
            &metrics,
            "vigil_notifications_total{channel=\"slack\",outcome=\"delivered\"}"
        ),
        Some(1.0)
    );
    // The outbox is empty once every channel took its message.
    let outbox: Vec<_> = std::fs::read_dir(fleet.state().join("outbox"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .collect();
    assert!(outbox.is_empty(), "{outbox:?}");

    // `vigil notify test` goes to the channel and prints its answer.
    let out = fleet.vigil(&["notify", "test", "tg"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tg (telegram) took the test message: 200 OK"),
        "{stdout}"
    );
    assert!(stdout.contains("\"ok\": true"), "{stdout}");
    assert_eq!(telegram.received().len(), 2);
    fleet.stop();
}

#[test]
fn a_notification_accepted_is_delivered_after_vigil_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    // The webhook answers 503 at first: the notification waits in the outbox.
    let hook = Sink::http(dir.path(), &["--fail", "1000"]);
    let config = format!(
        "{BAD_KEY}\n[notify.hook]\nkind = \"webhook\"\nurl = \"{}\"\n",
        hook.url("/hook")
    );
    let mut fleet = Fleet::new(&config);
    fleet.start();
    fleet.wait_for("a refused delivery", SECS(15), |_| {
        !hook.received().is_empty()
    });
    let outbox = fleet.state().join("outbox");
    let waiting = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(waiting(&outbox), 1);
    fleet.signal(libc::SIGKILL);
    fleet.wait_exit(SECS(5));
    let port = hook.port;
    drop(hook);

    // The service is back; so is vigil.
    // The service is back, where it was; so is vigil.
    let hook = Sink::start_on(port, "python3", "http_sink.py", dir.path(), &[]);
    fleet.start();
    fleet.wait_for("the waiting notification delivered", SECS(15), |f| {
        !f.records(Some("notified")).is_empty()
    });
    // (The sink's log, at the same port, holds the refused try from before.)
    let got: Vec<Value> = hook
        .received()
        .into_iter()
        .filter(|r| r["answered"] == 200)
        .collect();
    // Exactly once: the quarantine was kept across the restart, and is not told again.
    assert_eq!(got.len(), 1, "{got:?}");
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["notifications"][0]["event"], "escalated");
    assert_eq!(waiting(&outbox), 0);
    fleet.stop();
}

#[test]
#[ignore = "needs aiosmtpd: set VIGIL_TEST_SMTP_PYTHON (see .ci/smtp-setup)"]
fn email_goes_through_a_real_smtp_server() {
    let python = required_env("VIGIL_TEST_SMTP_PYTHON", "a Python with aiosmtpd");
    let dir = tempfile::tempdir().unwrap();
    let smtp = Sink::start(&python, "smtp_sink.py", dir.path(), &[]);
    let config = format!(
        r#"{BAD_KEY}
[notify.mail]
kind = "email"
server = "127.0.0.1:{}"
tls = "none"
from = "vigil@example.com"
to = ["ops@example.com", "oncall@example.com"]
"#,
        smtp.port
    );
    let mut fleet = Fleet::new(&config);
    fleet.start();
    fleet.wait_for("the mail sent", SECS(15), |f| {
        !f.records(Some("notified")).is_empty()
    });
    let got = smtp.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["from"], "vigil@example.com");
    assert_eq!(
        got[0]["to"],
        serde_json::json!(["ops@example.com", "oncall@example.com"])
    );
    let data = got[0]["data"].as_str().unwrap();
    assert!(data.contains("Subject: "), "{data}");
    assert!(data.contains("bot: needs a human"), "{data}");
    let out = fleet.vigil(&["notify", "test", "mail"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("mail (email) took the test message: 250"),
        "{stdout}"
    );
    fleet.stop();
}

#[test]
fn a_channel_that_refuses_is_said_so_and_kept_for_a_human() {
    let dir = tempfile::tempdir().unwrap();
    let telegram = Sink::http(dir.path(), &["--telegram-token", "right"]);
    std::fs::write(dir.path().join("tg-token"), "wrong\n").unwrap();
    let config = format!(
        "{BAD_KEY}\n[notify.tg]\nkind = \"telegram\"\napi_url = \"{}\"\ntoken_file = \"{}\"\nchat_id = \"42\"\n",
        telegram.url(""),
        dir.path().join("tg-token").display()
    );
    let mut fleet = Fleet::new(&config);
    let out = fleet.vigil(&["notify", "test", "tg"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused: HTTP 401 Unauthorized"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the token must not be shown: {stderr}"
    );

    fleet.start();
    fleet.wait_for("notify_failed", SECS(15), |f| {
        !f.records(Some("notify_failed")).is_empty()
    });
    let failed = &fleet.records(Some("notify_failed"))[0];
    assert_eq!(failed["metadata"]["channel"], "tg");
    assert_eq!(failed["metadata"]["event"], "escalated");
    let kept = std::fs::read_dir(fleet.state().join("outbox/failed"))
        .unwrap()
        .count();
    assert_eq!(kept, 1);
    fleet.stop();
}

#[test]
#[ignore = "needs aiosmtpd: set VIGIL_TEST_SMTP_PYTHON (see .ci/smtp-setup)"]
fn email_goes_over_starttls_to_a_server_with_its_own_ca() {
    let python = required_env("VIGIL_TEST_SMTP_PYTHON", "a Python with aiosmtpd");
    let dir = tempfile::tempdir().unwrap();
    // A CA nobody trusts but `ca_file`, and the server's certificate for 127.0.0.1 from it.
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca, ca_key) = (p("ca.pem"), p("ca.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    let (cert, key, csr, ext) = (p("smtp.pem"), p("smtp.key"), p("smtp.csr"), p("ext.cnf"));
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    let smtp = Sink::start(&python, "smtp_sink.py", dir.path(), &["--tls", &cert, &key]);
    let config = |ca: &str| {
        format!(
            "{BAD_KEY}\n[notify.mail]\nkind = \"email\"\nserver = \"127.0.0.1:{}\"\ntls = \"starttls\"\n{ca}from = \"vigil@example.com\"\nto = [\"ops@example.com\"]\n",
            smtp.port
        )
    };
    // Without the CA the server is not trusted: nothing is sent in the clear instead.
    let fleet = Fleet::new(&config(""));
    let out = fleet.vigil(&["notify", "test", "mail"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(smtp.received().is_empty());
    let fleet = Fleet::new(&config(&format!("ca_file = \"{ca}\"\n")));
    let out = fleet.vigil(&["notify", "test", "mail"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = smtp.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["tls"], true, "sent after STARTTLS");
}
