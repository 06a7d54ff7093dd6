//! Webhooks (docs/webhooks.md): the receiver over loopback with real signatures,
//! and the ordering rule between events and polls, on both stores.

mod daemon;
mod end_to_end;
mod ordering;
mod receiver;
