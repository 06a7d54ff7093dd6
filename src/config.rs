//! Configuration: built-in defaults, then the TOML file, then `CONVSYNC_*` environment
//! variables (`__` for nesting, e.g. `CONVSYNC_DATABASE__URL`). Everything is validated and
//! turned into runtime settings here, once, so that a mistake fails the start with the
//! offending key's name instead of failing the first poll.

mod webhooks;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::config_error::{ConfigError, validate_base_url};
use crate::http::{HttpSettings, RateQuota, RetryPolicy};
use crate::provider::directory::AccountDirectory;
use crate::provider::{self, ProviderKind, ProviderSetup, ProviderTable};
use crate::secret::SecretRef;
use crate::store::{
    BackendKind, BackfillEvents, ClientIdentity, MassChangeGuard, ReplicaName, RetentionPolicy,
    StoreSettings, TlsMode, TlsSettings,
};
pub use webhooks::{WebhookSettings, WebhooksConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the mirror lives.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// The shared HTTP client.
    #[serde(default)]
    pub http: HttpConfig,
    /// The health and metrics endpoint.
    #[serde(default)]
    pub health: HealthConfig,
    /// How long personal data is kept (default: for ever).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// How replicas sharing one PostgreSQL database divide the sources.
    #[serde(default)]
    pub replicas: ReplicasConfig,
    /// What the change history (`conversation_events`) records during a backfill.
    #[serde(default)]
    pub history: HistoryConfig,
    /// The webhook receiver (off unless `listen` is set).
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// The provider accounts to mirror. Not overridable from the environment.
    #[serde(default, skip_serializing)]
    pub sources: Vec<SourceConfig>,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` (the file is created, mode 0600, if missing), or a
    /// PostgreSQL database: `postgres://user@host:5432/database`, with TLS and the password
    /// in the keys below (docs/deploy.md, "PostgreSQL").
    pub url: String,
    /// How long a write waits for another writer (a report tool, a backup) to release the
    /// lock before the page is retried.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long an item in `rejected_records` is kept after it was last seen (an item a
    /// provider still sends is kept, with its count; one fixed at the source ages out).
    #[serde(with = "humantime_serde")]
    pub rejected_records_retention: Duration,
    /// PostgreSQL only: the role's password, as a secret reference like every other
    /// secret (never in the URL, so it stays out of logs and `status`).
    #[serde(skip_serializing)]
    pub password: Option<SecretRef>,
    /// PostgreSQL only: libpq's `sslmode` (`disable`, `allow`, `prefer`, `require`,
    /// `verify-ca`, `verify-full`); unset means `prefer`, as with libpq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_mode: Option<TlsMode>,
    /// PostgreSQL only: the CA certificate (PEM) that signed the server's certificate, for
    /// `verify-ca` and `verify-full`; unset trusts the public roots built in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_root_cert: Option<PathBuf>,
    /// PostgreSQL only: the client certificate (PEM) this process shows a server that
    /// requires one (`clientcert=verify-full` in `pg_hba.conf`); needs `tls_client_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<PathBuf>,
    /// PostgreSQL only: the client certificate's private key (PEM), as a secret reference
    /// like `password`.
    #[serde(skip_serializing)]
    pub tls_client_key: Option<SecretRef>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let s = StoreSettings::default();
        DatabaseConfig {
            url: s.url,
            busy_timeout: s.busy_timeout,
            max_connections: s.max_connections,
            rejected_records_retention: s.rejected_records_retention,
            password: None,
            tls_mode: None,
            tls_root_cert: None,
            tls_client_cert: None,
            tls_client_key: None,
        }
    }
}

/// Query parameters of a PostgreSQL URL that `[database]` keys set instead: one place for
/// each setting, and a URL that never carries a secret.
const URL_PARAMETERS_OF_KEYS: [(&str, &str); 11] = [
    ("sslmode", "tls_mode"),
    ("ssl-mode", "tls_mode"),
    ("sslrootcert", "tls_root_cert"),
    ("ssl-root-cert", "tls_root_cert"),
    ("ssl-ca", "tls_root_cert"),
    ("sslcert", "tls_client_cert"),
    ("ssl-cert", "tls_client_cert"),
    ("sslkey", "tls_client_key"),
    ("ssl-key", "tls_client_key"),
    ("password", "password"),
    ("passfile", "password"),
];

impl DatabaseConfig {
    /// The store's settings: the URL's backend checked, the server-only keys refused for a
    /// SQLite file, the password resolved from its reference (the one secret that the
    /// commands which only read the mirror need).
    pub fn settings(&self) -> Result<StoreSettings, ConfigError> {
        // The errors name the URL's scheme or parameter names alone: it may hold a password.
        let backend = BackendKind::of(&self.url)
            .map_err(|unsupported| ConfigError::new("database.url", unsupported.to_string()))?;
        if self.rejected_records_retention.is_zero() {
            return Err(ConfigError::new(
                "database.rejected_records_retention",
                "must be greater than zero, such as \"30d\"",
            ));
        }
        let tls = match backend {
            BackendKind::Sqlite => {
                self.refuse_server_keys()?;
                TlsSettings::default()
            }
            BackendKind::Postgres => self.server_tls()?,
        };
        let password = match &self.password {
            Some(reference) => Some(reference.resolve().map_err(|e| {
                ConfigError::new(
                    "database.password",
                    format!(
                        "cannot read the database password ({}): {e}",
                        reference.describe()
                    ),
                )
            })?),
            None => None,
        };
        Ok(StoreSettings {
            url: self.url.clone(),
            busy_timeout: self.busy_timeout,
            max_connections: self.max_connections,
            rejected_records_retention: self.rejected_records_retention,
            password,
            tls,
        })
    }

