//! Fault injection for the crash tests. With `BERTH_FAULT=<point>` in its
//! environment the agent kills itself with SIGKILL when it reaches that
//! point: no destructor, no flush, no journal entry after it, as a power
//! loss or the kernel's OOM killer would stop it. Unset (normal use), a
//! point costs one environment lookup and does nothing.
//!
//! Points: `<step>:before` and `<step>:after` around every journaled step
//! (`unpack`, `snapshot`, `link`, `switch`, `switch back`, `tree`),
//! `hook:<name>:before` and `hook:<name>:after` around each hook, and
//! `commit:before` / `commit:after` around the end of a transaction.

use rustix::process::{Signal, getpid, kill_process};

/// The environment variable naming the point to die at.
pub const FAULT_VAR: &str = "BERTH_FAULT";

/// Dies here if `BERTH_FAULT` names this point.
pub fn point(name: &str) {
    if std::env::var_os(FAULT_VAR).is_some_and(|v| v == name) {
        let _ = kill_process(getpid(), Signal::KILL);
        // SIGKILL cannot be caught; this is never reached.
        std::process::abort();
    }
}
