//! `[notify.NAME]`: where people are told what vigil did (a webhook, Slack, Telegram, email),
//! and which journal records are worth telling.

use std::path::Path;
use std::time::Duration;

use vigil_core::AuditAction;

use super::diagnostic::ConfigError;
use super::reader::{At, Cx, Tbl};

const KEYS: &[&str] = &[
    "kind",
    "events",
    "agents",
    "dedupe",
    "max_per_minute",
    "timeout",
    "url",
    "url_file",
    "secret_file",
    "headers",
    "token_file",
    "chat_id",
    "api_url",
    "server",
    "tls",
    "ca_file",
    "username",
    "password_file",
    "from",
    "to",
];
const KINDS: &[&str] = &["webhook", "slack", "telegram", "email"];
const TLS: &[&str] = &["starttls", "tls", "none"];

/// What a channel is told by default: a human must act, or vigil itself is in trouble.
pub const DEFAULT_EVENTS: &[AuditAction] = &[
    AuditAction::Escalated,
    AuditAction::IncidentOpened,
    AuditAction::IncidentResolved,
    AuditAction::RunbookFailed,
    AuditAction::VigilCrash,
    AuditAction::VigilStalled,
];

#[derive(Clone, Debug, PartialEq)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    /// The journal actions that are sent (`escalated`, `incident_opened`, …).
    pub events: Vec<AuditAction>,
    /// Only records about these agents (exact names, or a template `trader` for all its
    /// instances); empty: all, and records about vigil itself.
    pub agents: Vec<String>,
    /// The same event about the same agent again within this is not sent twice.
    pub dedupe: Duration,
    /// Beyond this, messages wait in the outbox and go out together.
    pub max_per_minute: u32,
    /// For one delivery attempt.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ChannelKind {
    /// A JSON POST; with `secret`, signed (`X-Vigil-Signature: sha256=<HMAC of the body>`).
    Webhook {
        url: String,
        secret: Option<String>,
        headers: Vec<(String, String)>,
    },
    /// A Slack incoming webhook (its URL is the secret).
    Slack { url: String },
    /// The Telegram Bot API's `sendMessage`.
    Telegram {
        api_url: String,
        token: String,
        chat_id: String,
    },
    /// SMTP.
    Email(EmailConfig),
}

impl ChannelKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Telegram { .. } => "telegram",
            ChannelKind::Email(_) => "email",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// A CA certificate (PEM) trusted besides the system's: a relay with its own CA.
    pub ca_pem: Option<Vec<u8>>,
    pub login: Option<(String, String)>,
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS; refused when the server cannot (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: a relay on this machine only.
    None,
}

/// `[notify]`: every channel.
pub fn read_notify(cx: &mut Cx, t: &Tbl<'_, '_>, base_dir: &Path) -> Vec<Channel> {
    let mut channels = Vec::new();
    for (key, value) in t.entries() {
        let name = key.get_ref().to_string();
        let toml::de::DeValue::Table(table) = value.get_ref() else {
            cx.error(
                ConfigError::new(
                    value.span(),
                    format!("[notify] `{name}` must be a table ([notify.{name}])"),
                )
                .hint("e.g. [notify.ops] kind = \"slack\" url_file = \"/etc/vigil/slack-url\""),
            );
            continue;
        };
        if super::values::node_name(&name).is_err() {
            cx.err(
                key.span(),
                format!("[notify.{name}]: a channel's name is letters, digits, `-`, `_` or `.`"),
            );
            continue;
        }
        let tbl = Tbl {
            name: format!("notify.{name}"),
            table,
            span: value.span(),
        };
        if let Some(c) = read_channel(cx, name, &tbl, base_dir) {
            channels.push(c);
        }
    }
    channels
}