    /// A SQLite file is opened, not connected to: a password or TLS key is a mistake (most
    /// likely a PostgreSQL URL that was meant), not something to ignore.
    fn refuse_server_keys(&self) -> Result<(), ConfigError> {
        let set = [
            ("password", self.password.is_some()),
            ("tls_mode", self.tls_mode.is_some()),
            ("tls_root_cert", self.tls_root_cert.is_some()),
            ("tls_client_cert", self.tls_client_cert.is_some()),
            ("tls_client_key", self.tls_client_key.is_some()),
        ];
        match set.into_iter().find(|(_, is_set)| *is_set) {
            Some((key, _)) => Err(ConfigError::new(
                format!("database.{key}"),
                "applies to a PostgreSQL database only, but database.url names a SQLite file \
                 (sqlite://...): remove the key, or use a postgres:// URL",
            )),
            None => Ok(()),
        }
    }

    /// The TLS settings of a PostgreSQL connection, after refusing a URL that sets what a
    /// key sets (or carries a password) and a root certificate that no mode would check.
    fn server_tls(&self) -> Result<TlsSettings, ConfigError> {
        if let Ok(url) = url::Url::parse(&self.url) {
            if url.password().is_some() && self.password.is_some() {
                return Err(ConfigError::new(
                    "database.password",
                    "database.url carries a password too: keep it in one place, remove it \
                     from the URL",
                ));
            }
            for (parameter, _) in url.query_pairs() {
                if let Some((_, key)) = URL_PARAMETERS_OF_KEYS
                    .iter()
                    .find(|(name, _)| *name == parameter)
                {
                    return Err(ConfigError::new(
                        "database.url",
                        format!(
                            "the URL sets `{parameter}`: set database.{key} instead (one place \
                             for each setting, and no secret in the URL)"
                        ),
                    ));
                }
            }
        }
        let mode = self.tls_mode.unwrap_or_default();
        let client = self.client_identity(mode)?;
        let Some(root_cert) = &self.tls_root_cert else {
            return Ok(TlsSettings {
                mode,
                root_cert: None,
                client,
            });
        };
        if !mode.verifies_server() {
            return Err(ConfigError::new(
                "database.tls_root_cert",
                format!(
                    "is only used to check the server, but database.tls_mode is {mode}: set \
                     tls_mode = \"verify-full\" (or \"verify-ca\")"
                ),
            ));
        }
        if let Err(error) = std::fs::File::open(root_cert) {
            return Err(ConfigError::new(
                "database.tls_root_cert",
                format!(
                    "CA certificate {}",
                    crate::file_access::describe(root_cert, &error)
                ),
            ));
        }
        Ok(TlsSettings {
            mode,
            root_cert: Some(root_cert.clone()),
            client,
        })
    }

    /// The client certificate and its key, both or neither, the certificate readable and
    /// the key resolved from its reference; refused with `tls_mode = "disable"`, which
    /// never shows it.
    fn client_identity(&self, mode: TlsMode) -> Result<Option<ClientIdentity>, ConfigError> {
        let (cert, key) = match (&self.tls_client_cert, &self.tls_client_key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "database.tls_client_key",
                    "is missing: database.tls_client_cert needs its private key (a secret \
                     reference, like password)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "database.tls_client_cert",
                    "is missing: database.tls_client_key is set, but not the certificate \
                     (PEM) it belongs to",
                ));
            }
        };
        if mode == TlsMode::Disable {
            return Err(ConfigError::new(
                "database.tls_client_cert",
                "needs TLS, but database.tls_mode is disable: set tls_mode = \"verify-full\"",
            ));
        }
        if let Err(error) = std::fs::File::open(cert) {
            return Err(ConfigError::new(
                "database.tls_client_cert",
                format!(
                    "client certificate {}",
                    crate::file_access::describe(cert, &error)
                ),
            ));
        }
        let key = key.resolve().map_err(|e| {
            ConfigError::new(
                "database.tls_client_key",
                format!(
                    "cannot read the client certificate's key ({}): {e}",
                    key.describe()
                ),
            )
        })?;
        Ok(Some(ClientIdentity {
            cert: cert.clone(),
            key,
        }))
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whole-request timeout.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of a transient failure (connection error, timeout, 408, 429, 5xx).
    pub max_retries: usize,
    /// First backoff delay (jittered, doubling).
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Longest backoff delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Rate-limit pauses longer than this end the cycle (resumed later) instead of waiting.
    #[serde(with = "humantime_serde")]
    pub max_inline_pause: Duration,
    /// The longest wait a provider may impose through `Retry-After` or its rate-limit
    /// headers; a longer one is clamped to this, with a warning.
    #[serde(with = "humantime_serde")]
    pub max_provider_wait: Duration,
    /// The largest response body, in bytes, read from a provider or token endpoint; a
    /// larger answer fails its request (not retried) with an error naming this key.
    pub max_response_bytes: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let h = HttpSettings::default();
        HttpConfig {
            timeout: h.timeout,
            connect_timeout: h.connect_timeout,
            max_retries: h.retry.max_retries,
            min_backoff: h.retry.min_delay,
            max_backoff: h.retry.max_delay,
            max_inline_pause: h.max_inline_pause,
            max_provider_wait: h.max_provider_wait,
            max_response_bytes: h.max_response_bytes,
        }
    }
}

/// Most connections `[health] max_connections` may allow: each takes a file descriptor.
const MAX_HEALTH_CONNECTIONS: usize = 1024;

