//! vigil's daemon, command line and edges, as a library: the `vigil` binary is a thin `main`
//! over it, and the fuzz targets (`fuzz/`) reach the parsers of hostile input through it —
//! the config, API bodies, notify datagrams.

pub mod advisor;
pub mod agent_token;
pub mod api;
pub mod audit;
pub mod casebook;
pub mod checkpoints;
pub mod checks;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod cmd;
pub mod command;
pub mod config;
pub mod crash;
pub mod demo;
pub mod driver;
pub mod errors;
pub mod evidence;
pub mod fd_limit;
pub mod guard;
pub mod health;
pub mod http_client;
pub mod logs;
pub mod memory;
pub mod metrics;
pub mod notifications;
pub mod owned_file;
pub mod redact;
pub mod runtime;
pub mod state;
pub mod state_lock;
pub mod systemd;
pub mod view;
