//! convsync keeps a local SQL mirror of the conversations held by contact-center and
//! messaging platforms (Dynamics 365 Contact Center, Spruce Health, Sinch Conversation API,
//! HighLevel), polling their paged list endpoints and applying every page atomically with
//! the watermark it advances.
//!
//! Layout: [`config`] turns the file and environment into validated settings;
//! [`sync`] is the engine (one task per source); [`provider`] holds the platform adapters;
//! [`http`] the shared client, budgets, retries and tokens; [`store`] the mirror database;
//! [`retry`] the backoff schedules and transient-or-final classification they all share.

pub mod app;
pub mod cli;
pub mod config;
pub mod config_error;
pub mod error_text;
pub mod file_access;
pub mod health;
pub mod http;
pub mod provider;
pub mod record;
pub mod retry;
pub mod secret;
#[cfg(feature = "sim")]
pub mod sim_config;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod time;
