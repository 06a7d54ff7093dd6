//! convsync's integration tests: one binary, one module per area. Every test talks real
//! HTTP on loopback and writes a real SQLite file.

mod common;
mod config;
mod demo;
mod deploy_alerts;
mod deploy_container;
mod deploy_docker_api;
mod deploy_files;
mod deploy_notify;
mod deploy_support;
mod engine;
mod fuzz_parsers;
mod health_endpoints;
mod hostile_engine;
mod hostile_http;
mod provider_d365;
mod provider_highlevel;
mod provider_sinch;
mod provider_spruce;
mod reliability_crash;
mod reliability_database;
mod reliability_faults;
mod reliability_input;
mod reliability_support;
mod secrets;
mod sim_core;
mod sim_d365;
mod sim_highlevel;
mod sim_sinch;
mod sim_spruce;
mod sim_support;
mod telemetry;
