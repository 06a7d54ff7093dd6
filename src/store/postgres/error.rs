//! PostgreSQL's errors onto the store's, by SQLSTATE: a lock not granted within
//! `lock_timeout` (or a deadlock, or a serialization failure) is busy and waited out by
//! `store::while_busy`; a full disk, and a server that refuses writes (a read-only standby,
//! an I/O error, a shutdown), are what readiness reports.

use sqlx::error::DatabaseError;
use sqlx::postgres::PgDatabaseError;

use crate::store::error::Failure;

/// What a database error of PostgreSQL's means to the store; `None` for another backend's
/// error, or one that is none of these.
pub(in crate::store) fn failure_of(error: &dyn DatabaseError) -> Option<Failure> {
    let error = error.try_downcast_ref::<PgDatabaseError>()?;
    failure_of_code(error.code())
}

fn failure_of_code(sqlstate: &str) -> Option<Failure> {
    match sqlstate {
        // lock_not_available, serialization_failure, deadlock_detected
        "55P03" | "40001" | "40P01" => Some(Failure::Busy),
        // disk_full
        "53100" => Some(Failure::Full),
        // read_only_sql_transaction, io_error, admin/crash shutdown, cannot_connect_now
        "25006" | "58030" | "57P01" | "57P02" | "57P03" => Some(Failure::Unwritable),
        // connection_exception and its subclasses
        code if code.starts_with("08") => Some(Failure::Unwritable),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLSTATEs land in the store's vocabulary: a lock not granted in time is waited out,
    /// a full disk and a server refusing writes are what readiness reports, a constraint
    /// violation is neither.
    #[test]
    fn sqlstates_map_to_the_stores_failures() {
        assert_eq!(failure_of_code("55P03"), Some(Failure::Busy));
        assert_eq!(failure_of_code("40P01"), Some(Failure::Busy));
        assert_eq!(failure_of_code("53100"), Some(Failure::Full));
        assert_eq!(failure_of_code("25006"), Some(Failure::Unwritable));
        assert_eq!(failure_of_code("08006"), Some(Failure::Unwritable));
        assert_eq!(failure_of_code("23505"), None);
    }
}
