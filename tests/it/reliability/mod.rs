//! The real binary under crashes, provider faults, database faults and bad input.

mod crash;
mod database;
mod faults;
mod input;
