//! The load tests: hundreds of requests in flight against one local stack. A binary of their
//! own, so `cargo test` runs them after the other tests, alone on the machine (and one at a
//! time, under `app::LOAD`): each measures its own behaviour, not another test's queue, and no
//! other test's timeouts wait behind them.

#[allow(dead_code)]
#[path = "../api/app.rs"]
mod app;
mod common;
mod feeds;
mod follows;
mod likes;
