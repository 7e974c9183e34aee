//! Outbound webhooks to our clients (Standard Webhooks): account endpoints and signed deliveries
//! of job events with retries. Their URLs follow the outbound-address policy of `crate::net`.

pub mod deliver;
pub mod endpoints;
