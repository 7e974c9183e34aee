//! Integration tests over HTTP: each test starts its own gateway over its own resources in one
//! shared emulator, and talks to it as a client would.

mod account;
mod app;
mod auth;
mod bad_input;
mod bestcut;
mod chat;
mod conversations;
mod deletion;
mod deliveries;
mod docs;
mod events;
mod feeds;
mod firebase;
mod generation;
mod hardening;
mod instagram;
mod jobs;
mod jwt;
mod layers;
mod marketplace;
mod moderation;
mod notifications;
mod oidc;
mod payments;
mod personas;
mod photos;
mod posts;
mod rankings;
mod rate_limits;
mod remixes;
mod rotation;
mod search;
mod social;
mod template;
mod uploads;
