//! The two limits a backfill is compared with, measured in the same run on the same data:
//!
//! - **write**: the rows the sync just mirrored, inserted into a fresh file with the same
//!   schema (convsync's migrations) in one transaction through one prepared statement,
//!   straight through the SQLite C API — no HTTP, no parsing, no async driver. Reading the
//!   source rows is not timed.
//! - **fetch+parse**: the same requests the first sync makes (every delta walk, the sweeps
//!   that run in a first cycle, the follow-ups new conversations queue), sent through
//!   convsync's HTTP client and parsed by its provider adapter, without writing anything.

use std::collections::HashSet;
use std::ffi::{CStr, CString, c_int};
use std::path::Path;
use std::ptr;
use std::time::{Duration, Instant};

use anyhow::bail;
use convsync::config::Config;
use convsync::provider::{DetailRequest, InitialSweep, WalkContext, WalkKind};
use convsync::store::{Store, StoreSettings};
use convsync::sync::Engine;
use libsqlite3_sys as ffi;

/// Rows read from the source per untimed batch.
const READ_BATCH: i64 = 20_000;

/// What the write limit achieved.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimit {
    /// Rows written.
    pub rows: u64,
    /// Time spent writing (BEGIN through COMMIT, reads excluded).
    pub took: Duration,
}

/// What the fetch+parse limit achieved.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimit {
    /// Distinct conversations parsed.
    pub conversations: u64,
    /// Requests sent.
    pub requests: u64,
    /// Wall time.
    pub took: Duration,
}

/// Copies every conversation row of the mirror at `source` into a fresh database at
/// `dest` (schema from convsync's migrations) and times the writes: in one transaction,
/// or, with `commit_every`, committing after every that many rows — what page-atomic
/// checkpoints cost even at raw speed (a diagnostic, not the limit).
pub async fn write_limit(
    source: &Path,
    dest: &Path,
    commit_every: Option<usize>,
) -> anyhow::Result<WriteLimit> {
    let settings = StoreSettings {
        url: format!("sqlite://{}", dest.display()),
        max_connections: 1,
        ..StoreSettings::default()
    };
    Store::open(&settings).await?.close().await;
    let (source, dest) = (source.to_owned(), dest.to_owned());
    tokio::task::spawn_blocking(move || copy_rows(&source, &dest, commit_every)).await?
}

fn copy_rows(
    source: &Path,
    dest: &Path,
    commit_every: Option<usize>,
) -> anyhow::Result<WriteLimit> {
    let from = Db::open(source, ffi::SQLITE_OPEN_READONLY)?;
    let to = Db::open(dest, ffi::SQLITE_OPEN_READWRITE)?;
    // The pragmas convsync's store uses.
    to.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON")?;
    for (name, value) in convsync::store::sqlite::TUNING_PRAGMAS {
        to.exec(&format!("PRAGMA {name} = {value}"))?;
    }
    let read = from
        .prepare("SELECT rowid, * FROM conversations WHERE rowid > ?1 ORDER BY rowid LIMIT ?2")?;
    let columns = read.column_count() - 1;
    let placeholders = vec!["?"; columns as usize].join(", ");
    let mut took = Duration::ZERO;
    let started = Instant::now();
    to.exec("BEGIN IMMEDIATE")?;
    let insert = to.prepare(&format!(
        "INSERT INTO conversations VALUES ({placeholders})"
    ))?;
    took += started.elapsed();
    let mut last_rowid = 0;
    let mut rows = 0u64;
    loop {
        let batch = read.read_batch(last_rowid, READ_BATCH, columns)?;
        let Some((rowid, _)) = batch.last() else {
            break;
        };
        last_rowid = *rowid;
        let started = Instant::now();
        for (i, (_, values)) in batch.iter().enumerate() {
            insert.insert(values)?;
            if commit_every.is_some_and(|n| (rows as usize + i + 1).is_multiple_of(n)) {
                to.exec("COMMIT; BEGIN IMMEDIATE")?;
            }
        }
        took += started.elapsed();
        rows += batch.len() as u64;
    }
    let started = Instant::now();
    drop(insert);
    to.exec("COMMIT")?;
    took += started.elapsed();
    Ok(WriteLimit { rows, took })
}

