//! The agent's half of self-healing, for Rust agents that vigil supervises.
//!
//! vigil restarts an agent that crashed or stalled; this crate lets the agent help:
//!
//! - [`Agent::heartbeat`] and [`Agent::progress`]: signs of life and of work, over vigil's
//!   notify socket (`NOTIFY_SOCKET`, an agent with a `notify` check) or its API (an `api`
//!   check).
//! - [`Agent::degraded`] / [`Agent::ok`]: "I pause on purpose" (a rate limit, an open circuit
//!   breaker). vigil shows it, and does not restart the agent for a stall until the time it
//!   names, at most its policy's `max_degraded`.
//! - [`Checkpoint`]: the agent's own state, kept by vigil (versioned, compare-and-swap, so a
//!   zombie copy cannot overwrite the live one), so a restarted agent resumes where it was.
//!   When vigil cannot be reached, a checkpoint goes to a local file (atomic and fsynced) and
//!   is sent to vigil once it is back — nothing is lost, and a newer version is never
//!   overwritten by an older one.
//!
//! Outside vigil (run by hand, no `VIGIL_*` in the environment) every call is a no-op, with
//! one warning on stderr, and checkpoints live in the local file only.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use vigil_agent::{Agent, Checkpoint};
//!
//! #[derive(Serialize, Deserialize, Default)]
//! struct State { last_ts: f64, positions: Vec<String> }
//!
//! let agent = Agent::from_env();
//! let mut checkpoint = Checkpoint::<State>::new(&agent);
//! let mut state = checkpoint.load().ok().flatten().unwrap_or_default();
//! agent.ready();
//! loop {
//!     // … one unit of real work …
//!     state.last_ts += 1.0;
//!     checkpoint.save(&state).ok();
//!     agent.progress(None);
//! #   break;
//! }
//! ```
//!
//! With the `tokio` feature, [`AsyncAgent`] and [`AsyncCheckpoint`] do the same from async code.
//!
//! An agent with `placement = "exclusive"` (one node of a vigil cluster at a time) asks
//! [`fence_ok`] before each action that must never happen twice, and may fence its own
//! writes with [`fence_epoch`].

mod agent;
mod api;
#[cfg(feature = "tokio")]
mod asynchronous;
mod checkpoint;
mod env;
mod fence;
mod local;
mod notify;

pub use agent::Agent;
#[cfg(feature = "tokio")]
pub use asynchronous::{AsyncAgent, AsyncCheckpoint};
pub use checkpoint::{Checkpoint, CheckpointError};
pub use env::Env;
pub use fence::{fence_epoch, fence_ok};
