//! `[[agents.NAME.files]]`: config files an agent cannot run without. Checked before every
//! start (parseable, required keys present) and mended per `repair` (see `crate::guard`).

use std::path::{Path, PathBuf};

use toml::de::DeValue;

use super::diagnostic::ConfigError;
use super::placeholders::{Placeholders, check_placeholders, expand};
use super::reader::{At, Cx, Tbl};

/// How a guarded file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileFormat {
    Json,
    Yaml,
    Toml,
}

impl FileFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Json => "json",
            FileFormat::Yaml => "yaml",
            FileFormat::Toml => "toml",
        }
    }

    /// From a file name's extension.
    pub fn of_path(path: &str) -> Option<FileFormat> {
        let ext = Path::new(path).extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(FileFormat::Json),
            "yaml" | "yml" => Some(FileFormat::Yaml),
            "toml" => Some(FileFormat::Toml),
            _ => None,
        }
    }
}

/// What vigil may do with an invalid or missing guarded file before a start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Repair {
    /// Put back the last known good copy (or, with none kept yet, fill in `defaults`).
    Restore,
    /// Only fill in the missing required keys from `defaults`.
    Defaults,
    /// Never touch it: the agent is quarantined instead.
    None,
}

impl Repair {
    pub fn as_str(self) -> &'static str {
        match self {
            Repair::Restore => "restore",
            Repair::Defaults => "defaults",
            Repair::None => "none",
        }
    }
}

/// One guarded file of one agent (placeholders substituted, path absolute).
#[derive(Clone, Debug, PartialEq)]
pub struct GuardedFile {
    pub path: PathBuf,
    pub format: FileFormat,
    /// JSON pointers that must be present (`/risk/max_position`).
    pub required: Vec<String>,
    /// Values for missing keys, by JSON pointer.
    pub defaults: Vec<(String, serde_json::Value)>,
    pub repair: Repair,
    /// Last known good copies kept (and as many backups of bad ones).
    pub keep: usize,
}

const KEYS: &[&str] = &["path", "format", "required", "defaults", "repair", "keep"];
const FORMATS: &[&str] = &["json", "yaml", "toml"];
const REPAIRS: &[&str] = &["restore", "defaults", "none"];
pub const DEFAULT_KEEP: usize = 5;

/// A guarded file before `{instance}` is substituted.
pub struct FileTemplate {
    path: At<String>,
    file: GuardedFile,
}

impl FileTemplate {
    /// The file for one agent; a relative path is relative to the agent's working directory.
    pub fn expand(
        &self,
        agent: &str,
        template: &str,
        instance: Option<&str>,
        base: &Path,
    ) -> GuardedFile {
        GuardedFile {
            path: base.join(expand(&self.path.value, agent, template, instance)),
            ..self.file.clone()
        }
    }
}

/// Every `[[agents.NAME.files]]` of an agent block.
pub fn read_files(cx: &mut Cx, agent: &Tbl<'_, '_>, scope: &Placeholders<'_>) -> Vec<FileTemplate> {
    let mut out: Vec<FileTemplate> = Vec::new();
    for t in cx.table_list(agent, "files", "file", "path = \"…\"") {
        if let Some(file) = read_file(cx, &t, scope) {
            if out.iter().any(|f| f.path.value == file.path.value) {
                cx.err(
                    file.path.span.clone(),
                    format!("[{}] guards {} twice", agent.name, file.path.value),
                );
                continue;
            }
            out.push(file);
        }
    }
    out
}

fn read_file(cx: &mut Cx, t: &Tbl<'_, '_>, scope: &Placeholders<'_>) -> Option<FileTemplate> {
    cx.check_keys(t, KEYS);
    let errors_before = cx.errors.len();
    let Some(path) = cx.string(t, "path") else {
        if t.get("path").is_none() {
            cx.error(
                ConfigError::new(t.span.clone(), format!("[{}] has no `path`", t.name))
                    .hint("path = \"config/{instance}.json\""),
            );
        }
        return None;
    };
    check_placeholders(cx, &path, scope);
    let format = match cx.choice(t, "format", FORMATS) {
        Some(f) => match f.value.as_str() {
            "yaml" => FileFormat::Yaml,
            "toml" => FileFormat::Toml,
            _ => FileFormat::Json,
        },
        None if t.get("format").is_some() => FileFormat::Json,
        None => match FileFormat::of_path(&path.value) {
            Some(f) => f,
            None => {
                cx.error(
                    ConfigError::new(
                        path.span.clone(),
                        format!(
                            "[{}]: cannot tell the format of {} from its name",
                            t.name, path.value
                        ),
                    )
                    .hint("add format = \"json\", \"yaml\" or \"toml\""),
                );
                FileFormat::Json
            }
        },
    };
    let mut required = Vec::new();
    if let Some(list) = cx.string_list(t, "required") {
        for p in list.value {
            if pointer_ok(cx, t, &p) {
                required.push(p.value);
            }
        }
    }
    let mut defaults = Vec::new();
    if let Some(table) = cx.table(t, "defaults") {
        for (k, v) in table.entries() {
            let key = At {
                value: k.get_ref().to_string(),
                span: k.span(),
            };
            if pointer_ok(cx, t, &key) {
                defaults.push((key.value, to_json(v.get_ref())));
            }
        }
    }
    let repair = match cx.choice(t, "repair", REPAIRS) {
        Some(r) if r.value == "defaults" => Repair::Defaults,
        Some(r) if r.value == "none" => Repair::None,
        _ => Repair::Restore,
    };
    if repair == Repair::Defaults && defaults.is_empty() {
        let span = t.get("repair").map(|v| v.span()).unwrap_or(t.span.clone());
        cx.error(
            ConfigError::new(
                span,
                format!("[{}]: repair = \"defaults\" with no `defaults`", t.name),
            )
            .hint("add defaults = { \"/key\" = value }, or use repair = \"restore\""),
        );
    }
    let keep = cx
        .integer(t, "keep", 1..1001)
        .map_or(DEFAULT_KEEP, |n| n as usize);
    if cx.errors.len() != errors_before {
        return None;
    }
    Some(FileTemplate {
        file: GuardedFile {
            path: PathBuf::new(),
            format,
            required,
            defaults,
            repair,
            keep,
        },
        path,
    })
}

/// A JSON pointer: empty (the whole document) or `/`-separated, `~0`/`~1` escapes only.
fn pointer_ok(cx: &mut Cx, t: &Tbl<'_, '_>, p: &At<String>) -> bool {
    let bad_escape = p
        .value
        .match_indices('~')
        .any(|(i, _)| !matches!(p.value.as_bytes().get(i + 1), Some(b'0' | b'1')));
    if (!p.value.is_empty() && !p.value.starts_with('/')) || bad_escape {
        cx.error(
            ConfigError::new(
                p.span.clone(),
                format!("[{}]: \"{}\" is not a JSON pointer", t.name, p.value),
            )
            .hint("write keys as \"/risk/max_position\" (RFC 6901: `~1` for `/`, `~0` for `~`)"),
        );
        return false;
    }
    true
}

/// A TOML value as JSON (dates as their text).
fn to_json(v: &DeValue<'_>) -> serde_json::Value {
    use serde_json::Value;
    match v {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map(Value::from)
            .unwrap_or(Value::Null),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|i| to_json(i.get_ref())).collect()),
        DeValue::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), to_json(v.get_ref())))
                .collect(),
        ),
    }
}
