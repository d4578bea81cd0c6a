//! Waiting for what is left of a run — processes of its tree that outlived its main process —
//! without polling: one look at the run's cgroup (or, without cgroups, at the process
//! table), then each member's pidfd wakes the waiter
//! when that member exits; only then is the table looked at again (a dying tree may have
//! forked meanwhile). When a member cannot be watched (no file descriptors left), the table
//! is looked at again a second later instead: slower, but the wait still ends.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tracing::warn;

use super::ProcessDriver;
use super::children::ExitWatch;

/// How long to wait before looking again when members cannot be watched.
const FALLBACK: Duration = Duration::from_secs(1);

/// Resolves once no process of the run is alive.
pub async fn wait_empty(driver: ProcessDriver, main_pid: u32, tag: String, main_gone: u64) {
    let mut warned = false;
    loop {
        let (d, t) = (driver.clone(), tag.clone());
        // The main process has exited: only what is proven the run's counts.
        let scan = tokio::task::spawn_blocking(move || d.remaining(main_pid, &t, main_gone)).await;
        let members = match scan {
            Ok(members) => members,
            Err(e) => {
                warn!("cannot read the process table ({e}); looking again in {FALLBACK:?}");
                tokio::time::sleep(FALLBACK).await;
                continue;
            }
        };
        if members.is_empty() {
            return;
        }
        let mut exits = FuturesUnordered::new();
        let mut unwatched = false;
        for (pid, started) in members {
            match ExitWatch::new(pid) {
                // Only if the pid still names the process the table saw.
                Ok(w) if super::proctree::stat(pid).is_some_and(|p| p.start_time == started) => {
                    exits.push(w.exited())
                }
                Ok(_) => {}
                // Gone between the look and the watch.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    if !warned {
                        warn!(
                            "cannot watch pid {pid} ({e}); looking at the process table every {FALLBACK:?} instead"
                        );
                        warned = true;
                    }
                    unwatched = true;
                }
            }
        }
        if unwatched {
            // Whichever comes first: a watched member's exit, or the time to look again.
            let _ = tokio::time::timeout(FALLBACK, exits.next()).await;
        } else {
            while exits.next().await.is_some() {}
        }
    }
}
