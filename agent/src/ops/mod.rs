//! One module per agent verb, over the shared steps in [`txn`].

pub mod gc;
pub mod install;
pub mod query;
pub mod rollback;
pub mod txn;
