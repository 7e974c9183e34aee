//! Lambent: the library every function runs. Handlers take `(&State, Request)` and are reachable
//! from the Lambda binaries, the local gateway and the tests alike.

pub mod backoff;
pub mod bestcut;
pub mod commerce;
pub mod auth {
    pub mod account;
    pub mod deletion;
    pub mod firebase;
    pub mod handlers;
    pub mod id_tokens;
    pub mod identities;
    pub mod keys;
    pub mod oidc;
    pub mod password;
    pub mod rotation;
    pub mod sessions;
}
pub mod compose;
pub mod config;
pub mod console;
pub mod conversations;
pub mod credits;
pub mod cursor;
pub mod db;
pub mod domain;
pub mod error;
pub mod follow;
pub mod generation;
pub mod http;
pub mod images;
pub mod jobs;
pub mod keys;
pub mod lambda;
pub mod media;
pub mod meta;
pub mod net;
pub mod notification;
pub mod oauth;
pub mod openapi;
pub mod pdf;
pub mod persona;
pub mod personas;
pub mod photos;
pub mod post;
pub mod ratelimit;
pub mod routes;
pub mod sealed;
pub mod search;
pub mod social;
pub mod state;
pub mod telemetry;
pub mod uploads;
pub mod upscale;
pub mod users;
pub mod video;
pub mod videos;
pub mod webhooks;

pub use config::Config;
pub use routes::{ROUTES, Route, handle};
pub use state::State;
