//! The PostgreSQL schema (`migrations/postgres/`) against the SQLite one
//! (`migrations/sqlite/`), both applied for real and read back from each database's own
//! catalog: a column, key or index added to one backend only fails here.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnection;

use crate::support::{StorePool, TestDb};
use convsync_testpg::TestPgDb;

/// The migrator the PostgreSQL store runs at start and on `convsync migrate`.
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// One column as both catalogs can tell it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    not_null: bool,
    /// Position in the primary key, 1-based.
    key_position: Option<i64>,
    /// The declared type, in the backend's own words (compared by [`type_pairs`]).
    declared_type: String,
}

/// One index besides the primary key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Index {
    table: String,
    name: String,
    columns: Vec<String>,
    unique: bool,
    /// A partial index (`WHERE …`); the predicates are written in each dialect.
    partial: bool,
}

/// A schema as read from a catalog: tables with their columns in order, and indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Schema {
    tables: BTreeMap<String, Vec<Column>>,
    indexes: Vec<Index>,
}

/// A column's (name, not null, key position): what must be equal on both backends.
type ColumnShape = (String, bool, Option<i64>);

impl Schema {
    /// Each table's columns in order, by their name, nullability and key position.
    fn shape(&self) -> BTreeMap<String, Vec<ColumnShape>> {
        self.tables
            .iter()
            .map(|(table, columns)| {
                let columns = columns
                    .iter()
                    .map(|c| (c.name.clone(), c.not_null, c.key_position))
                    .collect();
                (table.clone(), columns)
            })
            .collect()
    }
}

/// What differs between the two shapes, one line per column or table, for a failure
/// message a reader can act on.
fn shape_differences(postgres: &Schema, sqlite: &Schema) -> Vec<String> {
    let (postgres, sqlite) = (postgres.shape(), sqlite.shape());
    let tables: BTreeSet<&String> = postgres.keys().chain(sqlite.keys()).collect();
    let mut differences = Vec::new();
    for table in tables {
        let before = differences.len();
        let (pg, lite) = match (postgres.get(table), sqlite.get(table)) {
            (Some(pg), Some(lite)) => (pg, lite),
            (Some(_), None) if POSTGRES_ONLY.contains(&table.as_str()) => continue,
            (Some(_), None) => {
                differences.push(format!("table {table}: only in PostgreSQL"));
                continue;
            }
            (None, _) => {
                differences.push(format!("table {table}: only in SQLite"));
                continue;
            }
        };
        let find =
            |columns: &[ColumnShape], name: &str| columns.iter().find(|c| c.0 == name).cloned();
        let names: BTreeSet<&String> = pg.iter().chain(lite).map(|c| &c.0).collect();
        for name in names {
            match (find(pg, name), find(lite, name)) {
                (Some(a), Some(b)) if a == b => {}
                (Some((_, pg_nn, pg_key)), Some((_, lite_nn, lite_key))) => differences.push(
                    format!(
                        "{table}.{name}: (not null, key position) PostgreSQL ({pg_nn}, {pg_key:?}), SQLite ({lite_nn}, {lite_key:?})"
                    ),
                ),
                (Some(_), None) => differences.push(format!("{table}.{name}: only in PostgreSQL")),
                (None, _) => differences.push(format!("{table}.{name}: only in SQLite")),
            }
        }
        let order =
            |columns: &[ColumnShape]| columns.iter().map(|c| c.0.clone()).collect::<Vec<_>>();
        if differences.len() == before && pg != lite {
            differences.push(format!(
                "{table}: columns in another order: PostgreSQL {:?}, SQLite {:?}",
                order(pg),
                order(lite)
            ));
        }
    }
    differences
}

/// The indexes that are not on both backends, one line each.
fn index_differences(postgres: &Schema, sqlite: &Schema) -> Vec<String> {
    let only = |these: &[Index], others: &[Index], backend: &str| {
        these
            .iter()
            .filter(|index| !others.contains(index))
            .map(|index| format!("only in {backend}: {index:?}"))
            .collect::<Vec<_>>()
    };
    let mut differences = only(&postgres.indexes, &sqlite.indexes, "PostgreSQL");
    differences.extend(only(&sqlite.indexes, &postgres.indexes, "SQLite"));
    differences
}

/// The replicas' tables: leases on rate-limit scopes and heartbeats. A SQLite file has one
/// daemon (its lock file), so they exist on PostgreSQL alone (docs/schema.md).
const POSTGRES_ONLY: &[&str] = &["leases", "replicas"];

/// The migrator's own table, not part of the mirror.
const NOT_THE_MIRROR: &str = "_sqlx_migrations";

