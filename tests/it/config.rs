//! Configuration errors name the offending key and say what is expected.

use std::io::Write;

use convsync::config::Config;
use convsync::store::TlsMode;

fn load(text: &str) -> Result<Config, String> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    Config::load(file.path()).map_err(|e| e.to_string())
}

fn assert_error(text: &str, key: &str, fragment: &str) {
    let err = load(text).expect_err("config should be rejected");
    assert!(err.contains(key), "error should name {key:?}: {err}");
    assert!(
        err.contains(fragment),
        "error should say {fragment:?}: {err}"
    );
}

/// Unknown provider names are rejected with the list of valid ones.
#[test]
fn unknown_provider_is_named() {
    assert_error(
        "[[sources]]\nname = \"a\"\nprovider = \"whatsapp\"\n",
        "sources[a].provider",
        "expected one of d365, spruce, sinch, highlevel",
    );
}

/// A bad duration names its key.
#[test]
fn bad_duration_is_named() {
    assert_error(
        "[[sources]]\nname = \"a\"\nprovider = \"spruce\"\npoll_interval = \"5 parsecs\"\n",
        "sources[0].poll_interval",
        "",
    );
}

/// Duplicate source names are refused.
#[test]
fn duplicate_source_names_are_refused() {
    let block = "[[sources]]\nname = \"dup\"\nprovider = \"spruce\"\nenabled = false\n";
    assert_error(
        &format!("{block}{block}"),
        "sources[1].name",
        "duplicate source name",
    );
}

/// Unknown keys are errors, not silently ignored typos.
#[test]
fn unknown_keys_are_refused() {
    assert_error(
        "[database]\nurl = \"sqlite://x.db\"\nbusy_timout = \"5s\"\n",
        "database",
        "busy_timout",
    );
}

/// A provider source without its provider table says which table is missing.
#[test]
fn missing_provider_table_is_named() {
    assert_error(
        "[[sources]]\nname = \"a\"\nprovider = \"spruce\"\n",
        "sources[a].spruce",
        "missing",
    );
}

/// Malformed TOML is an error naming the file position, not a panic.
#[test]
fn malformed_toml_is_an_error() {
    let err = load("[[sources]\nname = ").unwrap_err();
    assert!(!err.is_empty());
}

/// A database URL that is neither SQLite nor PostgreSQL is refused, naming its scheme and
/// never the password it may carry.
#[test]
fn unsupported_database_is_named() {
    assert_error(
        "[database]\nurl = \"mysql://x\"\n",
        "database.url",
        "sqlite://",
    );
    let err = load("[database]\nurl = \"mysql://convsync:hunter2@db/mirror\"\n").unwrap_err();
    assert!(
        err.contains("\"mysql\"") && err.contains("postgres://"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}

/// A PostgreSQL URL, either scheme, selects the PostgreSQL store.
#[test]
fn a_postgres_database_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    for url in [
        "postgres://convsync@db/mirror",
        "postgresql://db:5432/mirror",
    ] {
        let config = load(&format!(
            "[database]\nurl = \"{url}\"\n\n[[sources]]\nname = \"a\"\nprovider = \"spruce\"\n\
             [sources.spruce]\norganization_id = \"entity_1\"\napi_token = {{ file = \"{}\" }}\n",
            token.display()
        ))
        .unwrap();
        assert_eq!(config.store.url, url);
    }
}

/// A config with `database` as its `[database]` table and one valid source, and the
/// directory that holds the source's token (and whatever else the test puts there).
fn with_database(database: &str) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let text = format!(
        "[database]\n{database}\n\n[[sources]]\nname = \"a\"\nprovider = \"spruce\"\n\
         [sources.spruce]\norganization_id = \"entity_1\"\napi_token = {{ file = \"{}\" }}\n",
        token.display()
    );
    (text, dir)
}

