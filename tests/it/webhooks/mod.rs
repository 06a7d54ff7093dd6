//! Webhooks (docs/webhooks-receiver.md): the receiver over loopback with real signatures,
//! the ordering rule between events and polls, on both stores, and the replay of Spruce's
//! delivery log after downtime.

mod daemon;
mod ordering;
mod receiver;
mod replay;
