//! vigil as a `Type=notify` systemd service: READY=1 once the fleet is up, WATCHDOG=1 from the
//! supervision loop, STOPPING=1 on the way out — and systemd's variables never reach agents.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, VIGIL, unique};

#[test]
fn vigil_tells_systemd_it_is_ready_and_alive_and_agents_cannot_speak_for_it() {
    let m = unique("sd");
    let f = Fleet::new(&format!(
        r#"[agents.bot]
cwd = "."
command = ["sh", "-c", "echo \"notify=${{NOTIFY_SOCKET:-none}} watchdog=${{WATCHDOG_USEC:-none}} {m}\" > env.txt; exec sleep 600"]
"#
    ));
    let socket_path = f.path("systemd.sock");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut vigil = Command::new(VIGIL)
        .args(["run", "-c"])
        .arg(f.config())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    while got
        .iter()
        .filter(|m: &&String| m.as_str() == "WATCHDOG=1")
        .count()
        < 4
    {
        let n = systemd.recv(&mut buf).expect("a message from vigil");
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        assert!(started.elapsed() < Duration::from_secs(10), "{got:?}");
    }
    assert!(
        got[0].starts_with("READY=1\nSTATUS=supervising 1 agents"),
        "{got:?}"
    );
    // Four pings at 200 ms (half of WATCHDOG_USEC) take about 600 ms, not seconds.
    assert!(started.elapsed() < Duration::from_secs(5));

    common::unsafe_kill(vigil.id() as i32, 15);
    let mut stopping = false;
    while let Ok(n) = systemd.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    vigil.wait().unwrap();
    assert!(stopping, "no STOPPING=1");
    let env = common::read(&f.path("env.txt"));
    assert!(env.starts_with("notify=none watchdog=none"), "{env}");
}
