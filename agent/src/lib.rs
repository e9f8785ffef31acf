//! The agent's operations and the parts they are built from: the node's
//! layout under `--root`, its configuration, the one-writer lock, the
//! SQLite state store. The `agent` binary is a thin command line over them.

pub mod config;
pub mod error;
pub mod fetch;
pub mod hooks;
pub mod index_cache;
pub mod layout;
pub mod lock;
pub mod node;
pub mod ops;
pub mod remote;
pub mod resolve;
pub mod store;
pub mod trust;
