//! Reading a response body without trusting its size.
//!
//! A provider (or anything between it and us) can answer with a body of any size, announce
//! a false `Content-Length` or none at all, or stream chunks for ever. Every provider and
//! token response is therefore read through [`read_capped`], which stops at
//! `http.max_response_bytes`: memory is bounded by that cap, not by what the other side
//! sends.

use bytes::Bytes;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than the cap (announced or counted while streaming).
    #[error("the response body is larger than {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: u64,
    },
    /// The connection failed or timed out while the body was read.
    #[error("{0}")]
    Read(String),
}

/// Reads `response`'s body, failing as soon as it is known to exceed `limit` bytes: at once
/// when `Content-Length` says so, else when the bytes received pass the cap (chunked
/// bodies, missing or lying `Content-Length`). At most `limit` bytes are ever held.
pub async fn read_capped(response: reqwest::Response, limit: u64) -> Result<Bytes, BodyError> {
    if response
        .content_length()
        .is_some_and(|announced| announced > limit)
    {
        return Err(BodyError::TooLarge { limit });
    }
    let body = reqwest::Body::from(response);
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyError::TooLarge { limit })
        }
        Err(e) => Err(BodyError::Read(crate::error_text::error_chain(&*e))),
    }
}
