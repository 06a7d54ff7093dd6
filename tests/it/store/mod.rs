//! The store's two backends: their schemas compared, every store operation run on both,
//! and PostgreSQL's `COPY` path for new rows against its `unnest` path.

mod bulk_copy;
mod connection;
mod operations;
mod schema;
