//! Typed reads from a parsed TOML tree that collect every error instead of stopping at the first.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::ConfigError;
use super::values::{DURATION_FORMS, SIZE_FORMS, did_you_mean, parse_duration, parse_size};

pub type Value<'i> = Spanned<DeValue<'i>>;

/// A value with the place it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub span: Range<usize>,
}

/// A table being read; `name` is its dotted path for messages (`agents.bot.policy`).
#[derive(Clone)]
pub struct Tbl<'a, 'i> {
    pub name: String,
    pub table: &'a DeTable<'i>,
    pub span: Range<usize>,
}

impl<'a, 'i> Tbl<'a, 'i> {
    pub fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.table.get(key)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&'a Spanned<Cow<'i, str>>, &'a Value<'i>)> {
        self.table.iter()
    }
}

#[derive(Default)]
pub struct Cx {
    pub errors: Vec<ConfigError>,
}

pub fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn to_i64(v: &DeValue<'_>) -> Option<i64> {
    match v {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
        _ => None,
    }
}

impl Cx {
    pub fn error(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    pub fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(span, message));
    }

    fn wrong_type(&mut self, t: &Tbl<'_, '_>, key: &str, v: &Value<'_>, expected: &str) {
        self.err(
            v.span(),
            format!(
                "`{key}` in [{}] must be {expected}, found {}",
                t.name,
                type_name(v.get_ref())
            ),
        );
    }

    /// Report keys that are not in `known`, suggesting the closest known one.
    pub fn check_keys(&mut self, t: &Tbl<'_, '_>, known: &[&str]) {
        for (key, _) in t.entries() {
            let name = key.get_ref().as_ref();
            if known.contains(&name) {
                continue;
            }
            let place = if t.name.is_empty() {
                "at the top level".to_string()
            } else {
                format!("in [{}]", t.name)
            };
            let mut e = ConfigError::new(key.span(), format!("unknown key `{name}` {place}"));
            e = match did_you_mean(name, known) {
                Some(s) => e.hint(format!("did you mean `{s}`?")),
                // Settings of vigil itself live in [vigil]: say so for the usual slip.
                None if t.name.is_empty() && name == "state_dir" => {
                    e.hint("`state_dir` goes in the [vigil] table")
                }
                None => e.hint(format!("known keys here: {}", known.join(", "))),
            };
            self.error(e);
        }
    }

    /// `[[TABLE.key]]`: each table of an array of tables, named `TABLE.key[N]`; what is not
    /// one is said (`what`: `check`, `file`; `example`: how to write one).
    pub fn table_list<'a, 'i>(
        &mut self,
        t: &Tbl<'a, 'i>,
        key: &str,
        what: &str,
        example: &str,
    ) -> Vec<Tbl<'a, 'i>> {
        let Some(value) = t.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                ConfigError::new(
                    value.span(),
                    format!("`{key}` in [{}] must be a list of tables", t.name),
                )
                .hint(if t.name.is_empty() {
                    format!("write each {what} as [[{key}]] with {example}")
                } else {
                    format!("write each {what} as [[{}.{key}]] with {example}", t.name)
                }),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (n, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::Table(table) => out.push(Tbl {
                    name: if t.name.is_empty() {
                        format!("{key}[{}]", n + 1)
                    } else {
                        format!("{}.{key}[{}]", t.name, n + 1)
                    },
                    table,
                    span: item.span(),
                }),
                other => self.err(
                    item.span(),
                    format!(
                        "{what} {} of [{}] must be a table, found {}",
                        n + 1,
                        if t.name.is_empty() { key } else { &t.name },
                        type_name(other)
                    ),
                ),
            }
        }
        out
    }

    pub fn table<'a, 'i>(&mut self, t: &Tbl<'a, 'i>, key: &str) -> Option<Tbl<'a, 'i>> {
        let v = t.get(key)?;
        match v.get_ref() {
            DeValue::Table(table) => Some(Tbl {
                name: if t.name.is_empty() {
                    key.to_string()
                } else {
                    format!("{}.{key}", t.name)
                },
                table,
                span: v.span(),
            }),
            _ => {
                self.wrong_type(t, key, v, "a table");
                None
            }
        }
    }

    /// No string vigil hands to the system (an argument, a path, an environment variable, a
    /// URL) can hold a NUL byte: refused here, not at every spawn.
    fn without_nul(&mut self, t: &Tbl<'_, '_>, key: &str, s: &str, span: Range<usize>) -> bool {
        if s.contains('\0') {
            self.err(
                span,
                format!("`{key}` in [{}] contains a NUL byte, which no command, path or environment variable can hold", t.name),
            );
            return false;
        }
        true
    }

    /// The trimmed content of the file `file` names (`key` = "token_file", …), relative to
    /// `base_dir`: a secret kept out of the config. At least `min_len` characters when that
    /// is not 0; never empty. The error names the file, never its content.
    pub fn secret_in_file(
        &mut self,
        file: &At<String>,
        key: &str,
        base_dir: &std::path::Path,
        min_len: usize,
    ) -> Option<String> {
        let path = base_dir.join(&file.value);
        match std::fs::read_to_string(&path) {
            Ok(text) if min_len > 0 && text.trim().len() < min_len => {
                let shown = path.display();
                let why = format!("the token in {shown} is shorter than {min_len} characters");
                self.err(file.span.clone(), why);
                None
            }
            Ok(text) if text.trim().is_empty() => {
                self.err(file.span.clone(), format!("{} is empty", path.display()));
                None
            }
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => {
                let why = format!("cannot read {key} {}: {e}", path.display());
                self.err(file.span.clone(), why);
                None
            }
        }
    }

    pub fn string(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<At<String>> {
        let v = t.get(key)?;
        match v.get_ref() {
            DeValue::String(s) if !self.without_nul(t, key, s, v.span()) => None,
            DeValue::String(s) => Some(At {
                value: s.to_string(),
                span: v.span(),
            }),
            _ => {
                self.wrong_type(t, key, v, "a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<bool> {
        let v = t.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(t, key, v, "true or false");
                None
            }
        }
    }

    pub fn integer(&mut self, t: &Tbl<'_, '_>, key: &str, range: Range<i64>) -> Option<i64> {
        let v = t.get(key)?;
        let Some(n) = to_i64(v.get_ref()) else {
            self.wrong_type(t, key, v, "an integer");
            return None;
        };
        if !range.contains(&n) {
            self.err(
                v.span(),
                format!(
                    "`{key}` in [{}] must be between {} and {}, found {n}",
                    t.name,
                    range.start,
                    range.end - 1
                ),
            );
            return None;
        }
        Some(n)
    }

    /// A number from 0 to 1 (`0.7`, or `1`).
    pub fn fraction(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<f64> {
        let v = t.get(key)?;
        let n = match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            other => to_i64(other).map(|i| i as f64),
        };
        match n {
            Some(n) if (0.0..=1.0).contains(&n) => Some(n),
            Some(n) => {
                self.err(
                    v.span(),
                    format!("`{key}` in [{}] must be between 0 and 1, found {n}", t.name),
                );
                None
            }
            None => {
                self.wrong_type(t, key, v, "a number from 0 to 1");
                None
            }
        }
    }

    pub fn duration(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<Duration> {
        let v = t.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(why) => {
                    self.error(
                        ConfigError::new(
                            v.span(),
                            format!("`{key}` in [{}]: bad duration \"{s}\": {why}", t.name),
                        )
                        .hint(format!("durations are {DURATION_FORMS}")),
                    );
                    None
                }
            },
            other => {
                let hint = match to_i64(other) {
                    Some(n) => {
                        format!("write \"{n}s\" for {n} seconds; durations are {DURATION_FORMS}")
                    }
                    None => format!("durations are {DURATION_FORMS}"),
                };
                self.error(
                    ConfigError::new(
                        v.span(),
                        format!(
                            "`{key}` in [{}] must be a duration string, found {}",
                            t.name,
                            type_name(other)
                        ),
                    )
                    .hint(hint),
                );
                None
            }
        }
    }

    pub fn size(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<u64> {
        let v = t.get(key)?;
        let parsed = match v.get_ref() {
            DeValue::String(s) => parse_size(s),
            other => match to_i64(other) {
                Some(n) if n >= 0 => Ok(n as u64),
                _ => Err(format!("found {}", type_name(other))),
            },
        };
        match parsed {
            Ok(n) => Some(n),
            Err(why) => {
                self.error(
                    ConfigError::new(
                        v.span(),
                        format!("`{key}` in [{}] is not a size: {why}", t.name),
                    )
                    .hint(format!("sizes are {SIZE_FORMS}")),
                );
                None
            }
        }
    }

    /// One of a fixed set of words, with a suggestion for near misses.
    pub fn choice(&mut self, t: &Tbl<'_, '_>, key: &str, choices: &[&str]) -> Option<At<String>> {
        let s = self.string(t, key)?;
        if choices.contains(&s.value.as_str()) {
            return Some(s);
        }
        let mut e = ConfigError::new(
            s.span.clone(),
            format!("`{key}` in [{}] cannot be \"{}\"", t.name, s.value),
        );
        let listed = choices
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        e = match did_you_mean(&s.value, choices) {
            Some(near) => e.hint(format!("did you mean \"{near}\"? accepted: {listed}")),
            None => e.hint(format!("accepted: {listed}")),
        };
        self.error(e);
        None
    }

    pub fn string_list(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<At<Vec<At<String>>>> {
        let v = t.get(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(t, key, v, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) if !self.without_nul(t, key, s, item.span()) => ok = false,
                DeValue::String(s) => out.push(At {
                    value: s.to_string(),
                    span: item.span(),
                }),
                other => {
                    ok = false;
                    self.err(
                        item.span(),
                        format!(
                            "`{key}` in [{}] must hold only strings, found {}",
                            t.name,
                            type_name(other)
                        ),
                    );
                }
            }
        }
        ok.then_some(At {
            value: out,
            span: v.span(),
        })
    }

    /// A table of string values (`env = { K = "V" }`), in file order.
    pub fn string_map(&mut self, t: &Tbl<'_, '_>, key: &str) -> Option<Vec<(String, At<String>)>> {
        let table = self.table(t, key)?;
        let mut out = Vec::new();
        for (k, v) in table.entries() {
            let name = k.get_ref();
            if name.is_empty() || name.contains(['=', '\0']) {
                self.err(
                    k.span(),
                    format!(
                        "`{name}` in [{}] is not a usable name: it must not be empty or hold `=` or a NUL byte",
                        table.name
                    ),
                );
                continue;
            }
            match v.get_ref() {
                DeValue::String(s) if !self.without_nul(&table, name, s, v.span()) => {}
                DeValue::String(s) => out.push((
                    k.get_ref().to_string(),
                    At {
                        value: s.to_string(),
                        span: v.span(),
                    },
                )),
                other => {
                    let mut e = ConfigError::new(
                        v.span(),
                        format!(
                            "`{}` in [{}] must be a string, found {}",
                            k.get_ref(),
                            table.name,
                            type_name(other)
                        ),
                    );
                    if let Some(n) = to_i64(other) {
                        e = e.hint(format!("quote it: {} = \"{n}\"", k.get_ref()));
                    }
                    self.error(e);
                }
            }
        }
        Some(out)
    }
}
