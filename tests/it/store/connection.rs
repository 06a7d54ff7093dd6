//! How convsync reaches a PostgreSQL server, against the tests' secured cluster (TLS with a
//! CA of its own, a TLS-only group, a password group; `convsync_testpg`): the server is
//! checked as `[database] tls_mode` says, the password comes from a secret reference, a
//! client certificate is shown to a server that requires one, and neither a wrong
//! certificate nor a wrong password is ever reported with the password or the key.

use std::process::Stdio;
use std::time::Duration;

use convsync::config::Config;
use convsync::store::{Store, StoreSettings, TlsMode, TlsSettings};
use convsync_testpg::{
    CERTIFIED_HOST, CLIENT_CERT_GROUP, ClientCertFiles, PASSWORD_GROUP, TLS_ONLY_GROUP, TestPgDb,
};
use sqlx::Row;

use crate::support::capture::trace_capture;
use crate::support::deploy::documented_steps;
use crate::support::write_file;

/// A database on the secured cluster owned by a TLS-only role, and that role's name.
async fn tls_only_database() -> (TestPgDb, String) {
    let db = TestPgDb::secured().await;
    let role = format!("tls_{}", db.name);
    db.create_owner(&role, TLS_ONLY_GROUP, None).await;
    (db, role)
}

/// Connects as `role` to `host` (`127.0.0.1` or [`CERTIFIED_HOST`]) with `mode` and
/// `root_cert`; the error as its text.
async fn connect(
    db: &TestPgDb,
    role: &str,
    host: &str,
    mode: TlsMode,
    root_cert: Option<std::path::PathBuf>,
) -> Result<Store, String> {
    Store::connect(&StoreSettings {
        url: db.url_as(role, host),
        max_connections: 2,
        tls: TlsSettings {
            mode,
            root_cert,
            client: None,
        },
        ..StoreSettings::default()
    })
    .await
    .map_err(|e| e.to_string())
}

/// Whether the store's own connection is encrypted, as the server sees it.
async fn encrypted(store: &Store) -> bool {
    sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.as_postgres().unwrap().pool())
        .await
        .unwrap()
        .get(0)
}

/// `verify-full` with the CA that signed the server's certificate connects (and migrates)
/// over TLS to the name the certificate is for; so does `verify-ca` to an address the
/// certificate does not name, which that mode does not check.
#[tokio::test]
async fn verify_full_with_the_right_ca_connects_over_tls() {
    let (db, role) = tls_only_database().await;
    let store = connect(
        &db,
        &role,
        CERTIFIED_HOST,
        TlsMode::VerifyFull,
        Some(db.ca_cert()),
    )
    .await
    .unwrap();
    assert!(encrypted(&store).await);
    store
        .migrate(&db.url_as(&role, CERTIFIED_HOST))
        .await
        .unwrap();
    store.close().await;

    let store = connect(
        &db,
        &role,
        "127.0.0.1",
        TlsMode::VerifyCa,
        Some(db.ca_cert()),
    )
    .await
    .unwrap();
    assert!(encrypted(&store).await);
    store.close().await;
}

/// A certificate from another CA, or one issued for another name than the one connected
/// to, is refused under `verify-full`, with an error that names the database (without a
/// password) and the TLS settings, and says what was wrong with the certificate.
#[tokio::test]
async fn a_wrong_ca_or_host_name_is_refused_clearly() {
    let (db, role) = tls_only_database().await;
    let wrong_ca = connect(
        &db,
        &role,
        CERTIFIED_HOST,
        TlsMode::VerifyFull,
        Some(db.unrelated_ca_cert()),
    )
    .await
    .unwrap_err();
    assert!(
        wrong_ca.starts_with("cannot connect to postgres://")
            && wrong_ca.contains("tls_mode verify-full")
            && wrong_ca.contains("UnknownIssuer"),
        "{wrong_ca}"
    );

    let wrong_name = connect(
        &db,
        &role,
        "127.0.0.1",
        TlsMode::VerifyFull,
        Some(db.ca_cert()),
    )
    .await
    .unwrap_err();
    assert!(
        wrong_name.contains("tls_mode verify-full") && wrong_name.contains("not valid for name"),
        "{wrong_name}"
    );
}

