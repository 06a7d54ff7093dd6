//! Tests that run against both stores: SQLite (a temporary file) and PostgreSQL (a database
//! of the tests' own cluster, `convsync_testpg`). A test body takes the [`Backend`];
//! [`on_both_stores!`] makes a `sqlite::` and a `postgres::` test of it. What a test reads
//! back from the mirror goes through [`MirrorSql`], which runs the same SQL on either.

use convsync::store::{BackendKind, Store};
use sqlx::{Decode, Postgres, Sqlite, Type};

/// The store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `name::sqlite` and `name::postgres` tests of each `async fn name(backend: Backend)`
/// listed, in the module that calls it.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::stores::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::stores::Backend::Postgres).await
                }
            )*
        }
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

/// Report queries against the mirror, whichever store holds it. The SQL must read the
/// same on both (no parameters; `CAST(x AS TEXT)` for an instant, whose text differs).
#[allow(async_fn_in_trait)]
pub trait MirrorSql {
    /// The one value the query returns.
    async fn sql_value<T: Column>(&self, sql: &str) -> T;

    /// The first column of every row the query returns.
    async fn sql_column<T: Column>(&self, sql: &str) -> Vec<T>;
}

impl MirrorSql for Store {
    async fn sql_value<T: Column>(&self, sql: &str) -> T {
        let mut values = self.sql_column(sql).await;
        assert_eq!(values.len(), 1, "{sql}: one row expected");
        values.remove(0)
    }

    async fn sql_column<T: Column>(&self, sql: &str) -> Vec<T> {
        let query = sqlx::AssertSqlSafe(sql.to_owned());
        let values = match self.kind() {
            BackendKind::Sqlite => {
                let pool = self.as_sqlite().unwrap().pool();
                sqlx::query_scalar(query).fetch_all(pool).await
            }
            BackendKind::Postgres => {
                let pool = self.as_postgres().unwrap().pool();
                sqlx::query_scalar(query).fetch_all(pool).await
            }
        };
        values.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}
