//! How agents are run and controlled. Today: the `process` driver (vigil spawns them).

pub mod cgroup;
pub mod children;
mod clone;
pub mod exits;
pub mod process;
pub mod proctree;
pub mod spawn;
pub mod tree;

pub use children::{Children, ExitWatch};
pub use process::{Launch, ProcessDriver};
