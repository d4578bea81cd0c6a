//! Waiting for what is left of a run — processes of its tree that outlived its main process —
//! without polling: one look at the process table, then each member's pidfd wakes the waiter
//! when that member exits; only then is the table looked at again (a dying tree may have
//! forked meanwhile).

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::ProcessDriver;
use super::children::ExitWatch;

/// Why a tree could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot read the process table: {0}")]
    Scan(#[from] tokio::task::JoinError),
    #[error("cannot watch pid {pid}: {source}")]
    Pidfd { pid: u32, source: std::io::Error },
}

/// Resolves once no process of the run is alive.
pub async fn wait_empty(
    driver: ProcessDriver,
    main_pid: u32,
    tag: String,
) -> Result<(), WatchError> {
    loop {
        let (d, t) = (driver.clone(), tag.clone());
        let members = tokio::task::spawn_blocking(move || {
            let procs = d.snapshot();
            d.members(main_pid, &t, &procs)
        })
        .await?;
        if members.is_empty() {
            return Ok(());
        }
        let mut exits = FuturesUnordered::new();
        for pid in members {
            match ExitWatch::new(pid) {
                Ok(w) => exits.push(w.exited()),
                // Gone between the look and the watch.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => return Err(WatchError::Pidfd { pid, source }),
            }
        }
        while exits.next().await.is_some() {}
    }
}