async fn sqlite_schema() -> Schema {
    let db = TestDb::new();
    let store = db.open().await;
    let pool = store.pool();
    let rows: Vec<(String, String, bool, i64, String)> = sqlx::query_as(
        "SELECT m.name, p.name, p.\"notnull\", p.pk, p.type
         FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> ?
         ORDER BY m.name, p.cid",
    )
    .bind(NOT_THE_MIRROR)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut tables: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for (table, name, not_null, pk, declared_type) in rows {
        tables.entry(table).or_default().push(Column {
            name,
            // A key column never holds NULL in the mirror (SQLite itself only enforces it
            // for INTEGER PRIMARY KEY; PostgreSQL always does).
            not_null: not_null || pk > 0,
            key_position: (pk > 0).then_some(pk),
            declared_type,
        });
    }

    let rows: Vec<(String, String, bool, bool, i64, String)> = sqlx::query_as(
        "SELECT m.tbl_name, m.name, l.\"unique\", l.partial, i.seqno, i.name
         FROM sqlite_master m
         JOIN pragma_index_list(m.tbl_name) l ON l.name = m.name
         JOIN pragma_index_info(m.name) i
         WHERE m.type = 'index' AND l.origin = 'c' AND m.tbl_name <> ?
         ORDER BY m.tbl_name, m.name, i.seqno",
    )
    .bind(NOT_THE_MIRROR)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut indexes: Vec<Index> = Vec::new();
    for (table, name, unique, partial, _, column) in rows {
        match indexes.last_mut() {
            Some(index) if index.table == table && index.name == name => index.columns.push(column),
            _ => indexes.push(Index {
                table,
                name,
                columns: vec![column],
                unique,
                partial,
            }),
        }
    }
    store.close().await;
    Schema { tables, indexes }
}

async fn postgres_schema(conn: &mut PgConnection) -> Schema {
    let rows: Vec<(String, String, bool, Option<i32>, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.is_nullable = 'NO',
                (SELECT k.position::int4
                 FROM unnest(pk.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
                 WHERE k.attnum = a.attnum),
                format_type(a.atttypid, a.atttypmod)
         FROM information_schema.columns c
         JOIN pg_class t ON t.relname = c.table_name
         JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = c.table_schema
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = c.column_name
         LEFT JOIN pg_index pk ON pk.indrelid = t.oid AND pk.indisprimary
         WHERE c.table_schema = current_schema() AND c.table_name <> $1
           AND t.relkind = 'r' -- tables only: the views are pinned by tests/it/reports/views.rs
         ORDER BY c.table_name, c.ordinal_position",
    )
    .bind(NOT_THE_MIRROR)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let mut tables: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for (table, name, not_null, key_position, declared_type) in rows {
        tables.entry(table).or_default().push(Column {
            name,
            not_null,
            key_position: key_position.map(i64::from),
            declared_type,
        });
    }

    let rows: Vec<(String, String, Vec<String>, bool, bool)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text,
                ARRAY(SELECT a.attname::text
                      FROM unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                      ORDER BY k.ord),
                x.indisunique, x.indpred IS NOT NULL
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = current_schema() AND NOT x.indisprimary AND t.relname <> $1
         ORDER BY t.relname, i.relname",
    )
    .bind(NOT_THE_MIRROR)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let indexes = rows
        .into_iter()
        .map(|(table, name, columns, unique, partial)| Index {
            table,
            name,
            columns,
            unique,
            partial,
        })
        .collect();
    Schema { tables, indexes }
}

/// Each column's (table, column, SQLite type, PostgreSQL type), for both schemas' columns
/// (the shapes are compared first).
fn type_pairs(sqlite: &Schema, postgres: &Schema) -> Vec<(String, String, String, String)> {
    sqlite
        .tables
        .iter()
        .flat_map(|(table, columns)| {
            columns
                .iter()
                .zip(&postgres.tables[table])
                .map(|(lite, pg)| {
                    (
                        table.clone(),
                        lite.name.clone(),
                        lite.declared_type.clone(),
                        pg.declared_type.clone(),
                    )
                })
        })
        .collect()
}

/// Whether a PostgreSQL type may stand for a SQLite one: the native types of
/// docs/schema.md, and never a type narrower than SQLite's 64-bit INTEGER.
fn native_type_fits(column: &str, sqlite: &str, postgres: &str) -> bool {
    let instant = column.ends_with("_at") || matches!(column, "since" | "verified_through");
    match (sqlite, postgres) {
        ("TEXT", "timestamp with time zone") => instant,
        ("TEXT", "text") => !instant && column != "item_hash",
        ("TEXT", "jsonb") => column == "raw",
        // The rejected item's BLAKE3 hash: hex text in SQLite, its 32 bytes in PostgreSQL.
        ("TEXT", "bytea") => column == "item_hash",
        ("INTEGER", "bigint") => true,
        ("INTEGER", "boolean") => true,
        ("BLOB", "bytea") => true,
        _ => false,
    }
}

/// Both backends' schemas, each migrated in a fresh database: (SQLite, PostgreSQL).
async fn both_schemas() -> (Schema, Schema) {
    let pg = TestPgDb::new().await;
    let mut conn = pg.connect().await;
    POSTGRES_MIGRATOR.run(&mut conn).await.unwrap();
    (sqlite_schema().await, postgres_schema(&mut conn).await)
}