/// The PostgreSQL keys: the password read from its secret reference, the TLS mode and root
/// certificate taken as written, `prefer` when unset (as with libpq); the password shows
/// nowhere in the settings' `Debug`.
#[test]
fn postgres_tls_and_password_keys_are_read() {
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("db-password");
    std::fs::write(&password, "s3cret-db-pass\n").unwrap();
    let ca = secrets.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let (text, _dir) = with_database(&format!(
        "url = \"postgres://convsync@db/mirror\"\npassword = {{ file = \"{}\" }}\n\
         tls_mode = \"verify-full\"\ntls_root_cert = \"{}\"",
        password.display(),
        ca.display()
    ));
    let config = load(&text).unwrap();
    assert_eq!(
        config.store.password.as_ref().unwrap().expose(),
        "s3cret-db-pass"
    );
    assert_eq!(config.store.tls.mode, TlsMode::VerifyFull);
    assert_eq!(config.store.tls.root_cert.as_deref(), Some(ca.as_path()));
    let shown = format!("{:?}", config.store);
    assert!(!shown.contains("s3cret-db-pass"), "{shown}");

    let (text, _dir) = with_database("url = \"postgres://convsync@db/mirror\"");
    let config = load(&text).unwrap();
    assert_eq!(config.store.tls.mode, TlsMode::Prefer);
    assert!(config.store.password.is_none());
}

/// The server-only keys on a SQLite URL are a mistake, named by key.
#[test]
fn postgres_keys_are_refused_for_a_sqlite_file() {
    for (key, line) in [
        ("database.tls_mode", "tls_mode = \"require\""),
        ("database.tls_root_cert", "tls_root_cert = \"/ca.pem\""),
        ("database.password", "password = { env = \"DB_PASSWORD\" }"),
        (
            "database.tls_client_cert",
            "tls_client_cert = \"/client.pem\"",
        ),
        (
            "database.tls_client_key",
            "tls_client_key = { env = \"DB_KEY\" }",
        ),
    ] {
        let (text, _dir) = with_database(&format!("url = \"sqlite://mirror.db\"\n{line}"));
        let err = load(&text).unwrap_err();
        assert!(
            err.contains(key) && err.contains("PostgreSQL database only"),
            "{err}"
        );
    }
}

