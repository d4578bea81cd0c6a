//! The systemd unit vigil itself runs in, if any: vigil never supervises itself.

use std::sync::OnceLock;

/// The unit named last in vigil's own cgroup (`0::/system.slice/vigil.service`).
pub fn own_unit() -> Option<&'static str> {
    static OWN: OnceLock<Option<String>> = OnceLock::new();
    OWN.get_or_init(|| {
        std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| unit_in(&text))
    })
    .as_deref()
}

/// vigil's own cgroup path (`/system.slice/vigil.service`), as a unit's `ControlGroup` says it.
pub fn own_cgroup() -> Option<&'static str> {
    static OWN: OnceLock<Option<String>> = OnceLock::new();
    OWN.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        // cgroup v2's line, else v1's systemd hierarchy.
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .or_else(|| {
                text.lines()
                    .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
            })
            .map(str::to_string)
    })
    .as_deref()
}

fn unit_in(cgroup: &str) -> Option<String> {
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .or_else(|| {
            cgroup
                .lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|(_, p)| p))
        })?;
    path.split('/')
        .rev()
        .find(|seg| seg.ends_with(".service") || seg.ends_with(".scope"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_is_the_last_one_in_the_cgroup_path() {
        assert_eq!(
            unit_in("0::/system.slice/vigil.service").as_deref(),
            Some("vigil.service")
        );
        assert_eq!(
            unit_in("12:memory:/x\n1:name=systemd:/system.slice/vigil@a.service/sub\n").as_deref(),
            Some("vigil@a.service")
        );
        assert_eq!(
            unit_in("0::/user.slice/user-0.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(unit_in("0::/"), None);
    }
}
