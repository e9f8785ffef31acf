//! One module per packager verb.

pub mod build;
pub mod gc;
pub mod init;
pub mod promote;
pub mod publish;
pub mod query;
pub mod sign;
pub mod verify;
pub mod yank;
