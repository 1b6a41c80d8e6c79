//! Integration tests: real servers on 127.0.0.1:0, real clients.
//! All files form one test binary (one link, shared helpers).

// Test code may unwrap (`[workspace.lints]` warns outside tests; clippy
// exempts `#[test]` functions by itself, not the helpers).
#![allow(clippy::unwrap_used)]

mod helpers;
mod idp;

mod attacks;
mod audit;
mod auth_state;
mod availability;
mod backup;
mod batch;
mod cli;
mod clients;
mod conformance;
mod contract;
mod cors;
mod deploy;
mod doc_links;
mod docs_page;
mod drain;
mod durability;
mod embedding;
mod hardening;
mod instances;
mod integrity;
mod keys;
mod logging;
mod metrics;
mod oidc;
mod oidc_provider;
mod openrpc;
mod operations;
mod params;
mod pg_keys;
mod policy;
mod proxy;
mod resource_server;
mod sessions;
mod signin_path;
mod walkthrough;
mod websocket;