/// `require` encrypts without checking the certificate; `disable` against a server that
/// accepts this role over TLS only is refused, and the error says so.
#[tokio::test]
async fn require_encrypts_and_disable_meets_a_tls_only_server() {
    let (db, role) = tls_only_database().await;
    let store = connect(&db, &role, "127.0.0.1", TlsMode::Require, None)
        .await
        .unwrap();
    assert!(encrypted(&store).await);
    store.close().await;

    let refused = connect(&db, &role, "127.0.0.1", TlsMode::Disable, None)
        .await
        .unwrap_err();
    assert!(
        refused.contains("tls_mode disable")
            && refused.contains("pg_hba.conf rejects connection")
            && refused.contains("no encryption"),
        "{refused}"
    );
}

/// Writes a config over `db` as `role` with `[database] password` read from a file holding
/// `password`, and a Spruce source (never polled here); returns the config's path.
fn write_config(dir: &std::path::Path, db: &TestPgDb, role: &str, password: &str) -> String {
    let password = write_file(dir, "db-password", &format!("{password}\n"));
    let keys = format!("password = {{ file = \"{}\" }}\n", password.display());
    write_config_with(dir, db, role, &keys)
        .display()
        .to_string()
}

/// Writes a config over `db` as `role` (TLS verify-full with the cluster's CA) with the
/// `[database]` keys `keys` besides, and a Spruce source (never polled here); returns the
/// config's path.
fn write_config_with(
    dir: &std::path::Path,
    db: &TestPgDb,
    role: &str,
    keys: &str,
) -> std::path::PathBuf {
    let token = write_file(dir, "spruce-token", "spruce-token-value");
    let text = format!(
        r#"
[database]
url = "{url}"
tls_mode = "verify-full"
tls_root_cert = "{ca}"
{keys}
[health]
enabled = false

[[sources]]
name = "clinic"
provider = "spruce"
[sources.spruce]
organization_id = "entity_1"
api_token = {{ file = "{token}" }}
"#,
        url = db.url_as(role, CERTIFIED_HOST),
        ca = db.ca_cert().display(),
        token = token.display(),
    );
    let path = dir.join("convsync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A role that logs in by password (SCRAM) connects with the password its
/// `[database] password` reference holds; a wrong one is refused with the server's
/// "password authentication failed", and neither password shows in the error, the store's
/// `Debug`, or any log line.
#[tokio::test(flavor = "current_thread")]
async fn the_password_comes_from_its_secret_and_never_shows() {
    const PASSWORD: &str = "Db-Pa55word-e7c1";
    const WRONG: &str = "Wrong-Pa55word-91ad";
    let db = TestPgDb::secured().await;
    let role = format!("pw_{}", db.name);
    db.create_owner(&role, PASSWORD_GROUP, Some(PASSWORD)).await;
    // From here on, only convsync's own log lines (the test's `CREATE ROLE` held it).
    let (capture, _guard) = trace_capture();
    let dir = tempfile::tempdir().unwrap();

    let config = write_config(dir.path(), &db, &role, PASSWORD);
    let config = Config::load(std::path::Path::new(&config)).unwrap();
    let store = Store::open(&config.store).await.unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(store.as_postgres().unwrap().pool())
        .await
        .unwrap();
    assert_eq!(user, role);
    let shown = format!("{store:?} {:?}", config.store);
    store.close().await;

    let config = write_config(dir.path(), &db, &role, WRONG);
    let config = Config::load(std::path::Path::new(&config)).unwrap();
    let refused = Store::open(&config.store).await.unwrap_err();
    let refused = convsync::error_text::error_chain(&refused);
    assert!(
        refused.contains("password authentication failed") && refused.contains(&role),
        "{refused}"
    );

    let everything = format!("{shown}\n{refused:?}\n{}", capture.text());
    for secret in [PASSWORD, WRONG] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
}

/// The commands docs/deploy.md ("PostgreSQL") gives, run as written against a config like
/// its example (TLS verify-full, the password from a file): each succeeds, and none prints
/// the password, even at debug level.
#[tokio::test]
async fn the_documented_postgres_commands_work_and_never_show_the_password() {
    const PASSWORD: &str = "Doc-Pa55word-33f0";
    let db = TestPgDb::secured().await;
    let role = format!("doc_{}", db.name);
    db.create_owner(&role, PASSWORD_GROUP, Some(PASSWORD)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db, &role, PASSWORD);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_convsync"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for step in documented_steps("postgres-connect") {
        let child = tokio::process::Command::new("sh")
            .args(["-c", &step])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("CONVSYNC_CONFIG", &config)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("the command ends")
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{step}:\n{text}");
        assert!(
            !text.contains(PASSWORD),
            "{step} showed the password:\n{text}"
        );
    }
}

/// Loads a config over `db` as `role` with `[database] tls_client_cert` and
/// `tls_client_key` (a file reference) when `client` is given.
fn client_cert_config(
    dir: &std::path::Path,
    db: &TestPgDb,
    role: &str,
    client: Option<&ClientCertFiles>,
) -> Config {
    let keys = client.map_or(String::new(), |files| {
        format!(
            "tls_client_cert = \"{}\"\ntls_client_key = {{ file = \"{}\" }}\n",
            files.cert.display(),
            files.key.display()
        )
    });
    Config::load(&write_config_with(dir, db, role, &keys)).unwrap()
}

/// A server that requires a client certificate (`clientcert=verify-full`) accepts the one
/// its client CA issued for the role, given as `[database] tls_client_cert` and
/// `tls_client_key`; without a certificate, or with one from another CA, the connection is
/// refused with an error that says why and shows no key, in the error, the settings'
/// `Debug` or any log line.
#[tokio::test(flavor = "current_thread")]
async fn a_client_certificate_is_shown_to_a_server_that_requires_one() {
    let db = TestPgDb::secured().await;
    let role = format!("cert_{}", db.name);
    db.create_owner(&role, CLIENT_CERT_GROUP, None).await;
    let (capture, _guard) = trace_capture();
    let dir = tempfile::tempdir().unwrap();
    let right = db.issue_client_cert(&role, dir.path(), true);
    let stranger = db.issue_client_cert(&role, dir.path(), false);
    let keys: Vec<String> = [&right, &stranger]
        .iter()
        .map(|files| std::fs::read_to_string(&files.key).unwrap())
        .collect();

    let config = client_cert_config(dir.path(), &db, &role, Some(&right));
    let store = Store::open(&config.store).await.unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(store.as_postgres().unwrap().pool())
        .await
        .unwrap();
    assert_eq!(user, role);
    assert!(encrypted(&store).await);
    let shown = format!("{store:?} {:?}", config.store);
    store.close().await;

    let config = client_cert_config(dir.path(), &db, &role, None);
    let without = Store::open(&config.store).await.unwrap_err();
    let without = convsync::error_text::error_chain(&without);
    assert!(
        without.contains("cannot connect to postgres://")
            && without.contains("connection requires a valid client certificate")
            && without.contains(&role),
        "{without}"
    );

    let config = client_cert_config(dir.path(), &db, &role, Some(&stranger));
    let foreign = Store::open(&config.store).await.unwrap_err();
    let foreign = convsync::error_text::error_chain(&foreign);
    assert!(
        foreign.contains("cannot connect to postgres://")
            && foreign.contains(&format!("tls_client_cert {}", stranger.cert.display()))
            && foreign.contains("UnknownCA"),
        "{foreign}"
    );

    let everything = format!("{shown}\n{without}\n{foreign}\n{}", capture.text());
    for key in &keys {
        let body = key.lines().nth(1).unwrap();
        assert!(!everything.contains(body), "a key leaked:\n{everything}");
    }
    for words in ["tls_client_key", "PRIVATE KEY"] {
        assert!(!everything.contains(words), "{words} shown:\n{everything}");
    }
}