/// One place for each setting: a URL with a password beside `password`, or with TLS or
/// password parameters, is refused, and the error shows no part of the URL's secret.
#[test]
fn a_url_that_sets_what_a_key_sets_is_refused() {
    let (text, _dir) = with_database(
        "url = \"postgres://convsync:hunter2@db/mirror\"\npassword = { env = \"HOME\" }",
    );
    let err = load(&text).unwrap_err();
    assert!(
        err.contains("database.password") && err.contains("one place"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    for (parameter, key) in [
        ("sslmode=verify-full", "database.tls_mode"),
        ("sslrootcert=/ca.pem", "database.tls_root_cert"),
        ("password=hunter2", "database.password"),
        ("sslcert=/client.pem", "database.tls_client_cert"),
        ("sslkey=/client.key", "database.tls_client_key"),
    ] {
        let (text, _dir) = with_database(&format!(
            "url = \"postgres://convsync@db/mirror?{parameter}\""
        ));
        let err = load(&text).unwrap_err();
        assert!(err.contains("database.url") && err.contains(key), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// A root certificate is only useful to a mode that checks the server, and must exist.
#[test]
fn a_root_certificate_needs_a_verifying_mode_and_a_file() {
    let (text, dir) = with_database("url = \"postgres://db/mirror\"");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "pem").unwrap();
    let text = text.replace(
        "[database]\n",
        &format!(
            "[database]\ntls_mode = \"require\"\ntls_root_cert = \"{}\"\n",
            ca.display()
        ),
    );
    let err = load(&text).unwrap_err();
    assert!(
        err.contains("database.tls_root_cert") && err.contains("verify-full"),
        "{err}"
    );
    let (text, _dir) = with_database(
        "url = \"postgres://db/mirror\"\ntls_mode = \"verify-ca\"\ntls_root_cert = \"/nonexistent/ca.pem\"",
    );
    let err = load(&text).unwrap_err();
    assert!(
        err.contains("database.tls_root_cert") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    let (text, _dir) = with_database("url = \"postgres://db/mirror\"\ntls_mode = \"sometimes\"");
    let err = load(&text).unwrap_err();
    assert!(err.contains("database.tls_mode"), "{err}");
}

/// A client certificate comes with its key (and the key with its certificate), needs TLS,
/// and must be readable; the key is read from its secret reference and never shows in the
/// settings' `Debug`.
#[test]
fn a_client_certificate_needs_its_key_tls_and_a_file() {
    let (text, dir) = with_database("url = \"postgres://db/mirror\"");
    let cert = dir.path().join("client.pem");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let key = dir.path().join("client.key");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nclient-key-body\n").unwrap();
    let with = |lines: &str| text.replace("[database]\n", &format!("[database]\n{lines}\n"));
    let cert_line = format!("tls_client_cert = \"{}\"", cert.display());
    let key_line = format!("tls_client_key = {{ file = \"{}\" }}", key.display());

    let config = load(&with(&format!("{cert_line}\n{key_line}"))).unwrap();
    let client = config.store.tls.client.as_ref().unwrap();
    assert_eq!(client.cert, cert);
    assert!(client.key.expose().contains("client-key-body"));
    let shown = format!("{:?}", config.store);
    assert!(!shown.contains("client-key-body"), "{shown}");

    for (lines, key, says) in [
        (cert_line.clone(), "database.tls_client_key", "is missing"),
        (key_line.clone(), "database.tls_client_cert", "is missing"),
        (
            format!("{cert_line}\n{key_line}\ntls_mode = \"disable\""),
            "database.tls_client_cert",
            "needs TLS",
        ),
        (
            format!("tls_client_cert = \"/nonexistent/client.pem\"\n{key_line}"),
            "database.tls_client_cert",
            "/nonexistent/client.pem",
        ),
        (
            format!("{cert_line}\ntls_client_key = {{ file = \"/nonexistent/client.key\" }}"),
            "database.tls_client_key",
            "/nonexistent/client.key",
        ),
    ] {
        let err = load(&with(&lines)).unwrap_err();
        assert!(err.contains(key) && err.contains(says), "{lines}: {err}");
        assert!(!err.contains("client-key-body"), "{err}");
    }
}

/// A password that cannot be read fails the start, naming where it was looked for.
#[test]
fn an_unreadable_password_names_its_reference() {
    let (text, _dir) = with_database(
        "url = \"postgres://db/mirror\"\npassword = { file = \"/nonexistent/db-password\" }",
    );
    let err = load(&text).unwrap_err();
    assert!(
        err.contains("database.password") && err.contains("/nonexistent/db-password"),
        "{err}"
    );
}

/// Out-of-range shares are refused.
#[test]
fn out_of_range_share_is_named() {
    assert_error(
        "[[sources]]\nname = \"a\"\nprovider = \"spruce\"\nmass_change_max_share = 1.5\n\
         [sources.spruce]\norganization_id = \"entity_1\"\napi_token = { env = \"UNSET_FOR_THIS_TEST\" }\n",
        "sources[a].mass_change_max_share",
        "between 0.0 and 1.0",
    );
}

/// A missing config file says how to create one.
#[test]
fn missing_file_says_what_to_do() {
    let err = Config::load(std::path::Path::new("/nonexistent/convsync.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("convsync.example.toml"), "{err}");
}

/// Plain-http base URLs are refused unless they point at loopback.
#[test]
fn plain_http_is_only_allowed_on_loopback() {
    use convsync::config::validate_base_url;
    assert!(validate_base_url("k", "http://127.0.0.1:8080").is_ok());
    assert!(validate_base_url("k", "http://localhost:8080").is_ok());
    assert!(validate_base_url("k", "https://api.sprucehealth.com").is_ok());
    let err = validate_base_url("sources[a].spruce.base_url", "http://api.example.com")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sources[a].spruce.base_url") && err.contains("https"),
        "{err}"
    );
}

/// The shipped example configuration is valid once its secrets exist.
#[test]
fn example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let refresh = dir.path().join("hl-main.refresh");
    std::fs::write(&refresh, "rt-example\n").unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/convsync.example.toml"
    ))
    .unwrap()
    .replace("/etc/convsync/hl-main.refresh", refresh.to_str().unwrap())
    .replace("D365_CLIENT_SECRET", "EXAMPLE_TEST_D365")
    .replace("SPRUCE_API_TOKEN", "EXAMPLE_TEST_SPRUCE")
    .replace("SINCH_KEY_SECRET", "EXAMPLE_TEST_SINCH")
    .replace("HL_CLIENT_SECRET", "EXAMPLE_TEST_HL_CLIENT")
    .replace("HL_PIT_BRANCH", "EXAMPLE_TEST_HL_PIT");
    // SAFETY: test-only variables with names no other test reads.
    for var in [
        "EXAMPLE_TEST_D365",
        "EXAMPLE_TEST_SPRUCE",
        "EXAMPLE_TEST_SINCH",
        "EXAMPLE_TEST_HL_CLIENT",
        "EXAMPLE_TEST_HL_PIT",
    ] {
        unsafe { std::env::set_var(var, "example-secret-value") };
    }
    let config = load(&text).unwrap_or_else(|e| panic!("example config rejected: {e}"));
    let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "contact-center",
            "clinic",
            "whatsapp-support/01EB37HMH1M6SV18ASNS3G135H",
            "hl/ve9EPM428kjkvShlRW1KT",
            "hl/l1C08ntBrFjLS0elLIYU"
        ]
    );
}

/// Caps on what a provider may send refuse values that would break every request or lose
/// every conversation's JSON, naming the key.
#[test]
fn provider_answer_caps_are_validated() {
    assert_error(
        "[http]\nmax_response_bytes = 10\n",
        "http.max_response_bytes",
        "at least 4096 bytes",
    );
    assert_error(
        "[http]\nmax_provider_wait = \"0s\"\n",
        "http.max_provider_wait",
        "greater than zero",
    );
    assert_error(
        "[[sources]]\nname = \"a\"\nprovider = \"spruce\"\nmax_raw_bytes = 10\n",
        "sources[a].max_raw_bytes",
        "at least 1024 bytes",
    );
}

/// A zero `reply_state_horizon` would silently read no reply state at all: it is refused,
/// naming the key and the switch that does that on purpose.
#[test]
fn zero_reply_state_horizon_is_named() {
    assert_error(
        "[[sources]]\nname = \"a\"\nprovider = \"spruce\"\nreply_state_horizon = \"0s\"\n",
        "sources[a].reply_state_horizon",
        "track_reply_state = false",
    );
}

/// A zero `verify_interval` would verify without pause: it is refused, naming the key and
/// how to turn scheduled verification off.
#[test]
fn zero_verify_interval_is_named() {
    assert_error(
        "[[sources]]\nname = \"a\"\nprovider = \"spruce\"\nverify_interval = \"0s\"\n",
        "sources[a].verify_interval",
        "leave it unset",
    );
}

/// Two sources sharing one request budget (the same Spruce organization) with different
/// `rate_limit`s are refused, naming both; the same `rate_limit` on both is accepted.
#[test]
fn conflicting_rate_limits_on_a_shared_budget_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let config = |front: &str, back: &str| {
        let source = |name: &str, rate_limit: &str| {
            format!(
                "[[sources]]\nname = \"{name}\"\nprovider = \"spruce\"\n{rate_limit}\n\
                 [sources.spruce]\norganization_id = \"entity_1\"\n\
                 api_token = {{ file = \"{}\" }}\n\n",
                token.display()
            )
        };
        format!("{}{}", source("front", front), source("back", back))
    };
    let slow = "rate_limit = { requests = 10, per = \"10s\" }";
    let fast = "rate_limit = { requests = 50, per = \"10s\" }";

    assert_error(
        &config(slow, fast),
        "sources[back].rate_limit",
        "\"front\" and \"back\"",
    );
    assert_error(
        &config(slow, fast),
        "sources[back].rate_limit",
        "10 requests per 10s",
    );
    assert_error(
        &config(slow, ""),
        "sources[back].rate_limit",
        "share one request budget",
    );
    assert!(load(&config(slow, slow)).is_ok());
}

