//! `POST /alertmanager`: Alertmanager's webhook (payload version 4). The bearer token is
//! compared in constant time before the body is read; a body over 1 MiB is refused; the
//! payload is checked whole (a mistake is answered 400 with where it is) and handed to the
//! loop, which journals it (`alert_received`) and answers at once — the runbooks run after.
//! A 5xx makes Alertmanager send again, which is harmless: repeats are recognised.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::{ApiRequest, Hub, auth};

/// Largest notification taken (Alertmanager sends every alert of a group in one).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Checks the token of `POST /alertmanager` before its body is read.
pub async fn token_first(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/alertmanager" || request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let Some(token) = hub.alert_token.as_deref() else {
        return ApiError::not_found(
            "this vigil takes no alerts: add [alertmanager] with token_file to its config",
        )
        .into_response();
    };
    if !auth::authorized(Some(token), request.headers()) {
        super::handlers::deny(&hub, "POST /alertmanager without Alertmanager's token");
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "POST /alertmanager needs `Authorization: Bearer <token>` ([alertmanager] token_file)",
        )
        .into_response();
    }
    next.run(request).await
}

/// Alertmanager's webhook payload; fields vigil does not use are accepted and ignored (newer
/// Alertmanagers add some).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    version: String,
    #[serde(default)]
    receiver: String,
    status: String,
    alerts: Vec<AmAlert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    starts_at: String,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// Alertmanager's own fingerprint, or (from a sender that has none) one of the labels.
fn fingerprint(a: &AmAlert) -> String {
    if let Some(f) = a.fingerprint.as_deref().filter(|f| !f.is_empty()) {
        return f.to_string();
    }
    let parts = a.labels.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]);
    format!("labels-{:016x}", vigil_core::fnv::fnv1a_parts(parts, 0))
}

fn parse(body: &[u8]) -> Result<(String, String, Vec<vigil_core::Alert>), ApiError> {
    let p: Payload = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "not an Alertmanager webhook payload (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })?;
    if p.version != "4" {
        return Err(ApiError::bad_request(format!(
            "payload version {:?}: vigil reads Alertmanager's version \"4\"",
            p.version
        )));
    }
    let mut alerts = Vec::with_capacity(p.alerts.len());
    for (i, a) in p.alerts.iter().enumerate() {
        let firing = match a.status.as_str() {
            "firing" => true,
            "resolved" => false,
            other => {
                return Err(ApiError::bad_request(format!(
                    "alerts[{i}].status is {other:?}: \"firing\" or \"resolved\""
                )));
            }
        };
        alerts.push(vigil_core::Alert {
            fingerprint: fingerprint(a),
            firing,
            labels: a.labels.clone(),
            starts_at: a.starts_at.clone(),
        });
    }
    Ok((p.receiver, p.status, alerts))
}

pub async fn receive(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Response, ApiError> {
    let (receiver, status, alerts) = parse(&body)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    let gone = || ApiError::unavailable("vigil is shutting down");
    hub.requests
        .send(ApiRequest::Alerts {
            receiver,
            status,
            alerts,
            reply,
        })
        .await
        .map_err(|_| gone())?;
    let a = answer
        .await
        .map_err(|_| gone())?
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(Json(json!({
        "accepted": a.accepted,
        "duplicates": a.duplicates,
        "refused": a.refused,
        "cancelled": a.cancelled,
        "unmatched": a.unmatched,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_alertmanager_sends_and_says_where_a_payload_is_wrong() {
        let body = br#"{"version":"4","groupKey":"{}:{alertname=\"X\"}","truncatedAlerts":0,
            "status":"firing","receiver":"vigil","groupLabels":{},"commonLabels":{},
            "commonAnnotations":{},"externalURL":"http://am","notification_reason":"new",
            "alerts":[{"status":"firing","labels":{"alertname":"X","agent":"bot"},
            "annotations":{},"startsAt":"2026-11-30T10:00:00Z","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"","fingerprint":"abc"}]}"#;
        let (receiver, status, alerts) = parse(body).unwrap();
        assert_eq!((receiver.as_str(), status.as_str()), ("vigil", "firing"));
        assert_eq!(alerts[0].fingerprint, "abc");
        assert!(alerts[0].firing);
        let bad = parse(
            br#"{"version":"4","status":"firing","alerts":[{"status":"maybe","startsAt":"x"}]}"#,
        );
        assert!(bad.unwrap_err().message.contains("alerts[0].status"));
        let v3 = parse(br#"{"version":"3","status":"firing","alerts":[]}"#);
        assert!(v3.unwrap_err().message.contains("version"));
        let junk = parse(b"{\"version\": 4");
        assert!(junk.unwrap_err().message.contains("line 1"));
    }
}