/// `[health]`: the HTTP endpoint for `/healthz`, `/readyz` and `/metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Serve the endpoint at all.
    pub enabled: bool,
    /// Listen address (`127.0.0.1:9477`; `0.0.0.0:9477` in containers).
    pub listen: String,
    /// A source is "late" (not ready) when its last successful cycle is older than this
    /// many poll intervals.
    pub ready_after_intervals: f64,
    /// A connection that has not sent a whole request within this time (an idle or slow
    /// client) is closed, so that idle sockets cannot pile up.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Connections served at once; further clients wait in the listen queue. Bounds the
    /// file descriptors the endpoint can take from the providers' connections.
    pub max_connections: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            listen: "127.0.0.1:9477".into(),
            ready_after_intervals: 3.0,
            read_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// `lease_ttl` at least: a shorter lease would expire under ordinary database latency.
const MIN_LEASE_TTL: Duration = Duration::from_secs(5);

/// `[replicas]`: several `convsync run` processes with the same configuration and the same
/// PostgreSQL database share its sources, each rate-limit scope (a HighLevel location, a
/// Spruce organization, a Sinch project, a D365 org) run by one replica at a time under a
/// lease (docs/deploy.md, "Running several replicas"). Ignored on SQLite, whose file has
/// one daemon.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicasConfig {
    /// This replica's name, unique among those sharing the database: it is stored as the
    /// owner of its leases and in `sync_runs.replica`. Default: `hostname:pid`.
    pub name: Option<String>,
    /// How long a lease lasts unless renewed (every third of it). A replica that dies
    /// without releasing its scopes (SIGKILL, a lost host) leaves them to the others after
    /// about this long; at least 5 s.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Most scopes this replica runs at once; 0: its fair share alone (the scopes divided
    /// by the live replicas, rounded up).
    pub max_scopes: usize,
}

impl Default for ReplicasConfig {
    fn default() -> Self {
        ReplicasConfig {
            name: None,
            lease_ttl: Duration::from_secs(30),
            max_scopes: 0,
        }
    }
}

/// The validated `[replicas]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// This replica's name.
    pub name: ReplicaName,
    /// How long a lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// Most scopes held at once; 0 for the fair share alone.
    pub max_scopes: usize,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        let defaults = ReplicasConfig::default();
        ReplicaSettings {
            name: default_replica_name(),
            lease_ttl: defaults.lease_ttl,
            max_scopes: defaults.max_scopes,
        }
    }
}

impl ReplicasConfig {
    /// Checks the name and the lease's lifetime.
    pub fn validate(&self) -> Result<ReplicaSettings, ConfigError> {
        let name = match &self.name {
            Some(name) => ReplicaName::new(name)
                .map_err(|why| ConfigError::new("replicas.name", format!("{name:?} {why}")))?,
            None => default_replica_name(),
        };
        if self.lease_ttl < MIN_LEASE_TTL {
            return Err(ConfigError::new(
                "replicas.lease_ttl",
                format!(
                    "{} is too short: expected at least 5s (default 30s)",
                    humantime::format_duration(self.lease_ttl)
                ),
            ));
        }
        Ok(ReplicaSettings {
            name,
            lease_ttl: self.lease_ttl,
            max_scopes: self.max_scopes,
        })
    }
}

/// `hostname:pid`: unique per process on a host, and says where to look.
fn default_replica_name() -> ReplicaName {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let host = if host.trim().is_empty() {
        "convsync".to_owned()
    } else {
        host
    };
    let name = format!("{host}:{}", std::process::id());
    ReplicaName::new(&name).unwrap_or_else(|_| {
        ReplicaName::new(&format!("convsync:{}", std::process::id()))
            .expect("a plain name is valid")
    })
}

/// `[retention]`: how long the mirror keeps personal data. Every key unset (the default)
/// keeps everything; `convsync purge` and the daemon apply the set ones.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Clear `raw`, `title` and the contact columns of conversations closed or deleted
    /// longer ago than this (and unchanged since).
    #[serde(with = "humantime_serde")]
    pub redact_closed_after: Option<Duration>,
    /// Remove conversations closed or deleted longer ago than this (and unchanged since).
    #[serde(with = "humantime_serde")]
    pub delete_closed_after: Option<Duration>,
    /// Remove `rejected_records` rows older than this (they hold the provider's raw JSON).
    #[serde(with = "humantime_serde")]
    pub rejected_records_after: Option<Duration>,
    /// Remove finished `sync_runs` rows older than this (each source's latest are kept).
    #[serde(with = "humantime_serde")]
    pub sync_runs_after: Option<Duration>,
    /// Remove `conversation_events` rows observed longer ago than this (a conversation's
    /// events also go when the conversation is deleted).
    #[serde(with = "humantime_serde")]
    pub events_after: Option<Duration>,
    /// How often `convsync run` applies the keys above.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            redact_closed_after: None,
            delete_closed_after: None,
            rejected_records_after: None,
            sync_runs_after: None,
            events_after: None,
            interval: Duration::from_secs(3600),
        }
    }
}

/// The validated `[retention]` section.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// What to purge.
    pub policy: RetentionPolicy,
    /// How often the daemon purges.
    pub interval: Duration,
}

impl RetentionConfig {
    /// Checks each key (a zero duration would purge a conversation the moment it closes).
    pub fn validate(&self) -> Result<RetentionSettings, ConfigError> {
        let keys = [
            ("redact_closed_after", self.redact_closed_after),
            ("delete_closed_after", self.delete_closed_after),
            ("rejected_records_after", self.rejected_records_after),
            ("sync_runs_after", self.sync_runs_after),
            ("events_after", self.events_after),
            ("interval", Some(self.interval)),
        ];
        for (key, value) in keys {
            if value.is_some_and(|v| v.is_zero()) {
                return Err(ConfigError::new(
                    format!("retention.{key}"),
                    "must be greater than zero, such as \"90d\" (leave it unset to keep everything)",
                ));
            }
        }
        Ok(RetentionSettings {
            policy: RetentionPolicy {
                redact_closed_after: self.redact_closed_after,
                delete_closed_after: self.delete_closed_after,
                rejected_records_after: self.rejected_records_after,
                sync_runs_after: self.sync_runs_after,
                events_after: self.events_after,
                webhook_deliveries_after: None,
            },
            interval: self.interval,
        })
    }
}

