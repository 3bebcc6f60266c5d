//! HTTP on top of the relay: the only place that knows axum. [`app`] builds the router and runs
//! the server, [`state`] is what handlers reach, [`auth`] turns a bearer token into a caller, and
//! [`routes`] holds one module per resource, each an adapter over the library below (the send
//! pipeline is [`crate::relay`]).

pub mod app;
pub mod auth;
pub mod routes;
pub mod state;