/// One column value read from the source.
enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

/// An open SQLite connection (C API).
struct Db(*mut ffi::sqlite3);

/// A prepared statement of a [`Db`]; must not outlive it.
struct Statement<'db> {
    raw: *mut ffi::sqlite3_stmt,
    db: &'db Db,
}

impl Db {
    fn open(path: &Path, flags: c_int) -> anyhow::Result<Db> {
        let name = CString::new(path.to_string_lossy().as_bytes())?;
        let mut raw = ptr::null_mut();
        // SAFETY: `name` is a valid C string; `raw` receives the handle (closed in Drop,
        // also on failure as SQLite requires).
        let rc = unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut raw, flags, ptr::null()) };
        let db = Db(raw);
        if rc != ffi::SQLITE_OK {
            bail!("opening {}: {}", path.display(), db.message());
        }
        Ok(db)
    }

    fn message(&self) -> String {
        // SAFETY: the handle is open; SQLite returns a NUL-terminated string it owns.
        unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    fn exec(&self, sql: &str) -> anyhow::Result<()> {
        let sql = CString::new(sql)?;
        // SAFETY: open handle, valid C string, no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(self.0, sql.as_ptr(), None, ptr::null_mut(), ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK {
            bail!("{}: {}", sql.to_string_lossy(), self.message());
        }
        Ok(())
    }

    fn prepare(&self, sql: &str) -> anyhow::Result<Statement<'_>> {
        let text = CString::new(sql)?;
        let mut raw = ptr::null_mut();
        // SAFETY: open handle, valid C string; the statement is finalized in Drop.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                self.0,
                text.as_ptr(),
                -1,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut raw,
                ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            bail!("preparing {sql}: {}", self.message());
        }
        Ok(Statement { raw, db: self })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // SAFETY: every statement borrows the Db, so all are finalized by now.
        unsafe { ffi::sqlite3_close(self.0) };
    }
}

impl Statement<'_> {
    fn column_count(&self) -> c_int {
        // SAFETY: a live prepared statement.
        unsafe { ffi::sqlite3_column_count(self.raw) }
    }

    /// Up to `limit` rows after `after`: (rowid, the other `columns` values).
    fn read_batch(
        &self,
        after: i64,
        limit: i64,
        columns: c_int,
    ) -> anyhow::Result<Vec<(i64, Vec<Value>)>> {
        let mut out = Vec::new();
        // SAFETY: a live statement; bind indexes 1 and 2 exist; column reads stay within
        // `column_count` and copy the bytes before the next step.
        unsafe {
            ffi::sqlite3_reset(self.raw);
            ffi::sqlite3_bind_int64(self.raw, 1, after);
            ffi::sqlite3_bind_int64(self.raw, 2, limit);
            loop {
                match ffi::sqlite3_step(self.raw) {
                    ffi::SQLITE_ROW => {}
                    ffi::SQLITE_DONE => break,
                    _ => bail!("reading rows: {}", self.db.message()),
                }
                let rowid = ffi::sqlite3_column_int64(self.raw, 0);
                let mut values = Vec::with_capacity(columns as usize);
                for i in 1..=columns {
                    let bytes = |blob: *const u8| {
                        let len = ffi::sqlite3_column_bytes(self.raw, i) as usize;
                        if len == 0 {
                            Vec::new()
                        } else {
                            std::slice::from_raw_parts(blob, len).to_vec()
                        }
                    };
                    values.push(match ffi::sqlite3_column_type(self.raw, i) {
                        ffi::SQLITE_INTEGER => {
                            Value::Integer(ffi::sqlite3_column_int64(self.raw, i))
                        }
                        ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_column_double(self.raw, i)),
                        ffi::SQLITE_TEXT => {
                            Value::Text(bytes(ffi::sqlite3_column_text(self.raw, i)))
                        }
                        ffi::SQLITE_BLOB => {
                            Value::Blob(bytes(ffi::sqlite3_column_blob(self.raw, i).cast()))
                        }
                        _ => Value::Null,
                    });
                }
                out.push((rowid, values));
            }
        }
        Ok(out)
    }

    /// Binds `values` to parameters 1.. and runs the statement once.
    fn insert(&self, values: &[Value]) -> anyhow::Result<()> {
        // SAFETY: a live statement with `values.len()` parameters; text and blob buffers
        // outlive the step (SQLITE_STATIC), and the statement is reset before they change.
        unsafe {
            for (i, value) in values.iter().enumerate() {
                let i = i as c_int + 1;
                match value {
                    Value::Null => ffi::sqlite3_bind_null(self.raw, i),
                    Value::Integer(v) => ffi::sqlite3_bind_int64(self.raw, i, *v),
                    Value::Real(v) => ffi::sqlite3_bind_double(self.raw, i, *v),
                    Value::Text(v) => ffi::sqlite3_bind_text(
                        self.raw,
                        i,
                        v.as_ptr().cast(),
                        v.len() as c_int,
                        ffi::SQLITE_STATIC(),
                    ),
                    Value::Blob(v) => ffi::sqlite3_bind_blob(
                        self.raw,
                        i,
                        v.as_ptr().cast(),
                        v.len() as c_int,
                        ffi::SQLITE_STATIC(),
                    ),
                };
            }
            let rc = ffi::sqlite3_step(self.raw);
            ffi::sqlite3_reset(self.raw);
            if rc != ffi::SQLITE_DONE {
                bail!("inserting a row: {}", self.db.message());
            }
        }
        Ok(())
    }
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized once, before its connection closes (it borrows the Db).
        unsafe { ffi::sqlite3_finalize(self.raw) };
    }
}