/// A minimal valid source, for tests about other sections: its token in a file in `dir`.
fn one_source(dir: &tempfile::TempDir) -> String {
    let token = dir.path().join("spruce.token");
    std::fs::write(&token, "token").unwrap();
    format!(
        "[[sources]]\nname = \"a\"\nprovider = \"spruce\"\n\
         [sources.spruce]\norganization_id = \"entity_1\"\napi_token = {{ file = \"{}\" }}\n",
        token.display()
    )
}

/// `[replicas]`: a name and a lease's lifetime are read and checked by key; without a
/// name a replica is called after its host and process.
#[test]
fn replica_settings_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let one_source = one_source(&dir);
    let config = load(&format!(
        "[replicas]\nname = \"web-1\"\nlease_ttl = \"45s\"\nmax_scopes = 12\n{one_source}"
    ))
    .unwrap();
    assert_eq!(config.replicas.name.as_str(), "web-1");
    assert_eq!(
        config.replicas.lease_ttl,
        std::time::Duration::from_secs(45)
    );
    assert_eq!(config.replicas.max_scopes, 12);

    let defaults = load(&one_source).unwrap().replicas;
    assert_eq!(defaults.lease_ttl, std::time::Duration::from_secs(30));
    assert_eq!(defaults.max_scopes, 0);
    let pid = format!(":{}", std::process::id());
    assert!(
        defaults.name.as_str().ends_with(&pid) && defaults.name.as_str().len() > pid.len(),
        "{}",
        defaults.name
    );

    assert_error(
        &format!("[replicas]\nlease_ttl = \"2s\"\n{one_source}"),
        "replicas.lease_ttl",
        "at least 5s",
    );
    assert_error(
        &format!("[replicas]\nname = \"  \"\n{one_source}"),
        "replicas.name",
        "must not be empty",
    );
}