fn read_channel(cx: &mut Cx, name: String, t: &Tbl<'_, '_>, base_dir: &Path) -> Option<Channel> {
    cx.check_keys(t, KEYS);
    let events = match cx.string_list(t, "events") {
        Some(list) => list
            .value
            .into_iter()
            .filter_map(|e| {
                let action = AuditAction::from_name(&e.value);
                if action.is_none() {
                    let names: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
                    let mut err = ConfigError::new(
                        e.span,
                        format!(
                            "[notify.{name}] events: `{}` is not a journal action",
                            e.value
                        ),
                    );
                    err = match super::did_you_mean(&e.value, &names) {
                        Some(s) => err.hint(format!("did you mean `{s}`?")),
                        None => err.hint(format!("one of: {}", names.join(", "))),
                    };
                    cx.error(err);
                }
                action
            })
            .collect(),
        None => DEFAULT_EVENTS.to_vec(),
    };
    let agents = cx
        .string_list(t, "agents")
        .map(|l| l.value.into_iter().map(|a| a.value).collect())
        .unwrap_or_default();
    let dedupe = cx.duration(t, "dedupe").unwrap_or(Duration::from_secs(300));
    let max_per_minute = cx.integer(t, "max_per_minute", 1..10_001).unwrap_or(20) as u32;
    let timeout = cx.duration(t, "timeout").unwrap_or(Duration::from_secs(10));
    let kind = cx.choice(t, "kind", KINDS);
    let Some(kind) = kind else {
        if t.get("kind").is_none() {
            cx.error(
                ConfigError::new(t.span.clone(), format!("[notify.{name}] needs `kind`"))
                    .hint("kind = \"webhook\", \"slack\", \"telegram\" or \"email\""),
            );
        }
        return None;
    };
    let kind = match kind.value.as_str() {
        "webhook" => {
            let url = read_url(cx, t, &name, base_dir)?;
            let secret = read_secret_file(cx, t, "secret_file", base_dir);
            let mut headers = Vec::new();
            for (k, v) in cx.string_map(t, "headers").unwrap_or_default() {
                let name_ok = reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_ok();
                if !name_ok || reqwest::header::HeaderValue::from_str(&v.value).is_err() {
                    cx.err(
                        v.span,
                        format!("[notify.{name}] headers: `{k}` is not a usable HTTP header (name or value)"),
                    );
                    continue;
                }
                headers.push((k, v.value));
            }
            ChannelKind::Webhook {
                url,
                secret,
                headers,
            }
        }
        "slack" => ChannelKind::Slack {
            url: read_url(cx, t, &name, base_dir)?,
        },
        "telegram" => {
            let token = read_secret_file(cx, t, "token_file", base_dir);
            let chat_id = cx.string(t, "chat_id");
            let api_url = match cx.string(t, "api_url") {
                Some(u) => http_url(cx, &name, "api_url", u)?,
                None => "https://api.telegram.org".to_string(),
            };
            let (Some(token), Some(chat_id)) = (token, chat_id) else {
                cx.error(
                    ConfigError::new(
                        t.span.clone(),
                        format!("[notify.{name}] (telegram) needs `token_file` and `chat_id`"),
                    )
                    .hint("token_file holds the bot's token from @BotFather; chat_id is the chat (or @channel) to write to"),
                );
                return None;
            };
            ChannelKind::Telegram {
                api_url,
                token,
                chat_id: chat_id.value,
            }
        }
        _ => ChannelKind::Email(read_email(cx, t, &name, base_dir)?),
    };
    Some(Channel {
        name,
        kind,
        events,
        agents,
        dedupe,
        max_per_minute,
        timeout,
    })
}

/// `url` or `url_file` (a Slack webhook's URL is itself the secret).
fn read_url(cx: &mut Cx, t: &Tbl<'_, '_>, name: &str, base_dir: &Path) -> Option<String> {
    let url = cx.string(t, "url");
    let from_file = read_secret_file(cx, t, "url_file", base_dir);
    match (url, from_file) {
        (Some(u), None) => http_url(cx, name, "url", u),
        (None, Some(text)) => {
            let span = t
                .get("url_file")
                .map(|v| v.span())
                .unwrap_or(t.span.clone());
            http_url(cx, name, "url_file", At { value: text, span })
        }
        (Some(u), Some(_)) => {
            cx.err(
                u.span,
                format!("[notify.{name}] has both `url` and `url_file`: keep one"),
            );
            None
        }
        (None, None) => {
            if t.get("url_file").is_none() {
                cx.error(
                    ConfigError::new(
                        t.span.clone(),
                        format!("[notify.{name}] needs `url` or `url_file`"),
                    )
                    .hint("url_file keeps a secret URL (a Slack webhook's) out of the config"),
                );
            }
            None
        }
    }
}

