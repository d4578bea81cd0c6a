//! Secrets never leave vigil in evidence: URL passwords, `key=`/`token=`/`secret=` values,
//! bearer tokens and long hex or base64 keys are replaced before a log line is kept.

use std::sync::OnceLock;

use regex::Regex;

/// Longest evidence line kept (characters); the rest is cut.
const MAX_LINE: usize = 500;

/// `scheme://user:password@host`: the password.
const URL_PASSWORD: &str = r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*):[^\s@/]+@";

/// A URL (a database's, Redis's) fit to show in details, the journal and `vigil check`: its
/// password replaced by `***`.
pub fn url(u: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(URL_PASSWORD).expect("URL pattern"))
        .replace_all(u, "$1:***@")
        .into_owned()
}

fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        [
            (URL_PASSWORD, "$1:[REDACTED]@"),
            // Authorization: Bearer xyz / Basic xyz
            (r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", "$1 [REDACTED]"),
            // api_key=…, "secret": "…", token: …, password=…
            (
                r#"(?i)((?:api[_-]?key|apikey|secret|token|passw(?:or)?d|passphrase|private[_-]?key|signature|auth)["']?\s*[:=]\s*["']?)[^\s"'&,;]+"#,
                "${1}[REDACTED]",
            ),
            // Long hex (≥ 32) or base64-ish (≥ 40) runs: keys and signatures.
            (r"\b[0-9a-fA-F]{32,}\b", "[REDACTED]"),
            (r"[A-Za-z0-9+/_-]{40,}={0,2}", "[REDACTED]"),
        ]
        .into_iter()
        .map(|(p, r)| (Regex::new(p).expect("redaction pattern"), r))
        .collect()
    })
}

/// One line, safe to keep: secrets replaced, control characters dropped, length capped.
pub fn line(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .take(MAX_LINE)
        .collect();
    for (re, with) in patterns() {
        if re.is_match(&s) {
            s = re.replace_all(&s, *with).into_owned();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{line, url};

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

    #[test]
    fn secrets_are_replaced_and_the_rest_kept() {
        assert_eq!(
            line("connect postgres://bot:hunter2@db:5432/trades failed"),
            "connect postgres://bot:[REDACTED]@db:5432/trades failed"
        );
        assert_eq!(
            line("Authorization: Bearer abcdef123456789"),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            line("GET /order?api_key=AKIA1234&symbol=BTC"),
            "GET /order?api_key=[REDACTED]&symbol=BTC"
        );
        assert_eq!(
            line(r#"{"secret": "s3cr3t", "x": 1}"#),
            r#"{"secret": "[REDACTED]", "x": 1}"#
        );
        assert_eq!(
            line("sig 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 bad"),
            "sig [REDACTED] bad"
        );
        assert_eq!(
            line("binance: Invalid API-key, IP, or permissions for action"),
            "binance: Invalid API-key, IP, or permissions for action"
        );
        assert_eq!(line("a\u{1b}[31mred\u{7}"), "a[31mred");
        assert!(line(&"x ".repeat(2000)).chars().count() <= 500);
    }
}
