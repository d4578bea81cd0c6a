//! One function per endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use vigil_core::{AuditAction, Command, Requester};

use super::error::{ApiError, unknown_agent};
use super::{ApiRequest, CommandRefused, Hub, auth, guard};
use crate::audit::{Filter, read_newest};
use crate::view::AgentStatus;

type Hubs = State<Arc<Hub>>;

fn json_bytes(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

pub async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

/// How long `/health` waits for the loop to answer before calling it stalled.
const LOOP_ANSWER: Duration = Duration::from_secs(2);

/// vigil itself: up, its loop turning, and nothing it depends on failing.
pub async fn health(State(hub): Hubs) -> Response {
    let view = hub.view.borrow().clone();
    let asked = Instant::now();
    let (reply, answer) = tokio::sync::oneshot::channel();
    // Queued behind whatever waits for the loop already: a loop that is merely busy answers.
    let asked_and_answered = async {
        hub.requests.send(ApiRequest::Ping { reply }).await.is_ok() && answer.await.is_ok()
    };
    let turning = tokio::time::timeout(LOOP_ANSWER, asked_and_answered)
        .await
        .unwrap_or(false);
    let lag_ms = asked.elapsed().as_millis() as u64;
    let problems = hub.health.problems();
    let status = if !turning {
        "stalled"
    } else if !problems.is_empty() {
        "degraded"
    } else if view.shutting_down {
        "stopping"
    } else {
        "ok"
    };
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": hub.started.elapsed().as_secs_f64().round(),
        "agents": view.agents.len(),
        "loop_lag_ms": lag_ms,
        "problems": problems,
        // How a stopped run is proven gone: by its empty cgroup, or — without cgroups — by
        // no process left in its group or session or carrying its marks (a process that
        // dropped all of them cannot be seen).
        "containment": if hub.health.runs_in_cgroups.load(std::sync::atomic::Ordering::Relaxed) {
            "cgroup"
        } else {
            "process group and marks"
        },
    });
    let code = match status {
        "stalled" | "degraded" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (code, Json(body)).into_response()
}

pub async fn status_all(State(hub): Hubs) -> Response {
    json_bytes(hub.status_body())
}

/// `{"incidents": [...]}`: open ones first, then the newest resolved.
pub async fn incidents(State(hub): Hubs) -> Response {
    let view = hub.view.borrow().clone();
    Json(json!({ "incidents": &*view.incidents })).into_response()
}

/// The whole fleet of the cluster (`vigil fleet status --json`), read from its database; 404
/// for a vigil without `[cluster]`, 503 when the database does not answer.
pub async fn fleet(State(hub): Hubs) -> Result<Response, ApiError> {
    let Some(reader) = &hub.fleet else {
        return Err(ApiError::not_found(
            "this vigil is not part of a cluster (its config has no [cluster])",
        ));
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), reader.read()).await {
        Ok(Ok(fleet)) => Ok(Json(fleet).into_response()),
        Ok(Err(e)) => Err(ApiError::unavailable(format!(
            "the cluster's database: {e}"
        ))),
        Err(_) => Err(ApiError::unavailable(
            "the cluster's database did not answer within 5s",
        )),
    }
}

/// `{"runbooks": [...]}`: runs at work or waiting, then the newest ended ones.
pub async fn runbooks(State(hub): Hubs) -> Response {
    let view = hub.view.borrow().clone();
    Json(json!({ "runbooks": &*view.runbooks })).into_response()
}

/// One agent, or `{"agents": [...]}` for every instance of a template.
pub async fn status_one(State(hub): Hubs, Path(name): Path<String>) -> Result<Response, ApiError> {
    let view = hub.view.borrow().clone();
    let now_ms = crate::clock::now().wall_ms;
    let checkpoints = hub.checkpoints();
    if let Some(a) = view.agent(&name) {
        let status = AgentStatus::of(a, &view, now_ms).with_checkpoint(&checkpoints, now_ms);
        return Ok(Json(status).into_response());
    }
    let instances: Vec<AgentStatus> = view
        .instances(&name)
        .into_iter()
        .map(|a| AgentStatus::of(a, &view, now_ms).with_checkpoint(&checkpoints, now_ms))
        .collect();
    if !instances.is_empty() {
        return Ok(Json(json!({ "agents": instances })).into_response());
    }
    Err(unknown_agent(&name, view.names()))
}

