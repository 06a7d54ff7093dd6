//! Operator maintenance commands: backup, restore, retention and purge.

mod backup;
mod retention;
