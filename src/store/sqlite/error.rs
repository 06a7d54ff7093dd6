//! SQLite's errors onto the store's: its result codes say which are a lock held by another
//! writer (waited out by `store::while_busy`), a full disk, or a file that refuses writes
//! (what readiness reports). The same mapping for statements run through sqlx and through
//! the rusqlite fast path (`prepared.rs`).

use crate::store::StoreError;

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            match primary_code(&err) {
                Some(5 | 6) => return StoreError::Busy(db.message().to_owned()),
                Some(13) => return StoreError::Full(db.message().to_owned()),
                _ => {}
            }
        }
        let refused_by_file =
            matches!(err, sqlx::Error::Io(_)) || matches!(primary_code(&err), Some(8 | 10 | 14));
        if refused_by_file {
            StoreError::Unwritable(Box::new(err))
        } else {
            StoreError::Database(Box::new(err))
        }
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

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(Box::new(err))
    }
}

/// SQLite's primary result code of a database error (5 BUSY, 6 LOCKED, 8 READONLY,
/// 10 IOERR, 13 FULL, 14 CANTOPEN).
fn primary_code(err: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let code = db.code().and_then(|c| c.parse::<i32>().ok())?;
    Some(code & 0xff)
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
