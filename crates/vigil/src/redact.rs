//! Secrets never leave vigil in evidence. Every line kept from an agent — log tails, evidence
//! command output, exec check output — passes through [`line_with`] before it reaches the
//! core, the journal, `vigil explain`, the advisor or vigil's own log.
//!
//! What is hidden (the corpus in the tests below is the contract):
//! - the values of the agent's own environment variables whose names look secret
//!   ([`Secrets`]), wherever they appear;
//! - URL passwords (`scheme://user:PASSWORD@host`);
//! - `Authorization:` values (any scheme: Bearer, Basic, Token, …) and whole `Cookie:` /
//!   `Set-Cookie:` values;
//! - values of keys whose names look secret, in any spelling: `SECRET_KEY=…`,
//!   `AWS_SECRET_ACCESS_KEY=…`, `DB_PASS=…`, `pwd=…`, `"apiKey": "…"`, `token%3D…`,
//!   `X-MBX-APIKEY: …`, `--password=…`, `--password …`, `client_secret …`, and `-p…` after a
//!   `-u…` (mysql);
//! - JWTs, AWS access key ids, private key blocks, and long hex or base64 runs.
//!
//! Words that diagnosis rules look for stay readable: "Invalid API-key", "Signature for this
//! request is not valid", "KeyError: 'API_KEY'", "token expired".

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use regex::{Captures, Regex};

/// Longest evidence line kept (characters); the rest is cut.
const MAX_LINE: usize = 500;
/// Env values shorter than this are not hidden literally (they would hide common words); the
/// patterns still apply.
const MIN_SECRET_LEN: usize = 5;

/// `scheme://user:password@host`: the password.
const URL_PASSWORD: &str = r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):[^\s@/]+@";

pub const REDACTED: &str = "[REDACTED]";

/// `password=…` (or `sslpassword=…`) in a URL's query, as libpq and sqlx take it.
const QUERY_PASSWORD: &str = r"(?i)([?&](?:ssl)?password=)[^&\s]*";

/// A URL (a database's, Redis's) fit to show in details, the journal and `vigil check`: its
/// password replaced by `***`, whether before the host or in the query.
pub fn url(u: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    static QUERY: OnceLock<Regex> = OnceLock::new();
    let u = RE
        .get_or_init(|| Regex::new(URL_PASSWORD).expect("URL pattern"))
        .replace_all(u, "$1:***@");
    QUERY
        .get_or_init(|| Regex::new(QUERY_PASSWORD).expect("query pattern"))
        .replace_all(&u, "${1}***")
        .into_owned()
}

/// Values hidden wherever they appear: an agent's env values whose names look secret, and
/// every value that came from its `env_file`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets(Arc<[String]>);

impl Secrets {
    pub fn from_env<K: AsRef<str>, V: AsRef<str>>(
        env: impl IntoIterator<Item = (K, V)>,
        from_file: &[String],
    ) -> Self {
        let mut values: Vec<String> = env
            .into_iter()
            .filter(|(k, v)| {
                let k = k.as_ref();
                (secret_name(k) || from_file.iter().any(|f| f == k))
                    && v.as_ref().len() >= MIN_SECRET_LEN
            })
            .map(|(_, v)| v.as_ref().to_string())
            .collect();
        // Longest first, so that a secret containing another is hidden whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Secrets(values.into())
    }
}

/// Whether a name (an env var, a JSON key, a header, a flag) looks like it holds a secret.
pub fn secret_name(name: &str) -> bool {
    let lower = name.trim_start_matches('-').to_ascii_lowercase();
    // Error and exception names (`KeyError`, `AuthenticationError`) are what diagnosis reads.
    if ["error", "exception", "warning"]
        .iter()
        .any(|s| lower.ends_with(s))
    {
        return false;
    }
    let squashed: String = lower
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    const WITHIN: &[&str] = &[
        "secret",
        "token",
        "passw",
        "passphrase",
        "apikey",
        "privatekey",
        "accesskey",
        "credential",
        "signature",
        "cookie",
        "session",
        "pwd",
        "auth",
        "jwt",
    ];
    if WITHIN.iter().any(|w| squashed.contains(w)) {
        return true;
    }
    // Whole segments only: `DB_PASS`, `aws.key`, `sig`, but not `passenger` or `keyboard`.
    const SEGMENTS: &[&str] = &["pass", "pw", "key", "sig", "dsn"];
    segments(name).any(|s| SEGMENTS.contains(&s.as_str()))
}

