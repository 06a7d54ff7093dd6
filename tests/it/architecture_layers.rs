//! Layers that only point down (docs/architecture.md): each top-level module of `src` may
//! use only the modules of the layers below its own. Read from the source text: every
//! `crate::module` path outside comments and test modules, `use crate::{a, b}` groups
//! included, so that a new back-edge fails here before review.
//!
//! The store's seam is checked the same way: only `store` names the database crates
//! (`sqlx`, `rusqlite`), and only a backend itself (`store::sqlite`, `store::postgres`)
//! names it, apart from the neutral store's own doors to them (`Store::connect` choosing
//! one, `Store::as_sqlite`/`as_postgres`, `database_file`, `DaemonLock::for_database`,
//! `restore`, the errors each backend reads: [`BACKEND_DOORS`]). Everything else reaches
//! backend-only operations through `store.as_sqlite()` or `store.as_postgres()`, which
//! name no type.

use std::collections::BTreeSet;
use std::path::Path;

/// The layers, lowest first: cli → app → health → sync (engine) → config → {provider, store} →
/// http → base. Modules of the base layer may use each other; `provider` and `store` may
/// not use each other.
const LAYERS: &[&[&str]] = &[
    &[
        "time",
        "secret",
        "file_access",
        "telemetry",
        "record",
        "error_text",
        "config_error",
        "retry",
    ],
    &["http"],
    &["provider", "store"],
    &["config"],
    &["sync"],
    &["health"],
    &["app"],
    &["cli"],
];

/// Modules outside the layers: (module, the modules that may use it, the ones it may use).
/// The simulator's config writer (`sim_config`) is used by `demo` and names the providers' kinds.
const STANDALONE: &[(&str, &[&str], &[&str])] = &[("sim_config", &["cli"], &["provider"])];

/// The database crates: named only under `src/store/`.
const DATABASE_CRATES: &[&str] = &["sqlx", "rusqlite"];

/// The backends: their module, their store type, and their folder under `src/`.
const BACKENDS: &[(&str, &str, &str)] = &[
    ("sqlite", "SqliteStore", "store/sqlite/"),
    ("postgres", "PgStore", "store/postgres/"),
];

/// The neutral store's files that choose or reach a backend (under `src/store/`).
const BACKEND_DOORS: &[&str] = &["store/mod.rs", "store/backup.rs", "store/error.rs"];

/// Whether `from` may use `to`.
fn allowed(from: &str, to: &str) -> Result<bool, String> {
    if from == to {
        return Ok(true);
    }
    if let Some((_, users, _)) = STANDALONE.iter().find(|(name, ..)| *name == to) {
        return Ok(users.contains(&from));
    }
    if let Some((_, _, uses)) = STANDALONE.iter().find(|(name, ..)| *name == from) {
        return Ok(uses.contains(&to));
    }
    let layer = |module: &str| LAYERS.iter().position(|layer| layer.contains(&module));
    let from_layer = layer(from).ok_or_else(|| format!("module `{from}` has no layer"))?;
    let to_layer = layer(to).ok_or_else(|| format!("module `{to}` has no layer"))?;
    Ok(to_layer < from_layer || (to_layer == 0 && from_layer == 0))
}

