//! Each provider adapter against the simulator over real HTTP, and its parsers under fuzzing.

mod d365;
mod fuzz_parsers;
mod highlevel;
mod highlevel_agency;
mod sinch;
pub mod spruce;
