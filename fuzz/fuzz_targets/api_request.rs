//! Any bytes sent to the API as one HTTP/1.1 connection: the real server (hyper, the guard,
//! every handler) answers — never a 500, never a panic, never a hang. The supervision loop's
//! side is a stand-in that refuses every command.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vigil::api::{self, ApiRequest, CommandRefused};

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        ));
        let state = Box::leak(Box::new(std::env::temp_dir().join("vigil-fuzz-api")));
        std::fs::create_dir_all(&*state).expect("state dir");
        let config = vigil::config::ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            // The seeds' `POST /alertmanager` carries it: the payload parser is reached.
            alert_token: Some("fuzz-alert-token-0123456789".into()),
            ..Default::default()
        };
        let (journal, _) = vigil::audit::Journal::open(&state.join("audit.jsonl"));
        let health = Arc::new(vigil::health::Health::new(journal.health()));
        // The checkpoint handlers have a real store (SQLite in the scratch dir) behind them;
        // its pools are made inside the runtime, as vigil makes them.
        let store = {
            let _entered = runtime.enter();
            vigil::checkpoints::Store::open(&Default::default(), state).expect("store")
        };
        let agents = api::AgentFacing {
            runs: Default::default(),
            adopted: Arc::new(true.into()),
            store: Some(Arc::new(store)),
        };
        let mut started = api::start(
            &config,
            state,
            "fuzz",
            runtime.handle(),
            health,
            agents,
            None,
        )
        .expect("the API starts");
        let addr = started.addr.expect("listening");
        runtime.spawn(async move {
            while let Some(request) = started.requests.recv().await {
                match request {
                    ApiRequest::Command { target, reply, .. } => {
                        let _ = reply.send(Err(CommandRefused::UnknownAgent(target)));
                    }
                    ApiRequest::Ping { reply } => {
                        let _ = reply.send(());
                    }
                    ApiRequest::Alerts { reply, .. } => {
                        let _ = reply.send(Ok(Default::default()));
                    }
                    ApiRequest::Status { agent, reply, .. } => {
                        let _ = reply.send(Err(CommandRefused::UnknownAgent(agent)));
                    }
                    _ => {}
                }
            }
        });
        addr
    })
}

fuzz_target!(|request: &[u8]| {
    let Ok(mut stream) = TcpStream::connect(server()) else {
        return;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(request);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    for status in text.match_indices("HTTP/1.1 ") {
        let code = &text[status.0 + 9..(status.0 + 12).min(text.len())];
        assert_ne!(
            code,
            "500",
            "a 500 for {:?}:\n{text}",
            String::from_utf8_lossy(request)
        );
    }
});
