//! The simulator's own tests: each front-end answers as its provider's documentation says
//! (paging, auth, errors, faults), over real HTTP on loopback.

mod core;
mod d365;
mod highlevel;
mod sinch;
mod spruce;
mod support;
mod webhooks;
