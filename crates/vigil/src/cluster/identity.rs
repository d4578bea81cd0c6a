//! Which vigil is node `fra-1`: an id made once per state dir (`cluster-node.id`) and kept
//! with the node's row. Two vigils configured with one node name would otherwise both renew
//! that node's leases and both run its exclusive agents; the second one, whose id differs
//! while the first is alive, is refused the name: it renews and takes nothing, and says why.
//! A vigil restarted on its own state dir keeps its id, so it is the same node at once; the
//! boot's id is part of it, so a machine cloned with its state dir (an image of a VM) is
//! another vigil all the same.

use std::io;
use std::path::Path;

const FILE: &str = "cluster-node.id";

pub fn load_or_create(state_dir: &Path) -> io::Result<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    Ok(format!("{}-{}", of_state_dir(state_dir)?, boot.trim()))
}

fn of_state_dir(state_dir: &Path) -> io::Result<String> {
    let path = state_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if id.trim().len() == 32 && id.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
            return Ok(id.trim().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::owned_file::write_durably(&path, id.as_bytes())?;
    Ok(id)
}