/// `[history]`: the change history (`conversation_events`, docs/schema.md "Change
/// history"). Every later change is always recorded; only the backfill is a choice.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// What a source's backfill (its pages before its first cycle that caught up) records:
    /// `"first_seen"` (the default: one event per conversation, so the feed lists every
    /// conversation) or `"none"` (the history starts when the backfill is over). Replicas
    /// sharing a database must agree: the database keeps the latest started one's value.
    pub backfill: BackfillEvents,
}

// The provider tables (`[sources.<name>]`, one per provider) are appended from the registry.
provider::registry::with_provider_tables! {
    /// `[[sources]]`: one provider account.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SourceConfig {
        /// Unique name; used in the mirror's `source` column, logs and metrics.
        pub name: String,
        /// The provider's name ([`ProviderKind`]); its settings are the `[sources.<name>]`
        /// table of the same name.
        pub provider: String,
        /// Set to false to keep the config but not poll.
        #[serde(default = "default_true")]
        pub enabled: bool,
        /// Time between cycles (provider default when absent: 60 s; D365 at least 60 s).
        #[serde(default, with = "humantime_serde")]
        pub poll_interval: Option<Duration>,
        /// Random share (0–0.5) added to or taken from each interval so that sources do not
        /// poll in lockstep.
        #[serde(default = "default_jitter")]
        pub poll_jitter: f64,
        /// How far before the watermark each delta starts again, so that listings that are
        /// eventually consistent or share timestamps at page boundaries lose nothing.
        #[serde(default, with = "humantime_serde")]
        pub lookback: Option<Duration>,
        /// Time between full sweeps that detect closures, deletions and changes the deltas
        /// cannot see.
        #[serde(default, with = "humantime_serde")]
        pub sweep_interval: Option<Duration>,
        /// Time between the daemon's verifications of this source against the provider
        /// (`convsync verify`, at background priority in the source's budget). Off when
        /// absent.
        #[serde(default, with = "humantime_serde")]
        pub verify_interval: Option<Duration>,
        /// Request quota for this credential (provider's documented default when absent).
        #[serde(default)]
        pub rate_limit: Option<RateLimitConfig>,
        /// Guard against endless pagination: a cycle stops (resumable) after this many pages.
        #[serde(default = "default_max_pages")]
        pub max_pages_per_cycle: u32,
        /// A cycle with no completed page for this long is abandoned.
        #[serde(default = "default_stall", with = "humantime_serde")]
        pub stall_timeout: Duration,
        /// Provider timestamps further in the future than this do not move the watermark.
        /// At most `lookback` (refused otherwise); when absent, 2 minutes or the lookback if
        /// that is shorter.
        #[serde(default, with = "humantime_serde")]
        pub max_clock_skew: Option<Duration>,
        /// A sweep that would close or delete more than this share of rows applies nothing.
        #[serde(default = "default_share")]
        pub mass_change_max_share: f64,
        /// Absences up to this count are always applied (small mirrors).
        #[serde(default = "default_floor")]
        pub mass_change_floor: u64,
        /// Follow-up requests (messages, items) per cycle at most.
        #[serde(default = "default_follow_ups")]
        pub max_follow_ups_per_cycle: u32,
        /// The largest provider JSON, in bytes, kept in a conversation's `raw` column; a
        /// conversation whose JSON is larger is stored with all its columns but a small
        /// stand-in for `raw` (docs/schema.md).
        #[serde(default = "default_max_raw_bytes")]
        pub max_raw_bytes: usize,
        /// A walk that gets this many pages in a row with no conversations, each naming a
        /// next page, is stopped as broken (the cycle ends `stalled`; the other walks run).
        #[serde(default = "default_max_empty_pages")]
        pub max_empty_pages: u32,
        /// In `sync --once`, the longest total time this source waits out the provider's rate
        /// limits before it gives up and reports `rate_limited` (non-zero exit). The daemon
        /// waits as long as the provider asks.
        #[serde(default = "default_once_max_rate_limit_wait", with = "humantime_serde")]
        pub once_max_rate_limit_wait: Duration,
        /// Who spoke last (a per-conversation request, e.g. Spruce's items) is read only for
        /// open conversations whose last activity lies within this span before now; older or
        /// closed ones keep it unknown (NULL) until they see new activity. Keeps a first sync,
        /// or the catch-up after long downtime, from spending hours of the provider's budget on
        /// conversations nobody is waiting on.
        #[serde(default = "default_reply_state_horizon", with = "humantime_serde")]
        pub reply_state_horizon: Duration,
    }
}

/// `rate_limit = { requests = 100, per = "10s" }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per window.
    pub requests: u32,
    /// The window.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Back-to-back requests allowed (default 1: evenly spaced).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_true() -> bool {
    true
}
fn default_jitter() -> f64 {
    0.1
}
fn default_max_pages() -> u32 {
    100_000
}
fn default_stall() -> Duration {
    Duration::from_secs(300)
}
fn default_share() -> f64 {
    0.5
}
fn default_floor() -> u64 {
    5
}
fn default_follow_ups() -> u32 {
    500
}
fn default_burst() -> u32 {
    1
}
fn default_max_raw_bytes() -> usize {
    1024 * 1024
}
fn default_max_empty_pages() -> u32 {
    10
}
fn default_once_max_rate_limit_wait() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_reply_state_horizon() -> Duration {
    Duration::from_secs(30 * 86_400)
}

