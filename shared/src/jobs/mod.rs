//! Jobs: the kinds registry, admission and release, the HTTP routes and the worker.

pub mod executor;
pub mod handlers;
pub mod model;
pub mod registry;
pub mod store;
pub mod worker;