/// `GET /agents/NAME/explain`: the last failure's evidence and verdicts.
pub async fn explain(
    State(hub): Hubs,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The evidence behind a failure (log tails, the evidence command's output, the advisor's
    // answer) is redacted, but it is the agent's own words: with a token set, only those who
    // hold it read it. Status, audit and metrics carry single redacted lines and stay open.
    if !auth::authorized(hub.token.as_deref(), &headers) {
        deny(
            &hub,
            &format!("GET /agents/{name}/explain from {peer} without a valid token"),
        );
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this vigil needs `Authorization: Bearer <token>` to show evidence",
        ));
    }
    let snap = hub.view.borrow().clone();
    if let Some(mut case) = hub.casebook.explain(&name) {
        // What the agent is, when vigil did not spawn it: a container.
        if let Some(target) = snap.agent(&name).and_then(|a| a.target.clone()) {
            case["target"] = serde_json::Value::String(target);
        }
        return Ok(Json(case).into_response());
    }
    if let Some(conflict) = snap.agent(&name).and_then(|a| a.conflict.as_ref()) {
        return Err(ApiError::not_found(format!(
            "`{name}` has not failed: it was not started, because {} (what to do: `vigil status {name}`, the README's \"Agents started elsewhere\")",
            conflict.1
        )));
    }
    if snap.agent(&name).is_some() {
        return Err(ApiError::not_found(format!(
            "`{name}` has not failed since vigil started (earlier decisions are in the audit journal: GET /audit?agent={name})"
        )));
    }
    let instances = snap.instances(&name);
    if !instances.is_empty() {
        return Err(ApiError::not_found(format!(
            "`{name}` is a template: explain one of its instances, e.g. `{}`",
            instances[0].name
        )));
    }
    Err(unknown_agent(&name, snap.names()))
}

#[derive(Deserialize, Default)]
struct CommandBody {
    reason: Option<String>,
    /// `start` only: start even though the agent's command runs outside vigil.
    #[serde(default)]
    force: bool,
}

/// A change asked for by a person (or a program acting for one): the token when one is set,
/// a JSON body (web pages cannot send one unasked), and its optional `reason`.
fn authorize_change(
    hub: &Hub,
    what: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<CommandBody, ApiError> {
    match auth::caller(hub.token.as_deref(), &hub.runs, headers) {
        auth::Caller::Person => {}
        auth::Caller::Agent(agent, _) => {
            deny(hub, &format!("{what} with the token of a run of {agent}"));
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "an agent's token (VIGIL_AGENT_TOKEN) writes its own checkpoint, heartbeat and status only; it controls nothing",
            ));
        }
        auth::Caller::EndedRun | auth::Caller::Nobody => {
            deny(hub, &format!("{what} without a valid token"));
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this vigil needs `Authorization: Bearer <token>` for changes",
            ));
        }
    }
    body_json(headers, body)
}

/// The optional JSON body of a change, with its `reason`.
fn body_json(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<CommandBody, ApiError> {
    guard::require_json(headers)?;
    let body =
        body.map_err(|e| ApiError::new(e.status(), format!("request body: {}", e.body_text())))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(CommandBody::default());
    }
    let mut parsed: CommandBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be empty or JSON like {{\"reason\": \"deploying v2\"}}: {e}"
        ))
    })?;
    parsed.reason = parsed.reason.filter(|r| !r.trim().is_empty());
    Ok(parsed)
}

fn requester(headers: &HeaderMap) -> Requester {
    match headers.get("x-vigil-client").and_then(|v| v.to_str().ok()) {
        Some("cli") => Requester::Cli,
        _ => Requester::Api,
    }
}

/// Hand a request to the supervision loop and wait for its answer.
pub(super) async fn ask_loop<T>(
    hub: &Hub,
    request: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, CommandRefused>>) -> ApiRequest,
) -> Result<T, ApiError> {
    let gone = || ApiError::unavailable("vigil is shutting down");
    let (reply, answer) = tokio::sync::oneshot::channel();
    hub.requests
        .send(request(reply))
        .await
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?.map_err(refusal)
}

fn refusal(refused: CommandRefused) -> ApiError {
    match refused {
        CommandRefused::UnknownAgent(_) => ApiError::not_found(refused.to_string()),
        CommandRefused::JournalUnwritable { .. } => ApiError::unavailable(refused.to_string()),
    }
}