/// Scheduling of one source's cycles.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Time between cycles.
    pub poll_interval: Duration,
    /// Random share of the interval.
    pub poll_jitter: f64,
    /// Delta overlap.
    pub lookback: Duration,
    /// Time between sweeps.
    pub sweep_interval: Duration,
    /// Time between the daemon's verifications; `None`: none.
    pub verify_interval: Option<Duration>,
    /// Page cap per cycle.
    pub max_pages_per_cycle: u32,
    /// Stall timeout.
    pub stall_timeout: Duration,
    /// Future guard.
    pub max_clock_skew: Duration,
    /// Follow-ups per cycle.
    pub max_follow_ups_per_cycle: u32,
    /// Largest `raw` JSON stored per conversation.
    pub max_raw_bytes: usize,
    /// Empty pages in a row that mark a walk as broken.
    pub max_empty_pages: u32,
    /// Total rate-limit wait after which `sync --once` gives up on the source.
    pub once_max_rate_limit_wait: Duration,
    /// Reply state is read only for open conversations active within this span.
    pub reply_state_horizon: Duration,
}

/// A validated source, ready to be turned into a running task.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Unique name.
    pub name: String,
    /// The provider adapter and its authentication.
    pub setup: ProviderSetup,
    /// When to poll.
    pub schedule: Schedule,
    /// Sweep guard.
    pub guard: MassChangeGuard,
    /// Request quota (explicit or the provider's default).
    pub quota: Option<RateQuota>,
}

/// A source entry whose accounts are found at the provider (a HighLevel agency): each
/// account becomes a source `entry/account` with these settings.
#[derive(Debug, Clone)]
pub struct DirectorySettings {
    /// The `[[sources]]` entry's name.
    pub entry: String,
    /// Its provider.
    pub kind: ProviderKind,
    /// Lists the accounts and builds each one's adapter.
    pub directory: Arc<dyn AccountDirectory>,
    /// Each account's schedule.
    pub schedule: Schedule,
    /// Each account's sweep guard.
    pub guard: MassChangeGuard,
    /// Each account's request quota (explicit or the provider's default).
    pub quota: Option<RateQuota>,
}

impl DirectorySettings {
    /// The source of one account the directory listed, given its adapter.
    pub fn source(&self, setup: ProviderSetup) -> SourceSettings {
        let name = expanded_name(&self.entry, setup.name_suffix.as_deref());
        let mut setup = setup;
        setup.auth.name_source(&name);
        SourceSettings {
            name,
            setup,
            schedule: self.schedule.clone(),
            guard: self.guard,
            quota: self.quota,
        }
    }
}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Database settings.
    pub store: StoreSettings,
    /// HTTP settings.
    pub http: HttpSettings,
    /// Health endpoint settings.
    pub health: HealthConfig,
    /// What retention purges, and how often.
    pub retention: RetentionSettings,
    /// How replicas share a PostgreSQL database's sources.
    pub replicas: ReplicaSettings,
    /// What the change history records during a backfill.
    pub history: HistoryConfig,
    /// The webhook receiver.
    pub webhooks: WebhookSettings,
    /// Enabled sources.
    pub sources: Vec<SourceSettings>,
    /// Enabled entries whose sources are found at the provider at start-up (a HighLevel
    /// agency's installed locations), by `crate::sync::discovery`.
    pub directories: Vec<DirectorySettings>,
    /// Names of sources present but disabled.
    pub disabled_sources: Vec<String>,
    /// Every source name the file yields, enabled or not (to tell which of the
    /// database's sources are no longer configured).
    pub configured: Vec<ConfiguredSource>,
}

/// The smallest `http.max_response_bytes` accepted: below this even a token answer or an
/// error body would not fit.
const MIN_RESPONSE_BYTES: u64 = 4096;

/// The smallest `max_raw_bytes` accepted: below this most ordinary conversations would lose
/// their raw JSON.
const MIN_RAW_BYTES: usize = 1024;
/// `max_clock_skew` when the file does not set it (capped at the source's lookback).
const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(120);

/// `once_max_rate_limit_wait` at most: a one-shot sync always ends within a day.
const MAX_ONCE_RATE_LIMIT_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "CONVSYNC_CONFIG";

