//! Tests that run against both stores: SQLite (a temporary file) and PostgreSQL (a database
//! of the tests' own cluster, `convsync_testpg`). A test body takes the [`Backend`];
//! [`on_both_stores!`] makes a `sqlite::` and a `postgres::` test of it. What a test reads
//! back from the mirror goes through [`MirrorSql`], which runs the same SQL on either.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, FromRow, Postgres, Sqlite, Type};

use super::mirror::{AsMirrorDb, MirrorDb};

/// The store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `name::sqlite` and `name::postgres` tests of each `async fn name(backend: Backend)`
/// listed, in the module that calls it. `multi_thread:` before the names runs them on
/// tokio's multi-threaded runtime (two workers), as the tests of the real binary need.
macro_rules! on_both_stores {
    (multi_thread: $($name:ident),* $(,)?) => {
        $crate::support::stores::on_both_stores!(
            @with [tokio::test(flavor = "multi_thread", worker_threads = 2)] $($name),*
        );
    };
    (@with [$test:meta] $($name:ident),*) => {
        mod sqlite {
            $(
                #[$test]
                async fn $name() {
                    super::$name($crate::support::stores::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[$test]
                async fn $name() {
                    super::$name($crate::support::stores::Backend::Postgres).await
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::support::stores::on_both_stores!(@with [tokio::test] $($name),*);
    };
}
pub(crate) use on_both_stores;

/// A value both drivers decode (`i64`, `String`, `Option<String>`, `bool`).
pub trait Column:
    for<'r> Decode<'r, Sqlite>
    + Type<Sqlite>
    + for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + Send
    + Unpin
    + 'static
{
}

impl<T> Column for T where
    T: for<'r> Decode<'r, Sqlite>
        + Type<Sqlite>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + Send
        + Unpin
        + 'static
{
}

/// A row of values both drivers decode: a tuple of [`Column`]s.
pub trait Columns:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin + 'static
{
}

impl<T> Columns for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin + 'static
{
}

/// Report queries against the mirror, whichever store holds it: a [`convsync::store::Store`], or a pool on
/// the mirror of a convsync child process ([`MirrorPool`]). The SQL must read the same on
/// both (no parameters; `CAST(x AS TEXT)` for an instant, whose text differs;
/// `CAST(SUM(x) AS BIGINT)`, since PostgreSQL sums integers as `numeric`).
#[allow(async_fn_in_trait)]
pub trait MirrorSql {
    /// The one value the query returns.
    async fn sql_value<T: Column>(&self, sql: &str) -> T;

    /// The first column of every row the query returns.
    async fn sql_column<T: Column>(&self, sql: &str) -> Vec<T>;

    /// [`MirrorSql::sql_column`] that may fail, as it does before convsync created the
    /// tables.
    async fn try_sql_column<T: Column>(&self, sql: &str) -> Result<Vec<T>, sqlx::Error>;

    /// Every row the query returns, as tuples.
    async fn sql_rows<T: Columns>(&self, sql: &str) -> Vec<T>;

    /// Runs a statement that changes the mirror behind convsync's back (a test's own
    /// edit); how many rows it changed.
    async fn sql_execute(&self, sql: &str) -> u64;
}

impl<D: AsMirrorDb + ?Sized> MirrorSql for D {
    async fn sql_value<T: Column>(&self, sql: &str) -> T {
        let mut values = self.sql_column(sql).await;
        assert_eq!(values.len(), 1, "{sql}: one row expected");
        values.remove(0)
    }

    async fn sql_column<T: Column>(&self, sql: &str) -> Vec<T> {
        self.try_sql_column(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn try_sql_column<T: Column>(&self, sql: &str) -> Result<Vec<T>, sqlx::Error> {
        let query = sqlx::AssertSqlSafe(sql.to_owned());
        match self.mirror_db() {
            MirrorDb::Sqlite(pool) => sqlx::query_scalar(query).fetch_all(pool).await,
            MirrorDb::Postgres(pool) => sqlx::query_scalar(query).fetch_all(pool).await,
        }
    }

    async fn sql_rows<T: Columns>(&self, sql: &str) -> Vec<T> {
        let query = sqlx::AssertSqlSafe(sql.to_owned());
        let rows = match self.mirror_db() {
            MirrorDb::Sqlite(pool) => sqlx::query_as(query).fetch_all(pool).await,
            MirrorDb::Postgres(pool) => sqlx::query_as(query).fetch_all(pool).await,
        };
        rows.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn sql_execute(&self, sql: &str) -> u64 {
        let query = sqlx::AssertSqlSafe(sql.to_owned());
        let done = match self.mirror_db() {
            MirrorDb::Sqlite(pool) => sqlx::query(query)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            MirrorDb::Postgres(pool) => sqlx::query(query)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        };
        done.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}
