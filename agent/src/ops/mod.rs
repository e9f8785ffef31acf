//! One module per agent verb, over the shared steps in [`txn`].

pub mod gc;
pub mod install;
pub mod query;
pub mod rebuild;
pub mod recover;
pub mod rollback;
pub mod txn;
