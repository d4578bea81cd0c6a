//! Which container vigil itself runs in, if any: vigil never supervises itself.
//!
//! Docker and Podman bind-mount the container's `hostname` file from a folder named by the
//! container's id (`/var/lib/docker/containers/<id>/hostname`, `…/overlay-containers/<id>/
//! userdata/hostname`), which `/proc/self/mountinfo` shows whatever the cgroup namespace;
//! with the host's cgroup namespace, `/proc/self/cgroup` names it too (`docker-<id>.scope`,
//! `/docker/<id>`, `libpod-<id>.scope`).

use std::sync::OnceLock;

/// The container vigil runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnContainer {
    /// Its full id (64 hex digits).
    pub id: String,
}

impl OwnContainer {
    /// Whether `name` (as a config or a person writes it) is this container: its id or an
    /// unambiguous prefix of it (12 digits or more, as `docker ps` shows it). A name is
    /// resolved by the engine, and compared by id before each start.
    pub fn is_named(&self, name: &str) -> bool {
        name.len() >= 12 && self.id.starts_with(name)
    }
}

/// vigil's own container, read once.
pub fn own_container() -> Option<&'static OwnContainer> {
    static OWN: OnceLock<Option<OwnContainer>> = OnceLock::new();
    OWN.get_or_init(|| {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        container_id_in(&hostname_mount(&mounts))
            .or_else(|| container_id_in(&cgroup))
            .map(|id| OwnContainer { id })
    })
    .as_ref()
}

/// The mount of `/etc/hostname` only: on a host, the engine's own mounts (each container's
/// `shm`, say) name other containers.
fn hostname_mount(mountinfo: &str) -> String {
    mountinfo
        .lines()
        .filter(|l| l.split_whitespace().nth(4) == Some("/etc/hostname"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first container id in `text` that follows a marker engines use.
fn container_id_in(text: &str) -> Option<String> {
    const MARKERS: &[&str] = &[
        "/containers/",
        "-containers/",
        "docker-",
        "/docker/",
        "libpod-",
    ];
    for marker in MARKERS {
        for (at, _) in text.match_indices(marker) {
            let rest = &text[at + marker.len()..];
            let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            if id.len() == 64 {
                return Some(id);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_id() -> String {
        "3f2a9c0d1e4b5a69".repeat(4)
    }

    #[test]
    fn the_id_is_found_where_docker_podman_and_systemd_put_it() {
        let id = &full_id();
        let docker_mount = format!(
            "612 598 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw"
        );
        let podman_mount = format!(
            "1 2 0:1 /var/lib/containers/storage/overlay-containers/{id}/userdata/hostname /etc/hostname rw - tmpfs tmpfs rw"
        );
        for text in [
            hostname_mount(&docker_mount),
            hostname_mount(&podman_mount),
            format!("0::/system.slice/docker-{id}.scope"),
            format!("12:memory:/docker/{id}"),
            format!("0::/machine.slice/libpod-{id}.scope"),
        ] {
            assert_eq!(
                container_id_in(&text).as_deref(),
                Some(id.as_str()),
                "{text}"
            );
        }
    }

    #[test]
    fn a_host_s_own_files_name_no_container() {
        let host = "0::/user.slice/user-0.slice/session-1.scope\n\
                    25 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                    40 25 0:36 / /var/lib/docker/containers rw - ext4 /dev/vda1 rw";
        assert_eq!(container_id_in(host), None);
        // A host's mounts of other containers' files name them, not vigil.
        let other = format!(
            "70 25 0:50 / /var/lib/docker/containers/{}/mounts/shm rw - tmpfs shm rw",
            full_id()
        );
        assert_eq!(container_id_in(&hostname_mount(&other)), None);
    }

    #[test]
    fn only_a_long_enough_prefix_names_it() {
        let own = OwnContainer { id: full_id() };
        assert!(own.is_named(&full_id()[..12]));
        assert!(own.is_named(&full_id()));
        assert!(
            !own.is_named(&full_id()[..6]),
            "too short to be unambiguous"
        );
        assert!(!own.is_named("market-feed"));
    }
}