impl Config {
    /// Loads, merges and validates the configuration from `path` (the file must exist) and
    /// the environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = Self::load_file(path)?;
        Self::validate(file)
    }

    /// Loads and merges without validating sources (for `migrate`, which needs only the
    /// database).
    pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
        // Opened rather than tested with `exists()`, which calls an unreadable file missing.
        if let Err(error) = std::fs::File::open(path) {
            let hint = match error.kind() {
                std::io::ErrorKind::NotFound => " (copy config/convsync.example.toml and edit it)",
                _ => "",
            };
            return Err(ConfigError::new(
                "--config",
                format!("file {}{hint}", crate::file_access::describe(path, &error)),
            ));
        }
        Figment::from(Serialized::defaults(FileConfig::default()))
            .merge(Toml::file_exact(path))
            .merge(environment())
            .extract::<FileConfig>()
            .map_err(figment_error)
    }

    /// Validates a parsed file and resolves secrets; the first mistake is the error.
    pub fn validate(file: FileConfig) -> Result<Config, ConfigError> {
        Self::validate_all(file).map_err(|mut mistakes| mistakes.swap_remove(0))
    }

    /// Validates a parsed file and resolves secrets, reporting every mistake found (at
    /// least one on `Err`; within one source, its first), so `check-config` can list them
    /// all in one go.
    pub fn validate_all(file: FileConfig) -> Result<Config, Vec<ConfigError>> {
        let mut mistakes = Vec::new();
        let store = file
            .database
            .settings()
            .map_err(|mistake| mistakes.push(mistake))
            .ok();
        let mut retention = file.retention.validate().map_err(|e| vec![e])?;
        let webhooks = file
            .webhooks
            .validate(&file.health.listen)
            .map_err(|e| vec![e])?;
        if webhooks.listen.is_some() {
            // The webhook dedupe keys go with the `[retention]` purge.
            retention.policy.webhook_deliveries_after = Some(webhooks.dedupe_retention);
        }
        let replicas = file.replicas.validate().map_err(|e| vec![e])?;
        if file.http.timeout.is_zero() {
            mistakes.push(ConfigError::new(
                "http.timeout",
                "must be greater than zero",
            ));
        }
        if file.http.max_provider_wait.is_zero() {
            mistakes.push(ConfigError::new(
                "http.max_provider_wait",
                "must be greater than zero, such as \"1h\" (a provider's longer waits are clamped to it)",
            ));
        }
        if file.http.max_response_bytes < MIN_RESPONSE_BYTES {
            mistakes.push(ConfigError::new(
                "http.max_response_bytes",
                format!(
                    "{} is too small for a provider's page: expected at least {MIN_RESPONSE_BYTES} bytes (default 16777216, 16 MiB)",
                    file.http.max_response_bytes
                ),
            ));
        }
        let listen = file.health.listen.trim();
        if listen.parse::<std::net::SocketAddr>().is_err() {
            mistakes.push(ConfigError::new(
                "health.listen",
                format!(
                    "{:?} is not an address: expected IP:PORT such as 127.0.0.1:9477 (0.0.0.0:9477 in a container)",
                    file.health.listen
                ),
            ));
        }
        let intervals = file.health.ready_after_intervals;
        if !(intervals.is_finite() && intervals > 0.0) {
            mistakes.push(ConfigError::new(
                "health.ready_after_intervals",
                "must be a number of poll intervals greater than 0, such as 3.0",
            ));
        }
        if file.health.read_timeout.is_zero() {
            mistakes.push(ConfigError::new(
                "health.read_timeout",
                "must be greater than zero, such as \"10s\"",
            ));
        }
        if !(1..=MAX_HEALTH_CONNECTIONS).contains(&file.health.max_connections) {
            mistakes.push(ConfigError::new(
                "health.max_connections",
                format!("must be between 1 and {MAX_HEALTH_CONNECTIONS}, such as 64"),
            ));
        }
        let mut names = HashSet::new();
        let mut sources = Vec::new();
        let mut directories = Vec::new();
        let mut disabled = Vec::new();
        for (index, source) in file.sources.iter().enumerate() {
            let key = format!("sources[{index}]");
            if !names.insert(source.name.clone()) {
                mistakes.push(ConfigError::new(
                    format!("{key}.name"),
                    format!(
                        "duplicate source name {:?}: names must be unique",
                        source.name
                    ),
                ));
                continue;
            }
            if !source.enabled {
                disabled.push(source.name.clone());
                continue;
            }
            match validate_source(&key, source) {
                Ok((expanded, directory)) => {
                    sources.extend(expanded);
                    directories.extend(directory);
                }
                Err(e) => mistakes.push(e),
            }
        }
        let mut expanded = HashSet::new();
        for source in &sources {
            if !expanded.insert(source.name.as_str()) {
                mistakes.push(ConfigError::new(
                    format!("sources[{}].name", source.name),
                    "two [[sources]] entries yield this source name (an entry named like \
                     `name/<locationId>` or `name/<appId>` of another): rename one",
                ));
            }
        }
        mistakes.extend(conflicting_quotas(&sources));
        if file.sources.is_empty() {
            mistakes.push(ConfigError::new(
                "sources",
                "no [[sources]] configured: add at least one provider account",
            ));
        }
        let Some(store) = store.filter(|_| mistakes.is_empty()) else {
            return Err(mistakes);
        };
        let configured = file.configured_sources();
        Ok(Config {
            store,
            http: HttpSettings {
                timeout: file.http.timeout,
                connect_timeout: file.http.connect_timeout,
                retry: RetryPolicy {
                    max_retries: file.http.max_retries,
                    min_delay: file.http.min_backoff,
                    max_delay: file.http.max_backoff,
                },
                max_inline_pause: file.http.max_inline_pause,
                max_provider_wait: file.http.max_provider_wait,
                max_response_bytes: file.http.max_response_bytes,
            },
            health: file.health,
            retention,
            replicas,
            history: file.history,
            webhooks,
            sources,
            directories,
            disabled_sources: disabled,
            configured,
        })
    }
}

/// `CONVSYNC_*` variables for the `database`, `http`, `health` and `replicas` sections
/// only (`CONVSYNC_REPLICAS__NAME=web-1`), so that unrelated variables (secrets named
/// `CONVSYNC_...`, `CONVSYNC_CONFIG`) are never read as config keys.
fn environment() -> Env {
    Env::prefixed("CONVSYNC_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            ["database__", "http__", "health__", "replicas__"]
                .iter()
                .any(|section| key.starts_with(section))
        })
        .split("__")
}

fn figment_error(err: figment::Error) -> ConfigError {
    let mut messages = Vec::new();
    let mut first_key = None;
    for e in err {
        let key = display_path(&e.path);
        first_key.get_or_insert_with(|| key.clone());
        let origin = e
            .metadata
            .as_ref()
            .map(|m| format!(" (from {})", m.name))
            .unwrap_or_default();
        messages.push(format!("{}{origin}", e.kind));
    }
    ConfigError::new(
        first_key.unwrap_or_else(|| "(file)".into()),
        messages.join("; "),
    )
}