/// Every table and column of the SQLite mirror, in the same order and with the same
/// nullability and primary keys, exists in PostgreSQL and nothing else does.
#[tokio::test]
async fn both_backends_have_the_same_tables_and_columns() {
    let (sqlite, postgres) = both_schemas().await;

    assert!(
        sqlite.tables.contains_key("conversations"),
        "the SQLite catalog was read: {:?}",
        sqlite.tables.keys()
    );
    let differences = shape_differences(&postgres, &sqlite);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// Both backends have the same indexes besides their primary keys (names, columns in
/// order, uniqueness, partial or not), so a report is as fast on either.
#[tokio::test]
async fn both_backends_have_the_same_indexes() {
    let (sqlite, postgres) = both_schemas().await;

    assert!(
        sqlite
            .indexes
            .iter()
            .any(|i| i.name == "conversations_awaiting_reply" && i.partial),
        "the SQLite catalog was read: {:?}",
        sqlite.indexes
    );
    let differences = index_differences(&postgres, &sqlite);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// Each PostgreSQL column has the native type docs/schema.md gives for its SQLite
/// counterpart: instants are timestamptz, flags boolean, integers 64-bit, hashes bytea.
#[tokio::test]
async fn postgres_columns_have_native_types() {
    let (sqlite, postgres) = both_schemas().await;
    assert_eq!(shape_differences(&postgres, &sqlite), Vec::<String>::new());

    let misfits: Vec<_> = type_pairs(&sqlite, &postgres)
        .into_iter()
        .filter(|(_, column, lite, pg)| !native_type_fits(column, lite, pg))
        .collect();
    assert!(
        misfits.is_empty(),
        "(table, column, SQLite, PostgreSQL): {misfits:#?}"
    );
    let flags: Vec<_> = type_pairs(&sqlite, &postgres)
        .into_iter()
        .filter(|(_, _, _, pg)| pg == "boolean")
        .map(|(table, column, _, _)| format!("{table}.{column}"))
        .collect();
    assert_eq!(
        flags,
        [
            "conversations.active",
            "conversations.awaiting_reply",
            "refresh_tokens.refused_after_lost_answer"
        ]
    );
}

/// Migrating an up-to-date PostgreSQL mirror again changes nothing: no migration is
/// re-applied, the schema and the rows stay as they were.
#[tokio::test]
async fn migrating_postgres_twice_is_a_no_op() {
    let pg = TestPgDb::new().await;
    let mut conn = pg.connect().await;
    POSTGRES_MIGRATOR.run(&mut conn).await.unwrap();
    sqlx::query("INSERT INTO sync_runs (source, started_at) VALUES ('s', now())")
        .execute(&mut conn)
        .await
        .unwrap();
    let migrations_before = applied_migrations(&mut conn).await;
    let schema_before = postgres_schema(&mut conn).await;

    POSTGRES_MIGRATOR.run(&mut conn).await.unwrap();

    assert_eq!(applied_migrations(&mut conn).await, migrations_before);
    assert_eq!(postgres_schema(&mut conn).await, schema_before);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_runs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, 1);
}

/// The migrator's own record: (version, checksum, when applied).
async fn applied_migrations(conn: &mut PgConnection) -> Vec<(i64, Vec<u8>, String)> {
    sqlx::query_as(
        "SELECT version, checksum, installed_on::text FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// The PostgreSQL schema's newest version is SQLite's: one number names one schema on
/// both backends.
#[tokio::test]
async fn both_backends_are_at_the_same_schema_version() {
    let newest = |migrator: &Migrator| migrator.iter().map(|m| m.version).max();
    let sqlite: Migrator = sqlx::migrate!("./migrations/sqlite");
    assert_eq!(newest(&POSTGRES_MIGRATOR), newest(&sqlite));
}

/// docs/schema.md describes every column of every table, under the table's own heading
/// (`## \`name\`` or a paragraph opening with `` `name` — ``).
#[tokio::test]
async fn the_schema_page_names_every_column() {
    let sqlite = sqlite_schema().await;
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.md")).unwrap();
    let mut sections: BTreeMap<String, String> = BTreeMap::new();
    let mut current = None;
    for line in page.lines() {
        if let Some(table) = table_heading(line) {
            current = Some(table.to_owned());
        } else if line.starts_with("## ") {
            current = None;
        }
        if let Some(table) = &current {
            let section = sections.entry(table.clone()).or_default();
            section.push_str(line);
            section.push('\n');
        }
    }

    let missing: Vec<String> = sqlite
        .tables
        .iter()
        .flat_map(|(table, columns)| {
            let section = sections.get(table).cloned().unwrap_or_default();
            columns
                .iter()
                .filter(move |c| !section.contains(&format!("`{}`", c.name)))
                .map(move |c| format!("{table}.{}", c.name))
        })
        .collect();
    assert!(missing.is_empty(), "not in docs/schema.md: {missing:?}");
}

/// The table whose section a line of docs/schema.md opens, if it opens one.
fn table_heading(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("## `")
        .or_else(|| line.strip_prefix('`').filter(|_| line.contains("` — ")))?;
    rest.split_once('`').map(|(table, _)| table)
}