/// `DB_PASS` → db, pass; `apiKey` → api, key; `x-mbx-apikey` → x, mbx, apikey.
fn segments(name: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            out.push(std::mem::take(&mut cur));
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.is_empty())
}

/// A free-standing word (after `client_secret `, say) that looks like a secret rather than
/// English: it has a digit, a capital or a symbol, or is long.
fn looks_secret(value: &str) -> bool {
    value.len() >= 12
        || value
            .chars()
            .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase() || !c.is_alphanumeric())
}

struct Patterns {
    url_password: Regex,
    authorization: Regex,
    cookie: Regex,
    key_value: Regex,
    flag_value: Regex,
    word_value: Regex,
    mysql_user: Regex,
    mysql_password: Regex,
    private_key: Regex,
    fixed: Vec<Regex>,
    /// Base64-ish runs (≥ 40): keys and signatures — and file paths, which are told apart.
    long_run: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("redaction pattern");
        Patterns {
            url_password: re(URL_PASSWORD),
            authorization: re(
                r#"(?i)\b((?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:(?:bearer|basic|token|digest|apikey|hmac[\w-]*|aws4-hmac-sha256|negotiate)\s+)?)[^\s"',;]+"#,
            ),
            cookie: re(r#"(?i)\b((?:set-)?cookie["']?\s*[:=]\s*).+"#),
            key_value: re(
                r#"(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>["']?\s*(?:[:=]|%3[dDaA])\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'&,;]+))"#,
            ),
            flag_value: re(r#"(?P<flag>(?:^|\s)--?[A-Za-z][A-Za-z0-9_-]*)\s+(?P<value>[^\s-][^\s]*)"#),
            word_value: re(
                r#"\b(?P<key>[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]*)\s+(?P<value>[^\s"',;]+)"#,
            ),
            mysql_user: re(r"(?:^|\s)(?:-u\S|--user[= ])"),
            mysql_password: re(r"(\s-p)\S+"),
            private_key: re(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*"),
            long_run: re(r"[A-Za-z0-9+/_-]{40,}={0,2}"),
            fixed: [
                // JWTs.
                r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
                // AWS access key ids.
                r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
                // Long hex (≥ 32) or base64-ish (≥ 40) runs: keys and signatures.
                r"\b[0-9a-fA-F]{32,}\b",
            ]
            .into_iter()
            .map(re)
            .collect(),
        }
    })
}

/// `key=value` pairs (and `key: value`, `"key": "value"`, `key%3Dvalue`) whose key looks
/// secret, their values hidden. The value of a key that is not secret is searched in turn:
/// `msg: password=x` hides `x`.
fn key_values(s: &str, re: &Regex) -> String {
    re.replace_all(s, |c: &Captures| {
        let key = &c["key"];
        let value = c.name("dq").or(c.name("sq")).or(c.name("bare"));
        let value = value.map_or("", |m| m.as_str());
        let quote = if c.name("dq").is_some() {
            "\""
        } else if c.name("sq").is_some() {
            "'"
        } else {
            ""
        };
        let scheme =
            ["bearer", "basic", "token", "digest"].contains(&value.to_ascii_lowercase().as_str());
        if secret_name(key) && !value.is_empty() && value != REDACTED && !scheme {
            format!("{key}{}{quote}{REDACTED}{quote}", &c["sep"])
        } else {
            format!("{key}{}{quote}{}{quote}", &c["sep"], key_values(value, re))
        }
    })
    .into_owned()
}

/// A run that starts at a `/` and reads like words between slashes (`/opt/bots/strategy_v2`),
/// not like a key that happens to hold slashes: few changes between lower case, upper case and
/// digits, and no segment as long as a key.
fn is_path(run: &str) -> bool {
    if !run.starts_with('/') {
        return false;
    }
    let mut changes = 0usize;
    let mut last = None;
    let mut alnum = 0usize;
    for c in run.chars().filter(char::is_ascii_alphanumeric) {
        alnum += 1;
        let class = if c.is_ascii_lowercase() {
            0
        } else if c.is_ascii_uppercase() {
            1
        } else {
            2
        };
        if last.is_some_and(|l| l != class) {
            changes += 1;
        }
        last = Some(class);
    }
    changes * 6 <= alnum && run.split('/').all(|seg| seg.len() < 32)
}

/// One line, safe to keep: secrets replaced, control characters dropped, length capped.
#[cfg(test)]
pub fn line(raw: &str) -> String {
    line_with(raw, &Secrets::default())
}

/// One line, safe to keep: `secrets` and everything the patterns find replaced, control
/// characters dropped, length capped.
pub fn line_with(raw: &str, secrets: &Secrets) -> String {
    // Cut generously first (the cost is per character), replace, then cut to size: a secret
    // is never half-cut into something that no longer matches.
    let mut s: String = raw
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .take(MAX_LINE * 4)
        .collect();
    for secret in secrets.0.iter() {
        if s.contains(secret.as_str()) {
            s = s.replace(secret.as_str(), REDACTED);
        }
    }
    let p = patterns();
    let apply = |s: String, re: &Regex, with: &dyn Fn(&Captures) -> String| -> String {
        match re.replace_all(&s, |c: &Captures| with(c)) {
            Cow::Borrowed(_) => s,
            Cow::Owned(o) => o,
        }
    };
    s = apply(s, &p.url_password, &|c| format!("{}:{REDACTED}@", &c[1]));
    s = apply(s, &p.private_key, &|_| REDACTED.to_string());
    s = apply(s, &p.authorization, &|c| format!("{}{REDACTED}", &c[1]));
    s = apply(s, &p.cookie, &|c| format!("{}{REDACTED}", &c[1]));
    s = key_values(&s, &p.key_value);
    s = apply(s, &p.flag_value, &|c| {
        if secret_name(&c["flag"]) && &c["value"] != REDACTED {
            format!("{} {REDACTED}", &c["flag"])
        } else {
            c[0].to_string()
        }
    });
    s = apply(s, &p.word_value, &|c| {
        if secret_name(&c["key"]) && looks_secret(&c["value"]) && &c["value"] != REDACTED {
            format!("{} {REDACTED}", &c["key"])
        } else {
            c[0].to_string()
        }
    });
    if p.mysql_user.is_match(&s) {
        s = apply(s, &p.mysql_password, &|c| format!("{}{REDACTED}", &c[1]));
    }
    for re in &p.fixed {
        s = apply(s, re, &|_| REDACTED.to_string());
    }
    s = apply(s, &p.long_run, &|c| {
        if is_path(&c[0]) {
            c[0].to_string()
        } else {
            REDACTED.to_string()
        }
    });
    if s.chars().count() > MAX_LINE {
        s = s.chars().take(MAX_LINE).collect();
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_in_a_urls_query_is_hidden_too() {
        assert_eq!(
            super::url("postgres://u@db/fleet?sslmode=require&password=s3cret&x=1"),
            "postgres://u@db/fleet?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            super::url("postgres://u:s3cret@db/f"),
            "postgres://u:***@db/f"
        );
    }

    use super::*;

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(
            url("postgresql://postgres:eddie_memory_2026@192.168.15.2:5433/postgres"),
            "postgresql://postgres:***@192.168.15.2:5433/postgres"
        );
        assert_eq!(url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(
            url("redis://:s3cret@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
    }

    /// Real formats, each with the secret that must not survive.
    const CORPUS: &[(&str, &str)] = &[
        (
            "connect postgres://bot:hunter2@db:5432/trades failed",
            "hunter2",
        ),
        ("Authorization: Bearer abcdef123456789", "abcdef123456789"),
        ("Authorization: Token 9a8b7c6d5e", "9a8b7c6d5e"),
        ("authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("'Authorization': 'tok_live_51Hx'", "tok_live_51Hx"),
        ("Cookie: session=abc123def; theme=dark", "abc123def"),
        ("Set-Cookie: sid=s%3AxYz987; Path=/; HttpOnly", "xYz987"),
        ("GET /order?api_key=AKIA1234&symbol=BTC", "AKIA1234"),
        ("GET /cb?code=1&token%3Dq1w2e3r4%26next", "q1w2e3r4"),
        (r#"{"secret": "s3cr3t", "x": 1}"#, "s3cr3t"),
        (r#"{"apiKey":"k-8842-zz","symbol":"BTC"}"#, "k-8842-zz"),
        (r#"{"password": "correct horse battery"}"#, "horse"),
        (
            "SECRET_KEY=django-insecure-9x8y7z",
            "django-insecure-9x8y7z",
        ),
        (
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG",
            "wJalrXUtnFEMI",
        ),
        ("export DB_PASS=Tr0ub4dor", "Tr0ub4dor"),
        ("pwd=letmein99", "letmein99"),
        ("X-MBX-APIKEY: vmPUZE6mv9SD5V", "vmPUZE6mv9SD5V"),
        ("x-api-key: 8f8e8d8c", "8f8e8d8c"),
        (
            "running bot.py --password Hunter2! --symbol BTC",
            "Hunter2!",
        ),
        (
            "running bot.py --password=Hunter2! --symbol BTC",
            "Hunter2!",
        ),
        ("--api-key abcDEF123 --live", "abcDEF123"),
        ("oauth client_secret Zx9Yw8Vv7 requested", "Zx9Yw8Vv7"),
        ("mysql -uroot -pS3cretPw -h db", "S3cretPw"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_part-1 used",
            "eyJzdWIiOiIxIn0",
        ),
        (
            "aws key AKIAIOSFODNN7EXAMPLE loaded",
            "AKIAIOSFODNN7EXAMPLE",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----MIIEpAIBAAKCAQEA",
            "MIIEpAIBAAKCAQEA",
        ),
        (
            "sig 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 bad",
            "9f86d081884c7d659a2feaa0c55ad015",
        ),
        (
            "telegram bot_token: 123456:ABC-DEF1234ghIkl",
            "ABC-DEF1234ghIkl",
        ),
        ("passphrase = 'my kucoin phrase'", "kucoin"),
        ("private_key: 0xdeadbeef42", "0xdeadbeef42"),
    ];

    #[test]
    fn the_secret_corpus_never_survives() {
        for (raw, secret) in CORPUS {
            let out = line(raw);
            assert!(
                !out.contains(secret),
                "{raw:?} → {out:?} still shows {secret:?}"
            );
            assert!(out.contains(REDACTED), "{raw:?} → {out:?}");
        }
    }

    /// What diagnosis rules read, and ordinary lines, stay as they are.
    #[test]
    fn what_diagnosis_reads_stays_readable() {
        for raw in [
            "binance: Invalid API-key, IP, or permissions for action",
            r#"binance {"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}"#,
            "Signature for this request is not valid.",
            "KeyError: 'API_KEY'",
            "AuthenticationError: binance API key is invalid",
            "api_key is invalid",
            "token expired, refreshing",
            "sqlite3.OperationalError: database is locked",
            "429 Too Many Requests: rate limit exceeded",
            "Timestamp for this request was 1000ms ahead of the server's time.",
            "BTC_USDT buy 0.01 @ 43210.5",
            "ConnectionResetError: [Errno 104] Connection reset by peer",
            "python3: can't open file '/home/alice/trading/bots/strategy_v2/momentum_bot.py': [Errno 2] No such file or directory",
            "FileNotFoundError: [Errno 2] No such file or directory: '/opt/vigil/agents/config/BTC_USDT/settings.json'",
        ] {
            assert_eq!(line(raw), raw);
        }
    }

    #[test]
    fn an_agents_own_secret_env_values_are_hidden_anywhere() {
        let secrets = Secrets::from_env(
            [
                ("EXCHANGE_SECRET", "q7-Hr2-zz"),
                ("BINANCE_API_KEY", "vmPUZE6mv9SD5V"),
                ("SYMBOL", "BTC_USDT"),
                ("DB_PASSWORD", "abc"),
                ("EXCHANGE_ACCOUNT", "acct-778899"),
            ],
            &["EXCHANGE_ACCOUNT".to_string()],
        );
        let out = line_with(
            "signing with q7-Hr2-zz for BTC_USDT key vmPUZE6mv9SD5V on acct-778899",
            &secrets,
        );
        assert_eq!(
            out,
            "signing with [REDACTED] for BTC_USDT key [REDACTED] on [REDACTED]"
        );
        assert!(secret_name("AWS_SECRET_ACCESS_KEY") && secret_name("DB_PASS"));
        assert!(secret_name("pwd") && secret_name("apiKey") && secret_name("--password"));
        assert!(!secret_name("SYMBOL") && !secret_name("passenger") && !secret_name("KeyError"));
    }

    proptest::proptest! {
        /// Any line — hostile, binary, huge — gives a short printable line, and a secret
        /// planted in it after a secret-looking key never survives.
        #[test]
        fn any_line_is_safe(raw in "\\PC{0,700}", secret in "[A-Za-z0-9]{8,20}[0-9]") {
            let out = line(&raw);
            proptest::prop_assert!(out.chars().count() <= MAX_LINE);
            proptest::prop_assert!(!out.chars().any(|c| c.is_control() && c != '\t'));
            let planted = line(&format!("{} password={secret} tail", raw.chars().take(100).collect::<String>()));
            proptest::prop_assert!(!planted.contains(&secret), "{planted}");
        }
    }

    #[test]
    fn control_characters_go_and_length_is_capped() {
        assert_eq!(line("a\u{1b}[31mred\u{7}"), "a[31mred");
        assert!(line(&"x ".repeat(2000)).chars().count() <= 500);
    }
}