/// The text of a source file that ships: comments and a trailing `#[cfg(test)] mod` cut.
fn shipped_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules a file's shipped code names through `crate::` (or `$crate::`).
fn modules_used(text: &str) -> BTreeSet<String> {
    let code = shipped_code(text);
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::X, b::{Y, Z}}`: the first identifier of each top-level item.
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        used.insert(identifier(&group[i..]).to_owned());
                    }
                    _ => {}
                }
            }
        } else {
            used.insert(identifier(rest).to_owned());
        }
    }
    used.retain(|m| !m.is_empty());
    used
}

/// Every back-edge among `files` (path under `src`, text).
fn back_edges(files: &[(String, String)]) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for (path, text) in files {
        let module = path
            .split('/')
            .next()
            .unwrap_or(path)
            .trim_end_matches(".rs");
        if matches!(module, "lib" | "main") || path.ends_with("/tests.rs") {
            continue;
        }
        for used in modules_used(text) {
            if !allowed(module, &used)? {
                found.push(format!("{path}: `{module}` uses `{used}`"));
            }
        }
    }
    Ok(found)
}

/// Whether `code` holds `word` as a whole identifier (not part of a longer one).
fn names(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Whether `code` holds a path through the module `module` (`module::…`, not
/// `other_module::…`).
fn names_module(code: &str, module: &str) -> bool {
    let path = format!("{module}::");
    code.match_indices(&path).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Every file among `files` (path under `src`, text) that reaches past the store's seam: a
/// database crate named outside `store`, or the SQLite backend named outside
/// its own folder and the neutral store's [`BACKEND_DOORS`].
fn seam_breaches(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        let code = shipped_code(text);
        if !path.starts_with("store/") {
            for krate in DATABASE_CRATES {
                if names(&code, krate) {
                    found.push(format!("{path}: names `{krate}` outside `store`"));
                }
            }
        }
        let door = BACKEND_DOORS.contains(&path.as_str());
        for (module, store, folder) in BACKENDS {
            // `sqlx::postgres::…` is the driver, not the backend.
            let code = code.replace(&format!("sqlx::{module}::"), "");
            let names_backend = names_module(&code, module) || names(&code, store);
            if names_backend && !path.starts_with(folder) && !door {
                found.push(format!(
                    "{path}: names `store::{module}` (reach it through `store.as_{module}()`)"
                ));
            }
        }
    }
    found
}

fn source_files(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("a src entry").path();
        if path.is_dir() {
            source_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src");
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            out.push((relative.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

/// Every source file of `src` (path under `src`, text).
fn shipped_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&root, &root, &mut files);
    assert!(
        files.len() > 50,
        "expected the whole source tree, read {} files",
        files.len()
    );
    files
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let files = shipped_files();
    let edges = back_edges(&files).unwrap_or_else(|e| panic!("{e}: place it in LAYERS"));
    assert!(
        edges.is_empty(),
        "modules that use a layer above their own:\n{}",
        edges.join("\n")
    );
}

#[test]
fn only_the_store_names_the_database_and_only_its_doors_name_a_backend() {
    let files = shipped_files();
    assert!(
        files.iter().any(|(path, _)| path == "store/sqlite/mod.rs"),
        "expected the SQLite backend under src/store/sqlite/"
    );
    let breaches = seam_breaches(&files);
    assert!(
        breaches.is_empty(),
        "code past the store's seam:\n{}",
        breaches.join("\n")
    );
}

#[test]
fn a_seam_breach_is_reported_wherever_it_is_written() {
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let files = [
        file("cli/report.rs", "fn f(p: &sqlx::SqlitePool) {}\n"),
        file("sync/cycle.rs", "use rusqlite::Connection;\n"),
        file("app.rs", "use crate::store::sqlite::SqliteStore;\n"),
        file("cli/backup.rs", "fn f(s: &SqliteStore) {}\n"),
        file(
            "store/sqlite/mirror.rs",
            "use sqlx::Sqlite; use super::SqliteStore;\n",
        ),
        file("store/mod.rs", "pub mod sqlite; use sqlite::SqliteStore;\n"),
        file("store/page.rs", "use super::sqlite::SqliteStore;\n"),
        file(
            "store/sqlite/rows.rs",
            "use crate::store::postgres::PgStore;\n",
        ),
        file(
            "store/postgres/rows.rs",
            "use sqlx::postgres::PgConnection; use super::PgStore;\n",
        ),
        file(
            "cli/backup.rs",
            "let s = store.as_sqlite(); // sqlx::Error\n",
        ),
        file(
            "main.rs",
            "/// sqlx's connection threads\nfn sqlx_free() {}\n",
        ),
    ];
    assert_eq!(
        seam_breaches(&files),
        [
            "cli/report.rs: names `sqlx` outside `store`",
            "sync/cycle.rs: names `rusqlite` outside `store`",
            "app.rs: names `store::sqlite` (reach it through `store.as_sqlite()`)",
            "cli/backup.rs: names `store::sqlite` (reach it through `store.as_sqlite()`)",
            "store/page.rs: names `store::sqlite` (reach it through `store.as_sqlite()`)",
            "store/sqlite/rows.rs: names `store::postgres` (reach it through `store.as_postgres()`)",
        ]
    );
}

#[test]
fn a_back_edge_is_reported_wherever_the_path_is_written() {
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let files = [
        file("store/mirror.rs", "use crate::provider::Page;\n"),
        file("sim_config.rs", "use crate::provider::ProviderKind;\n"),
        file(
            "http/mod.rs",
            "use crate::{\n    time::Timestamp,\n    sync::{Engine, Source},\n};\n",
        ),
        file(
            "provider/x.rs",
            "fn f() { let _ = $crate::config::load(); }\n",
        ),
        file("sim_config.rs", "use crate::time::Timestamp;\n"),
        file(
            "store/ok.rs",
            "use crate::record::ConversationRecord; // crate::sync\n",
        ),
        file(
            "provider/tested.rs",
            "use crate::http::RequestSpec;\n#[cfg(test)]\nmod tests {\n    use crate::config::Config;\n}\n",
        ),
        file(
            "sync/mod.rs",
            "use crate::{config::Config, provider, store::Store};\n",
        ),
    ];
    assert_eq!(
        back_edges(&files).unwrap(),
        [
            "store/mirror.rs: `store` uses `provider`",
            "http/mod.rs: `http` uses `sync`",
            "provider/x.rs: `provider` uses `config`",
            "sim_config.rs: `sim_config` uses `time`",
        ]
    );
    assert!(back_edges(&[file("newmod.rs", "use crate::time::Timestamp;\n")]).is_err());
}
