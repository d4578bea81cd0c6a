//! Real agents printing real error lines: vigil reads the log tail and decides.

mod common;

use std::time::Duration;

use common::{Fleet, unique};

#[test]
fn real_failures_are_diagnosed_from_their_logs() {
    let m = unique("diag");
    let mut f = Fleet::new(&format!(
        r#"[defaults.policy]
cooldown = "0s"
max_restarts = 10
throttle_delay = "1h"

[agents.badkey]
command = ["sh", "-c", "echo 'starting {m}'; echo 'ccxt.base.errors.AuthenticationError: binance {{\"code\":-2015,\"msg\":\"Invalid API-key, IP, or permissions for action.\"}}' >&2; exit 1"]

[agents.limited]
command = ["sh", "-c", "echo 'ccxt.base.errors.RateLimitExceeded: binance 429 Too Many Requests api_key=SECRETSECRET'; exit 1"]

[agents.locked]
command = ["sh", "-c", "sleep 0.3; echo 'sqlite3.OperationalError: database is locked'; exit 1"]

[[diagnosis.rules]]
name = "maintenance"
pattern = "exchange is in maintenance"
category = "throttled"
"#
    ));
    f.start();
    f.wait_for(
        "badkey quarantined, limited backing off, locked restarted",
        Duration::from_secs(10),
        |f| {
            !f.records_of("badkey", "escalated").is_empty()
                && !f.records_of("limited", "backoff").is_empty()
                && f.records_of("locked", "restart").len() >= 2
        },
    );
    // The invalid key: one run, no restart, a human is told why.
    assert!(f.records_of("badkey", "restart").is_empty());
    let esc = &f.records_of("badkey", "escalated")[0];
    assert_eq!(
        esc["metadata"]["diagnosis"]["rule"], "invalid_api_key",
        "{esc}"
    );
    let (_, st) = f.api("GET", "/status/badkey", "");
    assert_eq!(st["state"], "quarantined");
    assert_eq!(st["diagnosis"]["category"], "permanent");

    // The 429: waits (an hour here) instead of restarting; the secret never reaches the journal.
    assert!(f.records_of("limited", "restart").is_empty());
    let backoff = &f.records_of("limited", "backoff")[0];
    assert_eq!(backoff["metadata"]["diagnosis"]["category"], "throttled");
    let journal = common::read(&f.state().join("audit.jsonl"));
    assert!(
        !journal.contains("SECRETSECRET"),
        "a secret reached the journal"
    );
    assert!(journal.contains("api_key=[REDACTED]"));

    // The database lock: restarted at once, each time.
    let restart = &f.records_of("locked", "restart")[0];
    assert_eq!(restart["metadata"]["diagnosis"]["rule"], "database_locked");
    assert_eq!(restart["metadata"]["cause"], "exit");
}

#[test]
fn a_bad_user_rule_is_a_config_error() {
    let f = Fleet::new(
        r#"[agents.bot]
command = ["sleep", "1"]

[[diagnosis.rules]]
pattern = "unclosed ("
category = "sometimes"
"#,
    );
    let out = f.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not a valid regular expression"),
        "{stderr}"
    );
    assert!(stderr.contains("sometimes"), "{stderr}");
}

#[test]
fn a_broken_advisor_or_evidence_setting_is_a_config_error() {
    let f = Fleet::new(
        r#"[agents.bot]
command = ["sleep", "1"]
evidence = ["py-spy", "dump", "--pid", "{pdi}"]
evidence_timeout = "soon"

[diagnosis.llm]
provider = "ollamma"
url = "localhost:11434"
min_confidence = 2
"#,
    );
    let out = f.vigil(&["check", "-c", "vigil.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for expected in [
        "unknown placeholder `{pdi}`",
        "evidence_timeout",
        "ollamma",
        "must be between 0 and 1",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

/// Secrets in an agent's output, in real formats and in its own env, never reach the journal,
/// `vigil explain`, a check's detail or vigil's own log; and with a token set, evidence is
/// shown only to those who hold it.
#[test]
fn secrets_in_evidence_reach_neither_journal_nor_explain_nor_vigils_log() {
    let token = "t0ken-for-the-secrets-test";
    let secrets = [
        "q7Hr2zzX9env",
        "9a8b7c6d5e",
        "abc123def",
        "wJalrXUtnFEMI",
        "Tr0ub4dor",
        "letmein99",
        "Hunter2!",
        "Zx9Yw8Vv7",
        "S3cretPw",
        "q1w2e3r4",
        "ExecPw77",
    ];
    let script = [
        "echo 'starting with q7Hr2zzX9env'",
        "echo 'Cookie: session=abc123def; theme=dark'",
        "echo 'AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG'",
        "echo 'DB_PASS=Tr0ub4dor pwd=letmein99'",
        "echo 'bot.py --password Hunter2! client_secret Zx9Yw8Vv7'",
        "echo 'mysql -uroot -pS3cretPw'",
        "echo 'GET /cb?token%3Dq1w2e3r4'",
        "echo 'ConnectionError: connect failed, Authorization: Token 9a8b7c6d5e' >&2",
        "exit 1",
    ]
    .join("; ");
    let mut f = Fleet::new(&format!(
        r#"[api]
listen = "127.0.0.1:0"
token = "{token}"

[defaults.policy]
cooldown = "1h"

[agents.leaky]
command = ["sh", "-c", "{script}"]
env = {{ EXCHANGE_SECRET = "q7Hr2zzX9env" }}

[agents.checked]
command = ["sleep", "860001"]
[[agents.checked.checks]]
kind = "exec"
command = ["sh", "-c", "echo 'probe failed password=ExecPw77'; exit 1"]
interval = "200ms"
"#
    ));
    f.start();
    f.wait_for(
        "leaky diagnosed, checked failing",
        Duration::from_secs(10),
        |f| {
            !f.records_of("leaky", "backoff").is_empty()
                && !f.records_of("checked", "check").is_empty()
        },
    );
    let (code, _) = f.http("GET", "/agents/leaky/explain", &[], "");
    assert_eq!(code, 401, "evidence needs the token");
    let bearer = format!("Bearer {token}");
    let (code, explain) = f.http(
        "GET",
        "/agents/leaky/explain",
        &[("authorization", &bearer)],
        "",
    );
    assert_eq!(code, 200, "{explain}");
    assert!(explain.contains("[REDACTED]"), "{explain}");
    let (_, status) = f.http("GET", "/status", &[], "");
    let journal = std::fs::read_to_string(f.state().join("audit.jsonl")).unwrap();
    assert_eq!(f.stop(), 0);
    let log = f.output();
    for secret in secrets {
        for (what, text) in [
            ("journal", &journal),
            ("explain", &explain),
            ("status", &status),
            ("vigil's log", &log),
        ] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
}
