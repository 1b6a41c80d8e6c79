//! Integration tests: real servers on 127.0.0.1:0, real clients.
//! All files form one test binary (one link, shared helpers).

mod helpers;
mod idp;

mod attacks;
mod auth_state;
mod availability;
mod batch;
mod cli;
mod clients;
mod conformance;
mod contract;
mod docs_page;
mod durability;
mod embedding;
mod hardening;
mod instances;
mod keys;
mod oidc;
mod oidc_provider;
mod openrpc;
mod params;
mod pg_keys;
mod policy;
mod resource_server;
mod sessions;
mod signin_path;
mod websocket;