/// `POST /reload`: read the config again (as SIGHUP does) and answer with what changed, or
/// with the config's errors (422) when it was refused and nothing changed.
pub async fn reload(
    State(hub): Hubs,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize_change(&hub, &format!("POST /reload from {peer}"), &headers, body)?;
    let by = requester(&headers);
    let answer = ask_loop(&hub, |reply| ApiRequest::Reload { by, reply }).await?;
    let code = if answer.applied {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((code, Json(answer)).into_response())
}

/// `POST /shutdown`: stop every agent and exit, as SIGTERM does.
pub async fn shutdown(
    State(hub): Hubs,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize_change(&hub, &format!("POST /shutdown from {peer}"), &headers, body)?;
    let by = requester(&headers);
    let stopping = ask_loop(&hub, |reply| ApiRequest::Shutdown { by, reply }).await?;
    Ok(Json(json!({ "stopping": stopping })).into_response())
}

/// A command's name in a URL (and in `vigil_commands`, from another host).
pub(crate) fn parse_command(s: &str) -> Option<Command> {
    match s {
        "start" => Some(Command::Start),
        "stop" => Some(Command::Stop),
        "restart" => Some(Command::Restart),
        "reset" => Some(Command::Reset),
        _ => None,
    }
}

/// `POST /agents/NAME/{restart,stop,start,reset,heartbeat}`.
pub async fn command(
    State(hub): Hubs,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((name, verb)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if verb != "heartbeat" && parse_command(&verb).is_none() {
        return Err(ApiError::not_found(format!(
            "unknown action `{verb}`: use restart, stop, start, reset or heartbeat"
        )));
    }
    let what = format!("POST /agents/{name}/{verb} from {peer}");
    if verb == "heartbeat" {
        super::agents::authorize(&hub, &what, &name, &headers)?;
        body_json(&headers, body)?;
        return heartbeat(&hub, &name);
    }
    let body = authorize_change(&hub, &what, &headers, body)?;
    let by = requester(&headers);
    let command = match parse_command(&verb).expect("checked above") {
        Command::Start if body.force => Command::ForceStart,
        _ if body.force => {
            return Err(ApiError::bad_request(format!(
                "`force` applies to start only (it starts an agent whose command runs outside vigil), not to {verb}"
            )));
        }
        command => command,
    };
    let note = body.reason;
    let results = ask_loop(&hub, |reply| ApiRequest::Command {
        target: name.clone(),
        command,
        by,
        note,
        reply,
    })
    .await?;
    let all_refused = results.iter().all(|r| !r.ok);
    let code = if all_refused {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok((code, Json(json!({ "results": results }))).into_response())
}

/// Heartbeats are checked against the snapshot and handed over without waiting: they must
/// be cheap enough for every agent to send often.
fn heartbeat(hub: &Hub, name: &str) -> Result<Response, ApiError> {
    let snap = hub.view.borrow().clone();
    let Some(agent) = snap.agent(name) else {
        if !snap.instances(name).is_empty() {
            return Err(ApiError::bad_request(format!(
                "`{name}` is a template: heartbeats are per agent, e.g. {name}@INSTANCE"
            )));
        }
        return Err(unknown_agent(name, snap.names()));
    };
    if !agent.takes_heartbeats {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("agent `{name}` has no check of kind \"api\" to take heartbeats"),
        ));
    }
    let mut pending = hub
        .pending_heartbeats
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !pending.contains(name) {
        hub.requests
            .try_send(ApiRequest::Heartbeat {
                agent: name.to_string(),
            })
            .map_err(|_| ApiError::unavailable("too many requests queued; try again"))?;
        pending.insert(name.to_string());
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": true }))).into_response())
}

/// Journal a refused request — at most once a second, with a count of the ones in between.
pub(super) fn deny(hub: &Hub, what: &str) {
    let mut guard = hub.denied.lock().unwrap_or_else(|e| e.into_inner());
    let (last, suppressed) = &mut *guard;
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
        *suppressed += 1;
        return;
    }
    let what = if *suppressed > 0 {
        format!("{what} (and {suppressed} more refused since the last record)")
    } else {
        what.to_string()
    };
    *last = Some(now);
    *suppressed = 0;
    let _ = hub.requests.try_send(ApiRequest::Denied { what });
}

pub async fn audit(
    State(hub): Hubs,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    for key in q.keys() {
        if !["agent", "action", "since", "limit"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{key}`: use agent, action, since, limit"
            )));
        }
    }
    let action = q.get("action").filter(|a| !a.is_empty()).cloned();
    if let Some(a) = &action
        && AuditAction::from_name(a).is_none()
    {
        let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "`action={a}` is not an audit action; known: {}",
            known.join(", ")
        )));
    }
    let since = match q.get("since").filter(|s| !s.is_empty()) {
        Some(s) => Some(
            crate::audit::parse_since(s, SystemTime::now())
                .map_err(|e| ApiError::bad_request(format!("since {e}")))?,
        ),
        None => None,
    };
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("`limit={l}` must be a number from 1 to 10000"))
            })?,
        None => 100,
    };
    let filter = Filter {
        agent: q.get("agent").filter(|a| !a.is_empty()).cloned(),
        action,
        since,
        limit: Some(limit),
    };
    let path = hub.journal.clone();
    let records = tokio::task::spawn_blocking(move || read_newest(&path, &filter))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| ApiError::unavailable(format!("cannot read the journal: {e}")))?;
    Ok(Json(json!({ "records": records })).into_response())
}

pub async fn metrics(State(hub): Hubs, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        hub.metrics.render(openmetrics),
    )
        .into_response()
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {}; see GET /, /health, /status, /status/NAME, /agents/NAME/explain, /audit, /events, /metrics, POST /agents/NAME/ACTION",
        uri.path()
    ))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
