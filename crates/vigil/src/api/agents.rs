//! What agents themselves ask of vigil: their checkpoints (`/agents/NAME/checkpoint`) and their
//! declared state (`POST /agents/NAME/status`). Each run may do this for its own agent only,
//! with its `VIGIL_AGENT_TOKEN`; a person's token may do it for any.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, unknown_agent};
use super::handlers::{ask_loop, deny};
use super::{ApiRequest, Hub, auth, guard};
use crate::checkpoints::{Checkpoint, MAX_DOCUMENT, PutError, StoreError};

type Hubs = State<Arc<Hub>>;

/// The request may act for agent `name`: it is a configured agent (not a template), and the
/// caller is a person or that agent's live run (`Some(run)`: which).
pub fn authorize(
    hub: &Hub,
    what: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<Option<vigil_core::RunId>, ApiError> {
    let run = match auth::caller(hub.token.as_deref(), &hub.runs, headers) {
        auth::Caller::Person => None,
        auth::Caller::Agent(agent, run) if agent == name => Some(run),
        auth::Caller::Agent(agent, _) => {
            deny(hub, &format!("{what} with the token of a run of {agent}"));
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this token is {agent}'s: an agent's token acts for its own agent only"),
            ));
        }
        auth::Caller::EndedRun if !hub.adopted.load(std::sync::atomic::Ordering::Acquire) => {
            return Err(ApiError::unavailable(
                "vigil is starting: it knows its runs' tokens again once it has adopted them (in a moment)",
            ));
        }
        auth::Caller::EndedRun => {
            deny(
                hub,
                &format!("{what} with the token of a run that has ended"),
            );
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this agent token belongs to a run that has ended (or to another vigil): only the agent's live run may write",
            ));
        }
        auth::Caller::Nobody => {
            deny(hub, &format!("{what} without a valid token"));
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this vigil needs `Authorization: Bearer <token>`: the API's token, or the agent's own VIGIL_AGENT_TOKEN",
            ));
        }
    };
    let snap = hub.view.borrow().clone();
    if snap.agent(name).is_some() {
        return Ok(run);
    }
    if !snap.instances(name).is_empty() {
        return Err(ApiError::bad_request(format!(
            "`{name}` is a template: this is per agent, e.g. {name}@INSTANCE"
        )));
    }
    Err(unknown_agent(name, snap.names()))
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unreachable { .. } => ApiError::unavailable(e.to_string()),
        StoreError::Failed { .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

fn store(hub: &Hub) -> Result<&crate::checkpoints::Store, ApiError> {
    hub.store.as_deref().ok_or_else(|| {
        ApiError::unavailable(
            "this vigil has no checkpoint store (it could not be opened at start: see vigil's log)",
        )
    })
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits")
}

use crate::audit::format_ms as rfc3339;

/// One checkpoint as JSON; the document goes in as the agent wrote it (it was checked to be
/// JSON when it was taken), never parsed and written again.
fn write_checkpoint(out: &mut String, c: &Checkpoint) {
    let _ = write!(
        out,
        "{{\"version\":{},\"ts\":\"{}\",\"document\":{}}}",
        c.version,
        rfc3339(c.ts_ms),
        c.document
    );
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// `PUT /agents/NAME/checkpoint`: a JSON document (≤ 1 MiB) as the agent's next version;
/// `If-Match: <version>` makes it compare-and-swap (412 when another write came first).
pub async fn put_checkpoint(
    State(hub): Hubs,
    Path(name): Path<String>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    // Who asks, before a byte of the body is read.
    authorize(
        &hub,
        &format!("PUT /agents/{name}/checkpoint"),
        &name,
        &headers,
    )?;
    guard::require_json(&headers)?;
    let body = axum::body::to_bytes(request.into_body(), MAX_DOCUMENT)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "a checkpoint is at most {} KiB of JSON (or its body did not arrive whole)",
                    MAX_DOCUMENT / 1024
                ),
            )
        })?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the checkpoint is not UTF-8: {e}")))?;
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(ApiError::bad_request(format!(
            "the checkpoint is not a JSON document: {e}"
        )));
    }
    let bad_precondition = || {
        ApiError::bad_request(
            "If-Match takes the version you read (`If-Match: 7`, or `0` for \"none yet\"); If-None-Match takes `*`",
        )
    };
    // A precondition that cannot be read is refused, never dropped (that would make the
    // write unconditional).
    let header_str = |h| match headers.get(h) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| bad_precondition()),
    };
    let expect = crate::checkpoints::expect_from(
        header_str(header::IF_MATCH)?,
        header_str(header::IF_NONE_MATCH)?,
    )
    .ok_or_else(bad_precondition)?;
    let now = crate::clock::now().wall_ms;
    match store(&hub)?.put(&name, expect, text.trim(), now).await {
        Ok(c) => {
            let status = if c.version == 1 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut res = json_response(
                status,
                json!({ "agent": name, "version": c.version, "ts": rfc3339(c.ts_ms) }).to_string(),
            );
            res.headers_mut().insert(header::ETAG, etag(c.version));
            Ok(res)
        }
        Err(PutError::Conflict { current }) => {
            let message = PutError::Conflict { current }.to_string();
            let mut res = json_response(
                StatusCode::PRECONDITION_FAILED,
                json!({ "error": message, "current_version": current }).to_string(),
            );
            if let Some(v) = current {
                res.headers_mut().insert(header::ETAG, etag(v));
            }
            Ok(res)
        }
        Err(PutError::Store(e)) => Err(store_error(e)),
    }
}

