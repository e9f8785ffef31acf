//! Fault injection for the crash tests, shared by the agent and the
//! packager. With `BERTH_FAULT=<point>` in its environment a program kills
//! itself with SIGKILL when it reaches that point: no destructor, no flush,
//! nothing written after it, as a power loss or the kernel's OOM killer
//! would stop it. With `BERTH_FAULT_STOP=<point>` it stops itself with
//! SIGSTOP there instead, the first time it gets there, so that a test can
//! run another command at that exact moment and then let it go on
//! (SIGCONT). Unset (normal use), a point costs two environment lookups
//! and does nothing.
//!
//! The points are named where they are placed: the agent's around its
//! journaled steps and hooks (docs/agent.md), the packager's where a write
//! to the repository crosses a line (docs/repository.md).

use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::{Signal, getpid, kill_process};

/// The environment variable naming the point to die at.
pub const FAULT_VAR: &str = "BERTH_FAULT";

/// The environment variable naming the point to stop at.
pub const STOP_VAR: &str = "BERTH_FAULT_STOP";

static STOPPED: AtomicBool = AtomicBool::new(false);

/// Dies here if `BERTH_FAULT` names this point; stops here if
/// `BERTH_FAULT_STOP` names it and the process has not stopped yet.
pub fn point(name: &str) {
    if std::env::var_os(FAULT_VAR).is_some_and(|v| v == name) {
        let _ = kill_process(getpid(), Signal::KILL);
        // SIGKILL cannot be caught; this is never reached.
        std::process::abort();
    }
    if std::env::var_os(STOP_VAR).is_some_and(|v| v == name)
        && !STOPPED.swap(true, Ordering::SeqCst)
    {
        // Returns once someone sends SIGCONT.
        let _ = kill_process(getpid(), Signal::STOP);
    }
}
