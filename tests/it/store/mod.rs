//! The store's two backends: their schemas compared, and every store operation run on both.

mod operations;
mod schema;