/// `["sources", "0", "poll_interval"]` → `sources[0].poll_interval`.
fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    if out.is_empty() { "(root)".into() } else { out }
}

fn validate_source(
    key: &str,
    source: &SourceConfig,
) -> Result<(Vec<SourceSettings>, Option<DirectorySettings>), ConfigError> {
    if source.name.trim().is_empty() || source.name.contains(char::is_whitespace) {
        return Err(ConfigError::new(
            format!("{key}.name"),
            "must be a non-empty name without spaces",
        ));
    }
    let key = format!("sources[{}]", source.name);
    let Some(kind) = ProviderKind::from_config_name(&source.provider) else {
        let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(ConfigError::new(
            format!("{key}.provider"),
            format!(
                "unknown provider {:?}: expected one of {}",
                source.provider,
                names.join(", ")
            ),
        ));
    };
    let tables = source.provider_tables();
    for table in &tables {
        let block = table.kind();
        if block != kind {
            return Err(ConfigError::new(
                format!("{key}.{block}"),
                format!("a [sources.{block}] table does not belong to a {kind} source"),
            ));
        }
    }
    let missing = || {
        ConfigError::new(
            format!("{key}.{kind}"),
            format!(
                "missing: a {kind} source needs a [sources.{kind}] table with its account settings"
            ),
        )
    };
    if !(0.0..=0.5).contains(&source.poll_jitter) {
        return Err(ConfigError::new(
            format!("{key}.poll_jitter"),
            "must be between 0 and 0.5",
        ));
    }
    if !(0.0..=1.0).contains(&source.mass_change_max_share) {
        return Err(ConfigError::new(
            format!("{key}.mass_change_max_share"),
            "must be a share between 0.0 and 1.0 (0.5 = 50 %)",
        ));
    }
    if source.max_raw_bytes < MIN_RAW_BYTES {
        return Err(ConfigError::new(
            format!("{key}.max_raw_bytes"),
            format!(
                "{} is too small for a conversation's JSON: expected at least {MIN_RAW_BYTES} bytes (default 1048576, 1 MiB)",
                source.max_raw_bytes
            ),
        ));
    }
    if source.reply_state_horizon.is_zero() {
        return Err(ConfigError::new(
            format!("{key}.reply_state_horizon"),
            "must be a positive duration like \"30days\" (default 30 days); to read no reply state at all, turn it off in the provider's settings (e.g. spruce.track_reply_state = false)",
        ));
    }
    if source.verify_interval.is_some_and(|v| v.is_zero()) {
        return Err(ConfigError::new(
            format!("{key}.verify_interval"),
            "must be greater than zero, such as \"1d\" (leave it unset for no scheduled verification)",
        ));
    }
    if source.max_pages_per_cycle == 0 {
        return Err(ConfigError::new(
            format!("{key}.max_pages_per_cycle"),
            "must be at least 1",
        ));
    }
    if source.max_empty_pages == 0 {
        return Err(ConfigError::new(
            format!("{key}.max_empty_pages"),
            "must be at least 1 (10 is a good value)",
        ));
    }
    if source.once_max_rate_limit_wait > MAX_ONCE_RATE_LIMIT_WAIT {
        return Err(ConfigError::new(
            format!("{key}.once_max_rate_limit_wait"),
            format!(
                "{} is more than a day: `sync --once` must end; leave long waits to `convsync run`",
                humantime::format_duration(source.once_max_rate_limit_wait)
            ),
        ));
    }
    let ctx = provider::SetupContext { key: &key };
    let setups = tables
        .iter()
        .find(|table| table.kind() == kind)
        .ok_or_else(missing)?
        .setup(&ctx)?;
    let quota = match source.rate_limit {
        Some(r) => Some(validate_quota(&format!("{key}.rate_limit"), r)?),
        None => None,
    };
    let guard = MassChangeGuard {
        max_share: source.mass_change_max_share,
        floor: source.mass_change_floor,
    };
    let directory = match tables.iter().find(|table| table.kind() == kind) {
        Some(table) => table.directory(&ctx, &source.name)?,
        None => None,
    };
    let directory = match directory {
        Some(directory) => {
            let defaults = kind.defaults();
            Some(DirectorySettings {
                entry: source.name.clone(),
                kind,
                directory,
                schedule: schedule(source, &key, kind, &defaults)?,
                guard,
                quota: quota.or(defaults.quota),
            })
        }
        None => None,
    };
    let mut out = Vec::new();
    for setup in setups {
        let name = expanded_name(&source.name, setup.name_suffix.as_deref());
        let mut setup = setup;
        setup.auth.name_source(&name);
        out.push(SourceSettings {
            name,
            schedule: schedule(source, &key, kind, &setup.defaults)?,
            guard,
            quota: quota.or(setup.defaults.quota),
            setup,
        });
    }
    Ok((out, directory))
}

