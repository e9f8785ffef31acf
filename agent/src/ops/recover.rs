//! `agent recover`: what every changing command does first, on its own
//! and said out loud. Under the node lock, a transaction still `running`
//! belongs to a process that died (SIGKILL, power loss): it is closed as
//! failed, the release the target link points at becomes current in the
//! state database (the link on disk is the truth), and staging
//! directories are removed.

use crate::error::Error;
use crate::node::Node;
use crate::ops::txn::{self, Recovery};

/// Recovers the node; a node with no state database has nothing to
/// recover (and none is created).
pub fn recover(node: &Node) -> Result<Recovery, Error> {
    if node.existing_store()?.is_none() {
        return Ok(Recovery::default());
    }
    let _lock = node.lock("recover")?;
    let Some(mut store) = node.existing_store()? else {
        return Ok(Recovery::default());
    };
    txn::recover(node, &mut store)
}
