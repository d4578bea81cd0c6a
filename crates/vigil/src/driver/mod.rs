//! How agents are run and controlled: the `process` driver (vigil spawns them, or takes over
//! the agent's process started elsewhere — `outside`) and the `docker` driver (an existing
//! container, through the engine's API).

pub mod cgroup;
pub mod children;
mod clone;
pub mod docker;
pub mod exits;
pub(crate) mod link;
pub mod outside;
pub mod process;
pub mod proctree;
pub mod spawn;
pub mod tree;
pub mod units;

pub use children::{Children, ExitWatch};
pub use process::{Launch, ProcessDriver};