fn http_url(cx: &mut Cx, name: &str, key: &str, u: At<String>) -> Option<String> {
    match reqwest::Url::parse(u.value.trim()) {
        Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {
            Some(u.value.trim().trim_end_matches('/').to_string())
        }
        _ => {
            // Never repeat the value: it may be a secret URL read from a file.
            cx.error(
                ConfigError::new(
                    u.span,
                    format!("`{key}` in [notify.{name}] is not an http(s) address"),
                )
                .hint("e.g. \"https://hooks.example.com/vigil\""),
            );
            None
        }
    }
}

/// The trimmed content of the file a `*_file` key names, relative to the config.
fn read_secret_file(cx: &mut Cx, t: &Tbl<'_, '_>, key: &str, base_dir: &Path) -> Option<String> {
    let file = cx.string(t, key)?;
    cx.secret_in_file(&file, key, base_dir, 0)
}

fn read_email(cx: &mut Cx, t: &Tbl<'_, '_>, name: &str, base_dir: &Path) -> Option<EmailConfig> {
    let server = cx.string(t, "server");
    let tls = match cx.choice(t, "tls", TLS).as_ref().map(|c| c.value.as_str()) {
        Some("tls") => SmtpTls::Tls,
        Some("none") => SmtpTls::None,
        _ => SmtpTls::StartTls,
    };
    let ca_pem = cx.string(t, "ca_file").and_then(|f| {
        let path = base_dir.join(&f.value);
        match std::fs::read(&path) {
            Ok(pem) if lettre::transport::smtp::client::Certificate::from_pem(&pem).is_ok() => {
                Some(pem)
            }
            Ok(_) => {
                cx.err(
                    f.span,
                    format!("ca_file {} is not a PEM certificate", path.display()),
                );
                None
            }
            Err(e) => {
                cx.err(
                    f.span,
                    format!("cannot read ca_file {}: {e}", path.display()),
                );
                None
            }
        }
    });
    let username = cx.string(t, "username");
    let password = read_secret_file(cx, t, "password_file", base_dir);
    let from = cx.string(t, "from");
    let to = cx.string_list(t, "to");
    let (Some(server), Some(from), Some(to)) = (server, from, to) else {
        cx.error(
            ConfigError::new(
                t.span.clone(),
                format!("[notify.{name}] (email) needs `server`, `from` and `to`"),
            )
            .hint("server = \"smtp.example.com:587\", from = \"vigil@example.com\", to = [\"ops@example.com\"]"),
        );
        return None;
    };
    let default_port = match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    };
    let (host, port) = match server.value.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if !h.is_empty() => (h.to_string(), p),
            _ => {
                cx.err(
                    server.span,
                    format!(
                        "`server` in [notify.{name}]: \"{}\" is not HOST or HOST:PORT",
                        server.value
                    ),
                );
                return None;
            }
        },
        None => (server.value.clone(), default_port),
    };
    if tls == SmtpTls::None && !is_local(&host) {
        cx.error(
            ConfigError::new(
                server.span,
                format!("[notify.{name}] sends mail unencrypted (tls = \"none\") to {host}, beyond this machine"),
            )
            .hint("use tls = \"starttls\" (port 587) or \"tls\" (port 465); \"none\" is for a relay on this machine"),
        );
    }
    let mut addresses = vec![from.clone()];
    addresses.extend(to.value.iter().cloned());
    for a in &addresses {
        if a.value.parse::<lettre::Address>().is_err() {
            cx.err(
                a.span.clone(),
                format!("[notify.{name}]: \"{}\" is not an email address", a.value),
            );
        }
    }
    if to.value.is_empty() {
        cx.err(to.span, format!("[notify.{name}] `to` is empty"));
    }
    let login = match (username, password) {
        (Some(u), Some(p)) => Some((u.value, p)),
        (None, None) => None,
        (Some(u), None) => {
            cx.err(
                u.span,
                format!("[notify.{name}] has `username` without `password_file`"),
            );
            None
        }
        (None, Some(_)) => {
            cx.err(
                t.span.clone(),
                format!("[notify.{name}] has `password_file` without `username`"),
            );
            None
        }
    };
    Some(EmailConfig {
        host,
        port,
        tls,
        ca_pem,
        login,
        from: from.value,
        to: to.value.into_iter().map(|a| a.value).collect(),
    })
}

fn is_local(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