/// `GET /agents/NAME/checkpoint`: the latest version, with its `version` (also the `ETag`).
pub async fn get_checkpoint(
    State(hub): Hubs,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(
        &hub,
        &format!("GET /agents/{name}/checkpoint"),
        &name,
        &headers,
    )?;
    let Some(c) = store(&hub)?.latest(&name).await.map_err(store_error)? else {
        // Told apart from an unknown agent (also a 404) by `checkpoint: null`.
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("`{name}` has no checkpoint yet"), "agent": name, "checkpoint": null })
                .to_string(),
        ));
    };
    let mut body = String::with_capacity(c.document.len() + 96);
    let _ = write!(body, "{{\"agent\":{},", json!(name));
    let mut one = String::new();
    write_checkpoint(&mut one, &c);
    body.push_str(&one[1..]);
    let mut res = json_response(StatusCode::OK, body);
    res.headers_mut().insert(header::ETAG, etag(c.version));
    Ok(res)
}

/// `GET /agents/NAME/checkpoints?limit=N`: the kept versions, newest first.
pub async fn checkpoint_history(
    State(hub): Hubs,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(
        &hub,
        &format!("GET /agents/{name}/checkpoints"),
        &name,
        &headers,
    )?;
    let store = store(&hub)?;
    let limit = match q.get("limit") {
        None => store.keep(),
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::bad_request("limit must be a positive number"))?,
    }
    .min(store.keep())
    .min(MAX_HISTORY);
    let all = store.history(&name, limit).await.map_err(store_error)?;
    // Bounded in bytes too: a history of large documents is cut, the newest kept.
    let mut body = String::new();
    let _ = write!(body, "{{\"agent\":{},\"checkpoints\":[", json!(name));
    let mut truncated = false;
    for (i, c) in all.iter().enumerate() {
        if i > 0 && body.len() + c.document.len() > MAX_HISTORY_BYTES {
            truncated = true;
            break;
        }
        if i > 0 {
            body.push(',');
        }
        write_checkpoint(&mut body, c);
    }
    let _ = write!(body, "],\"truncated\":{truncated}}}");
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    state: String,
    reason: Option<String>,
    until: Option<String>,
}

/// The most versions one history answer holds, and about how many bytes.
const MAX_HISTORY: u32 = 100;
const MAX_HISTORY_BYTES: usize = 8 * 1024 * 1024;

/// The longest reason kept.
const MAX_REASON: usize = 200;

/// `POST /agents/NAME/status`: `{"state": "degraded", "reason": "…", "until": "<RFC 3339>"}`
/// or `{"state": "ok"}`.
pub async fn post_status(
    State(hub): Hubs,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let run = authorize(
        &hub,
        &format!("POST /agents/{name}/status"),
        &name,
        &headers,
    )?;
    guard::require_json(&headers)?;
    let body =
        body.map_err(|e| ApiError::new(e.status(), format!("request body: {}", e.body_text())))?;
    let b: StatusBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be JSON like {{\"state\": \"degraded\", \"reason\": \"exchange 429, breaker open\", \"until\": \"2026-01-01T12:00:00Z\"}} or {{\"state\": \"ok\"}}: {e}"
        ))
    })?;
    let now = crate::clock::now().wall_ms;
    let declared = match b.state.as_str() {
        "ok" => vigil_core::Declared::Ok,
        "degraded" => {
            // (Its secrets are hidden by the loop, which knows the agent's.)
            let reason: String = b
                .reason
                .unwrap_or_default()
                .chars()
                .take(MAX_REASON)
                .collect();
            if reason.trim().is_empty() {
                return Err(ApiError::bad_request(
                    "a degraded state needs a `reason` (what is wrong, for the people reading the journal)",
                ));
            }
            let until = match b.until.as_deref() {
                None => None,
                Some(u) => Some(until_from(u, now)?),
            };
            vigil_core::Declared::Degraded { reason, until }
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown state `{other}`: use \"degraded\" or \"ok\""
            )));
        }
    };
    let answer = ask_loop(&hub, |reply| ApiRequest::Status {
        agent: name.clone(),
        run,
        declared,
        reply,
    })
    .await?;
    // Not taken (the agent is not running): a 409 says so to a client that looks only at the
    // status.
    let code = if answer.accepted {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok(json_response(
        code,
        serde_json::to_string(&answer).unwrap_or_default(),
    ))
}

/// `until` as a wait from now: an RFC 3339 time in the future.
fn until_from(text: &str, now_ms: i64) -> Result<std::time::Duration, ApiError> {
    let t = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
        ApiError::bad_request(format!(
            "`until` must be an RFC 3339 time like 2026-01-01T12:00:00Z: {e}"
        ))
    })?;
    let ms = t.timestamp_millis() - now_ms;
    if ms <= 0 {
        return Err(ApiError::bad_request(format!(
            "`until` ({text}) is not in the future"
        )));
    }
    Ok(std::time::Duration::from_millis(ms as u64))
}