/// A source's schedule: its settings, else the provider's `defaults`, checked against
/// the provider's minimum interval and the watermark's clock-skew rule.
fn schedule(
    source: &SourceConfig,
    key: &str,
    kind: ProviderKind,
    defaults: &provider::ProviderDefaults,
) -> Result<Schedule, ConfigError> {
    let poll_interval = source.poll_interval.unwrap_or(defaults.poll_interval);
    if poll_interval < defaults.min_poll_interval {
        return Err(ConfigError::new(
            format!("{key}.poll_interval"),
            format!(
                "{} is below the minimum of {} for {kind} ({})",
                humantime::format_duration(poll_interval),
                humantime::format_duration(defaults.min_poll_interval),
                defaults.min_poll_reason
            ),
        ));
    }
    let lookback = source.lookback.unwrap_or(defaults.lookback);
    let max_clock_skew = match source.max_clock_skew {
        // A future-dated record may move the watermark up to now + max_clock_skew;
        // the next delta starts one lookback before that, so a wider guard would
        // start it in the future and skip real activity.
        Some(skew) if skew > lookback => {
            return Err(ConfigError::new(
                format!("{key}.max_clock_skew"),
                format!(
                    "{} is larger than {key}.lookback ({}): a record dated that far ahead moves the watermark past real activity that the next delta, starting one lookback before it, would then skip; set max_clock_skew to at most lookback",
                    humantime::format_duration(skew),
                    humantime::format_duration(lookback),
                ),
            ));
        }
        Some(skew) => skew,
        None => DEFAULT_MAX_CLOCK_SKEW.min(lookback),
    };
    Ok(Schedule {
        poll_interval,
        poll_jitter: source.poll_jitter,
        lookback,
        sweep_interval: source.sweep_interval.unwrap_or(defaults.sweep_interval),
        verify_interval: source.verify_interval,
        max_pages_per_cycle: source.max_pages_per_cycle,
        stall_timeout: source.stall_timeout,
        max_clock_skew,
        max_follow_ups_per_cycle: source.max_follow_ups_per_cycle,
        max_raw_bytes: source.max_raw_bytes,
        max_empty_pages: source.max_empty_pages,
        once_max_rate_limit_wait: source.once_max_rate_limit_wait,
        reply_state_horizon: source.reply_state_horizon,
    })
}

/// Sources that share one request budget (the provider's rate-limit scope: same account or
/// credential) must agree on its quota. The engine builds one budget per scope, so a second,
/// different `rate_limit` would be silently ignored; each disagreement names both sources.
fn conflicting_quotas(sources: &[SourceSettings]) -> Vec<ConfigError> {
    let describe = |quota: Option<RateQuota>| match quota {
        Some(q) => format!(
            "{} requests per {} (burst {})",
            q.requests,
            humantime::format_duration(q.per),
            q.burst
        ),
        None => "no limit".to_owned(),
    };
    let mut first_of_budget: HashMap<&str, &SourceSettings> = HashMap::new();
    let mut mistakes = Vec::new();
    for source in sources {
        let first = *first_of_budget
            .entry(source.setup.budget_key.as_str())
            .or_insert(source);
        if first.quota != source.quota {
            mistakes.push(ConfigError::new(
                format!("sources[{}].rate_limit", source.name),
                format!(
                    "sources {:?} and {:?} share one request budget (the same provider account) \
                     but their rate limits differ ({} vs {}): give both the same rate_limit, or \
                     leave it out of both",
                    first.name,
                    source.name,
                    describe(first.quota),
                    describe(source.quota),
                ),
            ));
        }
    }
    mistakes
}

fn validate_quota(key: &str, r: RateLimitConfig) -> Result<RateQuota, ConfigError> {
    let requests = std::num::NonZeroU32::new(r.requests)
        .ok_or_else(|| ConfigError::new(format!("{key}.requests"), "must be at least 1"))?;
    let burst = std::num::NonZeroU32::new(r.burst)
        .ok_or_else(|| ConfigError::new(format!("{key}.burst"), "must be at least 1"))?;
    if r.per.is_zero() {
        return Err(ConfigError::new(
            format!("{key}.per"),
            "must be a positive duration like \"10s\"",
        ));
    }
    Ok(RateQuota {
        requests,
        per: r.per,
        burst,
    })
}

/// Where to look for the config file: `--config`, then `$CONVSYNC_CONFIG`, then
/// `./convsync.toml`.
pub fn resolve_path(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("convsync.toml"))
}

/// The name of one of the sources a `[[sources]]` entry yields: `name/suffix` for
/// providers whose entry lists accounts (HighLevel locations, Sinch apps), whatever their
/// number, so that adding a second location never renames the first one's rows.
pub fn expanded_name(base: &str, suffix: Option<&str>) -> String {
    match suffix {
        Some(suffix) => format!("{base}/{suffix}"),
        None => base.to_owned(),
    }
}

/// One source as the database-only commands (`status`, `reset`, `state`, `sources`) see
/// it: read from the file without resolving any secret, so they work outside the service
/// (where systemd credentials or secret files are not readable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredSource {
    /// The source name, as in the mirror's `source` column.
    pub name: String,
    /// The `[[sources]]` entry's name it comes from.
    pub entry: String,
    /// The provider's name (as written in the file).
    pub provider: String,
    /// Whether it is polled.
    pub enabled: bool,
    /// Time between cycles: the configured one, else the provider's default (`None` for
    /// an unknown provider).
    pub poll_interval: Option<Duration>,
}

impl FileConfig {
    /// Every source the file names, enabled or not, without resolving secrets or
    /// validating provider settings (`check-config` does that).
    pub fn configured_sources(&self) -> Vec<ConfiguredSource> {
        let mut out = Vec::new();
        for source in &self.sources {
            let suffixes: Vec<Option<&str>> = source
                .provider_tables()
                .into_iter()
                .find(|table| table.kind().as_str() == source.provider)
                .map_or_else(|| vec![None], ProviderTable::account_suffixes);
            for suffix in suffixes {
                out.push(ConfiguredSource {
                    name: expanded_name(&source.name, suffix),
                    entry: source.name.clone(),
                    provider: source.provider.clone(),
                    enabled: source.enabled,
                    poll_interval: source.poll_interval.or_else(|| {
                        ProviderKind::from_config_name(&source.provider)
                            .map(|kind| kind.defaults().poll_interval)
                    }),
                });
            }
        }
        out
    }

    /// The database settings alone (for commands that only read or edit the mirror): the
    /// `[database]` keys checked and its password, if any, resolved.
    pub fn store_settings(&self) -> Result<StoreSettings, ConfigError> {
        self.database.settings()
    }
}
