//! `env_file = "secrets/{instance}.env"`: an agent's environment from a file kept out of
//! `vigil.toml` (API keys, DSNs), in the format systemd's `EnvironmentFile=` and dotenv read:
//! `KEY=VALUE` lines, `#` comment lines, blank lines, an optional `export `, and values in
//! single quotes (taken as they are) or double quotes (with `\"`, `\\`, `\n` escapes); an
//! unquoted value is taken whole, `#` included.
//!
//! Values are secrets: no error message quotes one, and every value is hidden from the logs
//! and the journal wherever it appears (see `redact::Secrets`).

/// A mistake in the file: its line (1-based) and what is wrong, never the value.
#[derive(Debug, PartialEq, Eq)]
pub struct EnvFileError {
    pub line: usize,
    pub message: String,
}

pub fn parse(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |message: &str| EnvFileError {
            line: line_no,
            message: message.to_string(),
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err(err("expected KEY=VALUE"));
        };
        let key = key.trim();
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(err(
                "the name must be letters, digits and `_`, not starting with a digit",
            ));
        }
        let value = unquote(value.trim()).map_err(&err)?;
        if value.contains('\0') {
            return Err(err("the value holds a NUL byte"));
        }
        match vars.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => vars.push((key.to_string(), value)),
        }
    }
    Ok(vars)
}

fn unquote(v: &str) -> Result<String, &'static str> {
    if let Some(rest) = v.strip_prefix('\'') {
        return rest
            .strip_suffix('\'')
            .map(str::to_string)
            .ok_or("a single-quoted value is not closed on its line");
    }
    if let Some(rest) = v.strip_prefix('"') {
        let inner = rest
            .strip_suffix('"')
            .filter(|i| !i.ends_with('\\') || i.ends_with("\\\\"))
            .ok_or("a double-quoted value is not closed on its line")?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(c @ ('"' | '\\' | '$' | '`')) => out.push(c),
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => out.push('\\'),
            }
        }
        return Ok(out);
    }
    // Unquoted: as it is, as systemd takes it (a `#` inside is part of a password, not a
    // comment).
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_systemd_and_dotenv_write() {
        let vars = parse(
            "# keys for BTC\n\nBINANCE_KEY=abc123\nexport SECRET='p@ss w0rd'\nDSN=\"postgres://u:p@h/db\"\nEMPTY=\nA=1\nA=2\nQ=\"say \\\"hi\\\"\"\nPW=s3cret #1\n",
        )
        .unwrap();
        assert_eq!(
            vars,
            vec![
                ("BINANCE_KEY".into(), "abc123".into()),
                ("SECRET".into(), "p@ss w0rd".into()),
                ("DSN".into(), "postgres://u:p@h/db".into()),
                ("EMPTY".into(), String::new()),
                ("A".into(), "2".into()),
                ("Q".into(), "say \"hi\"".into()),
                ("PW".into(), "s3cret #1".into()),
            ]
        );
    }

    #[test]
    fn mistakes_name_their_line_and_never_the_value() {
        let e = parse("OK=1\nsk-live-123456\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(!e.message.contains("sk-live"));
        assert_eq!(parse("1X=2").unwrap_err().line, 1);
        assert_eq!(parse("K='open").unwrap_err().line, 1);
        assert_eq!(parse("K=\"open\\\"").unwrap_err().line, 1);
    }
}
