//! SQLite's errors onto the store's: its result codes say which are a lock held by another
//! writer (waited out by `store::while_busy`), a full disk, or a file that refuses writes
//! (what readiness reports). The same mapping for statements run through sqlx and through
//! the rusqlite fast path (`prepared.rs`).

use sqlx::error::DatabaseError;
use sqlx::sqlite::SqliteError;

use crate::store::StoreError;
use crate::store::error::Failure;

/// What a database error of SQLite's means to the store; `None` for another backend's
/// error, or one that is none of these.
pub(in crate::store) fn failure_of(error: &dyn DatabaseError) -> Option<Failure> {
    let error = error.try_downcast_ref::<SqliteError>()?;
    let code = error.code().and_then(|c| c.parse::<i32>().ok())? & 0xff;
    match code {
        5 | 6 => Some(Failure::Busy),
        13 => Some(Failure::Full),
        8 | 10 | 14 => Some(Failure::Unwritable),
        _ => None,
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match err.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Busy(err.to_string())
            }
            Some(ErrorCode::DiskFull) => StoreError::Full(err.to_string()),
            Some(ErrorCode::ReadOnly | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => {
                StoreError::Unwritable(Box::new(err))
            }
            _ => StoreError::Database(Box::new(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::ffi;

    use super::*;

    fn statement_error(code: i32) -> StoreError {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None).into()
    }

    /// Result codes land in the store's vocabulary: a lock is waited out, a full disk and
    /// a file that refuses writes are what readiness reports, anything else is neither.
    #[test]
    fn result_codes_map_to_the_stores_errors() {
        assert!(matches!(
            statement_error(ffi::SQLITE_BUSY),
            StoreError::Busy(_)
        ));
        assert!(matches!(
            statement_error(ffi::SQLITE_LOCKED),
            StoreError::Busy(_)
        ));
        assert!(statement_error(ffi::SQLITE_FULL).is_file_failure());
        assert!(statement_error(ffi::SQLITE_READONLY).is_file_failure());
        assert!(statement_error(ffi::SQLITE_IOERR).is_file_failure());
        let other = statement_error(ffi::SQLITE_CONSTRAINT);
        assert!(matches!(other, StoreError::Database(_)));
        assert!(!other.is_file_failure());
        assert!(
            StoreError::from(sqlx::Error::PoolTimedOut)
                .to_string()
                .starts_with("database error: ")
        );
    }
}