/// Fetches and parses what a first sync of every source in `config` fetches, writing
/// nothing. `scratch` holds the token vault the HTTP layer may need.
pub async fn fetch_limit(config: &Path, scratch: &Path) -> anyhow::Result<FetchLimit> {
    let config = Config::load(config).map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))?;
    let store = Store::open(&StoreSettings {
        url: format!("sqlite://{}", scratch.display()),
        max_connections: 1,
        ..StoreSettings::default()
    })
    .await?;
    let engine = Engine::new(store, &config.http, &config.sources)?;
    let started = Instant::now();
    let mut seen = HashSet::new();
    let mut requests = 0u64;
    for source in engine.sources() {
        let provider = &*source.provider;
        let mut follow_ups = Vec::new();
        let first_cycle = provider.walks().iter().filter(|w| match w.spec().kind {
            WalkKind::Delta(_) => true,
            WalkKind::Sweep { initial, .. } => initial == InitialSweep::Immediately,
        });
        for walk in first_cycle {
            let mut position = None;
            loop {
                let ctx = WalkContext {
                    since: None,
                    position: position.as_ref(),
                };
                let spec = walk.build_request(&ctx)?;
                let response = source.client.send(&spec, provider).await?;
                requests += 1;
                let page = walk.parse_page(&ctx, &response)?;
                for record in &page.records {
                    // The engine queues a follow-up when a row is inserted: once per id.
                    if seen.insert(record.id.clone())
                        && let Some(kind) = record.detail_on_activity
                    {
                        follow_ups.push(DetailRequest {
                            conversation_id: record.id.clone(),
                            kind: kind.to_owned(),
                            since: None,
                            position: None,
                        });
                    }
                }
                follow_ups.extend(page.follow_ups);
                match page.next {
                    Some(next) => position = Some(next),
                    None => break,
                }
            }
        }
        for mut detail in follow_ups {
            loop {
                let follow_up = provider.follow_ups().read_queued(&detail)?;
                let spec = follow_up.build_request()?;
                let response = source.client.send(&spec, provider).await?;
                requests += 1;
                let parsed = follow_up.parse_response(&response)?;
                // It borrows `detail`, whose position moves next.
                drop(follow_up);
                match parsed.next {
                    Some(next) => detail.position = Some(next),
                    None => break,
                }
            }
        }
    }
    let took = started.elapsed();
    engine.store().close().await;
    anyhow::ensure!(!seen.is_empty(), "the fetch limit parsed no conversations");
    Ok(FetchLimit {
        conversations: seen.len() as u64,
        requests,
        took,
    })
}
