//! Sending one delivery to one channel, in the shape each service documents:
//! - webhook: a JSON POST (`{"node", "title", "text", "notifications": [...]}`), signed with
//!   HMAC-SHA256 of the body in `X-Vigil-Signature: sha256=<hex>` when a secret is set;
//! - Slack: an incoming webhook's `{"text": …}`, answered `ok`;
//! - Telegram: the Bot API's `POST /bot<token>/sendMessage` with `chat_id` and `text`,
//!   answered `{"ok": true, …}` (or `{"ok": false, "parameters": {"retry_after": N}}`);
//! - email: SMTP, STARTTLS or TLS unless the relay is this machine's.
//!
//! An answer the channel will give again (a 4xx other than 408/429, a refused recipient) is
//! `Refused` and not retried; anything else that fails is retried.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::message::Delivery;
use crate::config::{Channel, ChannelKind, EmailConfig, SmtpTls};

/// Why a delivery did not go through.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth another try (the channel was unreachable, busy, or failed on its side).
    #[error("{why}")]
    Retry {
        why: String,
        /// What the channel asked for (`Retry-After`, Telegram's `retry_after`).
        after: Option<Duration>,
    },
    /// The channel refused it and would again: a human must fix the channel's settings.
    #[error("refused: {why}")]
    Refused { why: String },
}

/// What the channel answered to a delivery that went through.
#[derive(Debug)]
pub struct Answer {
    pub status: String,
    pub body: String,
}

/// Up to this much of an answer is kept (for `vigil notify test` and errors).
const ANSWER_MAX: usize = 2048;

pub async fn deliver(
    client: &reqwest::Client,
    channel: &Channel,
    delivery: &Delivery<'_>,
) -> Result<Answer, DeliveryError> {
    match &channel.kind {
        ChannelKind::Webhook {
            url,
            secret,
            headers,
        } => {
            let body = serde_json::to_vec(&json!({
                "node": delivery.messages.first().map(|m| m.node.as_str()),
                "title": delivery.title(),
                "text": delivery.text(),
                "notifications": delivery.messages,
            }))
            .expect("a JSON value serializes");
            let mut req = client
                .post(url)
                .timeout(channel.timeout)
                .header("content-type", "application/json");
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(secret) = secret {
                req = req.header("x-vigil-signature", signature(secret, &body));
            }
            post(req.body(body), no_hint).await
        }
        ChannelKind::Slack { url } => {
            let req = json_post(client, url, channel, &json!({ "text": delivery.text() }));
            post(req, no_hint).await
        }
        ChannelKind::Telegram {
            api_url,
            token,
            chat_id,
        } => {
            let body = json!({
                "chat_id": chat_id,
                "text": truncate(&delivery.text(), 4096),
                "disable_web_page_preview": true,
            });
            let req = json_post(
                client,
                &format!("{api_url}/bot{token}/sendMessage"),
                channel,
                &body,
            );
            // The Bot API says how long to wait in its body, not only in a header.
            post(req, telegram_retry_after).await
        }
        ChannelKind::Email(email) => send_mail(email, channel.timeout, delivery).await,
    }
}

fn json_post(
    client: &reqwest::Client,
    url: &str,
    channel: &Channel,
    body: &Value,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .timeout(channel.timeout)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).expect("a JSON value serializes"))
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

fn no_hint(_: &str) -> Option<Duration> {
    None
}

/// `retry_hint` reads how long to wait from an error's body.
async fn post(
    req: reqwest::RequestBuilder,
    retry_hint: fn(&str) -> Option<Duration>,
) -> Result<Answer, DeliveryError> {
    let resp = req.send().await.map_err(|e| DeliveryError::Retry {
        // Without the URL: it may be a secret (Slack's, Telegram's token).
        why: crate::errors::chain(&e.without_url()),
        after: None,
    })?;
    let status = resp.status();
    let after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp.text().await.unwrap_or_default();
    let body = truncate(&body, ANSWER_MAX);
    let answer = Answer {
        status: status.to_string(),
        body,
    };
    if status.is_success() {
        return Ok(answer);
    }
    let why = format!("HTTP {}: {}", answer.status, answer.body.trim());
    if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        Err(DeliveryError::Retry {
            after: after.or_else(|| retry_hint(&answer.body)),
            why,
        })
    } else {
        Err(DeliveryError::Refused { why })
    }
}

fn telegram_retry_after(body: &str) -> Option<Duration> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.pointer("/parameters/retry_after")
        .and_then(Value::as_u64)
        .map(Duration::from_secs)
}

async fn send_mail(
    email: &EmailConfig,
    timeout: Duration,
    delivery: &Delivery<'_>,
) -> Result<Answer, DeliveryError> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor};

    let refused = |why: String| DeliveryError::Refused { why };
    let mut mail = Mail::builder()
        .from(
            email
                .from
                .parse()
                .map_err(|e| refused(format!("from: {e}")))?,
        )
        .subject(delivery.title());
    for to in &email.to {
        mail = mail.to(to.parse().map_err(|e| refused(format!("to {to}: {e}")))?);
    }
    let mail = mail
        .body(delivery.text())
        .map_err(|e| refused(format!("cannot build the message: {e}")))?;

    let tls = || -> Result<TlsParameters, DeliveryError> {
        let mut params = TlsParameters::builder(email.host.clone());
        if let Some(pem) = &email.ca_pem {
            let cert = Certificate::from_pem(pem)
                .map_err(|e| refused(format!("ca_file is not a PEM certificate: {e}")))?;
            params = params.add_root_certificate(cert);
        }
        params
            .build_rustls()
            .map_err(|e| refused(format!("TLS setup: {e}")))
    };
    let tls = match email.tls {
        SmtpTls::StartTls => Tls::Required(tls()?),
        SmtpTls::Tls => Tls::Wrapper(tls()?),
        SmtpTls::None => Tls::None,
    };
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.host)
        .port(email.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some((user, password)) = &email.login {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let transport = transport.build();
    match transport.send(mail).await {
        Ok(resp) => Ok(Answer {
            status: format!("{}", resp.code()),
            body: resp.message().collect::<Vec<_>>().join(" "),
        }),
        // A permanent SMTP answer (5xx: no such mailbox, relaying denied) comes again.
        Err(e) if e.is_permanent() => Err(refused(crate::errors::chain(&e))),
        Err(e) => Err(DeliveryError::Retry {
            why: crate::errors::chain(&e),
            after: None,
        }),
    }
}
