//! What an operator observes: health endpoints, metrics and logs.

pub mod health_endpoints;
mod logs;
mod telemetry;