/// `CONVSYNC_REPLICAS__*` overrides `[replicas]` like the other sections' variables, so each
/// replica of one shared file gets its own name from its environment.
#[test]
fn replica_settings_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("convsync.toml");
    std::fs::write(&path, one_source(&dir)).unwrap();
    // In a child process: the variable must not leak into this process's other tests.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_convsync"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env("CONVSYNC_REPLICAS__LEASE_TTL", "1s")
        .env("CONVSYNC_REPLICAS__NAME", "web-2")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("replicas.lease_ttl"), "{text}");
}

/// `[history] backfill` and `[retention] events_after` are read; the default records a
/// first_seen per conversation, an unknown mode and a zero window are refused by name.
#[test]
fn history_keys_are_read_and_checked() {
    use convsync::store::BackfillEvents;
    let (base, _dir) = with_database("url = \"sqlite://mirror.db\"");
    let default = load(&base).unwrap();
    assert_eq!(default.history.backfill, BackfillEvents::FirstSeen);
    assert_eq!(default.retention.policy.events_after, None);

    let set = format!(
        "[history]\nbackfill = \"none\"\n\n[retention]\nevents_after = \"400days\"\n\n{base}"
    );
    let config = load(&set).unwrap();
    assert_eq!(config.history.backfill, BackfillEvents::None);
    assert_eq!(
        config.retention.policy.events_after,
        Some(std::time::Duration::from_secs(400 * 86_400))
    );

    assert_error(
        &format!("[history]\nbackfill = \"everything\"\n\n{base}"),
        "history.backfill",
        "first_seen",
    );
    assert_error(
        &format!("[retention]\nevents_after = \"0s\"\n\n{base}"),
        "retention.events_after",
        "greater than zero",
    );
}
