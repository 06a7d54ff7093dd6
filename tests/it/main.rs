//! convsync's integration tests: one binary, one folder per area. Every test talks real
//! HTTP on loopback and writes a real SQLite file; `support` holds the shared harness.

mod architecture_layers;
mod cli;
mod config;
mod deploy;
mod engine;
mod harness;
mod history;
mod hostile;
mod observability;
mod ops;
mod provider;
mod reliability;
mod replicas;
mod reports;
mod request_costs;
mod secrets;
mod store;
mod support;
mod webhooks;
