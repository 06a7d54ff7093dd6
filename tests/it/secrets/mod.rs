//! Credentials: fetched, cached, refreshed, and kept out of every log and report.

mod credentials;
mod scrub;
mod shared_vault;
