//! The artifact format and the repository protocol that berth's `packager`
//! and `agent` share: names and versions, manifests, the tar+zstd archive
//! (deterministic packing and a verifying reader), the repository layout and
//! its backends, and atomic file writes.
//!
//! Nothing here prints: long operations report through [`progress::Progress`]
//! and errors are typed per module so the binaries can map them to exit codes.

pub mod archive;
pub mod digest;
pub mod fault;
pub mod fsutil;
pub mod manifest;
pub mod name;
pub mod package;
pub mod progress;
pub mod repo;
pub mod rules;
pub mod sign;
pub mod unpack;

/// How an error should end a command, following the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The input was wrong (a file, a name, a flag): exit 2, nothing changed.
    Input,
    /// Something failed on the way (I/O, a server): exit 1.
    Failure,
}

/// What the binaries need from an error beyond its message.
pub trait Diagnose {
    /// Which exit code family the error belongs to.
    fn fault(&self) -> Fault;
    /// The way out, when there is one worth saying.
    fn hint(&self) -> Option<String>;
}
