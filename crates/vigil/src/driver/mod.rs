//! How agents are run and controlled. Today: the `process` driver (vigil spawns them, or takes
//! over the agent's process started elsewhere — `outside`).

pub mod cgroup;
pub mod children;
mod clone;
pub mod exits;
pub mod outside;
pub mod process;
pub mod proctree;
pub mod spawn;
pub mod tree;

pub use children::{Children, ExitWatch};
pub use process::{Launch, ProcessDriver};
