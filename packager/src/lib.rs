//! The packager's operations, one module a verb: each takes an options
//! struct and returns a report, never prints, and fails with an [`Error`]
//! that says what, why and the way out. The `packager` binary is a thin
//! command line over them.

pub mod error;
pub mod ops;

pub use error::Error;
