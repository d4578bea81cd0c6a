//! A guarded file's contents as one tree (JSON's, whatever the format), and the keys in it
//! by JSON pointer (RFC 6901).

use serde_json::{Map, Value};

use crate::config::FileFormat;

/// Files larger than this are not read: a config file is small, and a runaway one must not
/// make vigil read gigabytes.
pub const MAX_SIZE: u64 = 16 * 1024 * 1024;

/// Why a file's bytes are not a document. The wording never quotes the file: it may hold
/// secrets, and it goes into the journal.
pub fn parse(format: FileFormat, bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (byte {})", e.valid_up_to()))?;
    match format {
        FileFormat::Json => serde_json::from_str(text).map_err(|e| {
            format!(
                "not valid JSON ({} at line {} column {})",
                json_kind(&e),
                e.line(),
                e.column()
            )
        }),
        FileFormat::Yaml => yaml_serde::from_str(text).map_err(|e| match e.location() {
            Some(l) => format!(
                "not valid YAML (at line {} column {})",
                l.line(),
                l.column()
            ),
            None => "not valid YAML".to_string(),
        }),
        FileFormat::Toml => toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let what = e.message().lines().next().unwrap_or("").to_string();
            match line {
                Some(l) => format!("not valid TOML ({what} at line {l})"),
                None => format!("not valid TOML ({what})"),
            }
        }),
    }
}

fn json_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "it ends too early",
        serde_json::error::Category::Syntax => "a syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "a read error",
    }
}

/// The document written out in its format.
pub fn render(format: FileFormat, doc: &Value) -> Result<Vec<u8>, String> {
    let text = match format {
        FileFormat::Json => serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?,
        FileFormat::Yaml => yaml_serde::to_string(doc).map_err(|e| e.to_string())?,
        FileFormat::Toml => toml::to_string_pretty(doc).map_err(|e| e.to_string())?,
    };
    let mut bytes = text.into_bytes();
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    Ok(bytes)
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The value at `pointer`, if present (and not null: a key set to null is as good as missing
/// for a setting the agent needs).
pub fn get<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    doc.pointer(pointer).filter(|v| !v.is_null())
}

/// Set `pointer` to `value`, creating the objects on the way. `false` when the way is
/// blocked by something that is not an object (a string where a table should be).
pub fn set(doc: &mut Value, pointer: &str, value: Value) -> bool {
    if pointer.is_empty() {
        *doc = value;
        return true;
    }
    let tokens: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    let mut at = doc;
    for (i, token) in tokens.iter().enumerate() {
        if at.is_null() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else {
            return false;
        };
        if i + 1 == tokens.len() {
            map.insert(token.clone(), value);
            return true;
        }
        at = map.entry(token.clone()).or_insert(Value::Null);
    }
    false
}

/// As [`set`], in a TOML table (which keeps TOML's own types, dates among them).
pub fn set_toml(doc: &mut toml::Table, pointer: &str, value: &Value) -> bool {
    let Ok(value) = toml::Value::try_from(value) else {
        return false;
    };
    let tokens: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    let Some((last, path)) = tokens.split_last() else {
        return false;
    };
    let mut at = doc;
    for token in path {
        let next = at
            .entry(token.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(t) = next else {
            return false;
        };
        at = t;
    }
    at.insert(last.clone(), value);
    true
}

/// The pointers of every leaf of `doc` (scalars, arrays as one leaf).
pub fn leaves(doc: &Value) -> Vec<(String, &Value)> {
    fn walk<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    walk(v, format!("{at}/{}", escape(k)), out);
                }
            }
            _ => out.push((at, v)),
        }
    }
    let mut out = Vec::new();
    walk(doc, String::new(), &mut out);
    out
}

/// The keys whose values differ between two documents (added, removed or changed), by
/// pointer, sorted: what a repair changed, without the values.
pub fn changed_keys(before: &Value, after: &Value) -> Vec<String> {
    let a: std::collections::BTreeMap<String, &Value> = leaves(before).into_iter().collect();
    let b: std::collections::BTreeMap<String, &Value> = leaves(after).into_iter().collect();
    let mut keys: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .filter(|k| !k.is_empty())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_are_read_set_and_listed() {
        let mut doc = json!({"risk": {"max_position": 0.2}, "a/b": 1});
        assert_eq!(get(&doc, "/risk/max_position"), Some(&json!(0.2)));
        assert!(get(&doc, "/risk/missing").is_none());
        assert!(set(&mut doc, "/risk/limits/daily", json!(5)));
        assert_eq!(doc["risk"]["limits"]["daily"], 5);
        assert!(!set(&mut doc, "/risk/max_position/x", json!(1)));
        let keys: Vec<String> = leaves(&doc).into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&"/a~1b".to_string()), "{keys:?}");
        let before = json!({"k": 1, "s": "secret"});
        let after = json!({"k": 2, "s": "secret", "n": true});
        assert_eq!(changed_keys(&before, &after), vec!["/k", "/n"]);
    }

    #[test]
    fn parse_errors_never_quote_the_file() {
        let secret = "sk-live-0123456789abcdef";
        for (format, text) in [
            (FileFormat::Json, format!("{{\"key\": \"{secret}\",")),
            (FileFormat::Toml, format!("key = \"{secret}\"\nbroken = ")),
            (FileFormat::Yaml, format!("key: \"{secret}\n  - : [")),
        ] {
            let e = parse(format, text.as_bytes()).unwrap_err();
            assert!(!e.contains(secret), "{e}");
            assert!(e.contains("line"), "{e}");
        }
    }

    #[test]
    fn every_format_reads_and_writes_the_same_tree() {
        let doc = json!({"api_key_file": "/etc/key", "risk": {"max_position": 0.1}});
        for format in [FileFormat::Json, FileFormat::Yaml, FileFormat::Toml] {
            let bytes = render(format, &doc).unwrap();
            assert_eq!(parse(format, &bytes).unwrap(), doc, "{format:?}");
        }
    }
}
