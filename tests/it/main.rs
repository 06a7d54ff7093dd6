//! convsync's integration tests: one binary, one module per area. Every test talks real
//! HTTP on loopback and writes a real SQLite file.

mod common;
mod config;
mod engine;
mod secrets;
