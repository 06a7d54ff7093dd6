//! The change history (`conversation_events`) and its feed: every tracked change written
//! with the page that caused it, on both stores; the feed's exactly-once order under
//! concurrent writers; `convsync changes`; the history reports of docs/schema.md.

mod feed;
mod reports;
mod store_events;
mod sync_events;
