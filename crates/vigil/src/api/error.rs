//! Every API error is a 4xx (or 503) with `{"error": "..."}` that says what is wrong.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// "no agent named `bto`; did you mean `bot`?"
pub fn unknown_agent<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> ApiError {
    ApiError::not_found(unknown_agent_message(name, known))
}

pub fn unknown_agent_message<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.collect();
    match crate::config::did_you_mean(name, &known) {
        Some(k) => format!("no agent or template named `{name}`; did you mean `{k}`?"),
        None => format!("no agent or template named `{name}`"),
    }
}
