//! What systemd's `PropertiesChanged` signals about a unit say. systemd sends one per change
//! for the unit's type (`…systemd1.Service`: its main process, how it ended) and then one for
//! the unit itself (`…systemd1.Unit`: active state, run), in that order, each with the new
//! values — so a run's end and how it ended are known from the signals alone, without asking.

use std::collections::HashMap;

use zbus::Variant;
use zbus::message::Message;

const SERVICE: &str = "org.freedesktop.systemd1.Service";
const UNIT: &str = "org.freedesktop.systemd1.Unit";

/// One signal's news.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Changed {
    /// How the service's main process is (or ended).
    Service(MainProcess),
    /// The unit's state and run.
    Unit {
        active_state: String,
        sub_state: String,
        invocation: String,
    },
    /// Nothing vigil follows (another interface, a value missing: the state is read instead).
    #[default]
    Other,
}

/// A service's main process, as the last signal said.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MainProcess {
    pub pid: u32,
    /// When it ended (µs since the epoch); 0 while it runs.
    pub exited_us: u64,
    pub code: i32,
    pub status: i32,
}

pub fn changed(message: &Message) -> Changed {
    let body = message.body();
    let Ok((interface, values, _)) =
        body.deserialize::<(String, HashMap<String, Variant<'_>>, Vec<String>)>()
    else {
        return Changed::Other;
    };
    read(&interface, &values).unwrap_or_default()
}

fn read(interface: &str, values: &HashMap<String, Variant<'_>>) -> Option<Changed> {
    let get = |name: &str| values.get(name).map(plain);
    match interface {
        SERVICE => Some(Changed::Service(MainProcess {
            pid: u32::try_from(get("MainPID")?).ok()?,
            exited_us: u64::try_from(get("ExecMainExitTimestamp")?).ok()?,
            code: i32::try_from(get("ExecMainCode")?).ok()?,
            status: i32::try_from(get("ExecMainStatus")?).ok()?,
        })),
        UNIT => Some(Changed::Unit {
            active_state: String::try_from(get("ActiveState")?).ok()?,
            sub_state: String::try_from(get("SubState")?).ok()?,
            invocation: hex(&Vec::<u8>::try_from(get("InvocationID")?).ok()?),
        }),
        _ => None,
    }
}

/// A value, out of the variant that may wrap it.
fn plain<'a>(v: &Variant<'a>) -> Variant<'a> {
    match v {
        Variant::Variant(inner) => plain(inner),
        v => v.clone(),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(interface: &str, values: HashMap<&str, Variant<'_>>) -> Message {
        Message::signal(
            "/org/freedesktop/systemd1/unit/bot_2eservice",
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
        )
        .build(&(interface, values, Vec::<String>::new()))
        .unwrap()
    }

    #[test]
    fn a_service_signal_says_how_the_main_process_ended() {
        let m = signal(
            SERVICE,
            HashMap::from([
                ("MainPID", Variant::from(0u32)),
                (
                    "ExecMainExitTimestamp",
                    Variant::from(1_700_000_000_000_000u64),
                ),
                ("ExecMainCode", Variant::from(1i32)),
                ("ExecMainStatus", Variant::from(7i32)),
                ("StatusText", Variant::from("ignored")),
            ]),
        );
        assert_eq!(
            changed(&m),
            Changed::Service(MainProcess {
                pid: 0,
                exited_us: 1_700_000_000_000_000,
                code: 1,
                status: 7,
            })
        );
    }

    #[test]
    fn a_unit_signal_says_its_state_and_run() {
        let m = signal(
            UNIT,
            HashMap::from([
                ("ActiveState", Variant::from("failed")),
                ("SubState", Variant::from("failed")),
                ("InvocationID", Variant::from(vec![0xabu8, 0x01])),
            ]),
        );
        assert_eq!(
            changed(&m),
            Changed::Unit {
                active_state: "failed".into(),
                sub_state: "failed".into(),
                invocation: "ab01".into(),
            }
        );
    }

    #[test]
    fn a_signal_missing_a_value_or_of_another_kind_says_nothing() {
        let partial = signal(
            UNIT,
            HashMap::from([("ActiveState", Variant::from("failed"))]),
        );
        assert_eq!(changed(&partial), Changed::Other);
        let wrong_type = signal(
            SERVICE,
            HashMap::from([
                ("MainPID", Variant::from("one")),
                ("ExecMainExitTimestamp", Variant::from(1u64)),
                ("ExecMainCode", Variant::from(1i32)),
                ("ExecMainStatus", Variant::from(7i32)),
            ]),
        );
        assert_eq!(changed(&wrong_type), Changed::Other);
        let other = signal("org.freedesktop.systemd1.Socket", HashMap::new());
        assert_eq!(changed(&other), Changed::Other);
    }
}
