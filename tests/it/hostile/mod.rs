//! Hostile providers, hosts and token endpoints (issue #16): the daemon always ends, never
//! hides a dead source and never spends a token twice.

pub mod engine;
mod host;
mod http;
mod tokens;
