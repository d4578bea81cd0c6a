//! The demo's stand-in for the people vigil tells: a local webhook (`[notify.demo-sink]`) that
//! hands what it receives to the demo, which prints it. A real fleet points the same channel
//! at Slack, Telegram, email or its own webhook.

use std::sync::mpsc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;

/// Listening on 127.0.0.1 (its port, for the config); each notification's title arrives on
/// the receiver. The server lives on its own thread for as long as the demo.
pub fn start() -> Result<(u16, mpsc::Receiver<String>), String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot open the demo's notification sink: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot open the demo's notification sink: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("demo-sink".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = Router::new().route("/notify", post(receive)).with_state(tx);
                let _ = axum::serve(listener, app).await;
            });
        })
        .map_err(|e| format!("cannot start the demo's notification sink: {e}"))?;
    Ok((port, rx))
}

async fn receive(State(tx): State<mpsc::Sender<String>>, body: Bytes) -> &'static str {
    let title = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["title"].as_str().map(str::to_string))
        .unwrap_or_else(|| "(a notification without a title)".into());
    let _ = tx.send(title);
    "ok"
}
