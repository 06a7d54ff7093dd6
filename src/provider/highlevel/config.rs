//! `[sources.highlevel]`: which locations to mirror and how to authenticate to each.
//!
//! HighLevel scopes everything by location (sub-account): the search needs a `locationId`,
//! rate limits apply per app per location, and both kinds of credential belong to one
//! location — a Private Integration Token is created inside a sub-account, and an OAuth
//! refresh token comes from installing an app into one. A source therefore lists its
//! locations, each with its own credential or sharing the source-level one, and becomes
//! one running source per location (`name/locationId`, also when there is only one), each with
//! its own cursor and its own request budget.
//!
//! In agency mode (`company_id` + `agency_refresh_token`) the source lists no location:
//! [`directory`] builds the `agency` directory that finds them where the app is installed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::agency::{AgencySettings, HighLevelAgency};
use super::{API_VERSION, HighLevel, HighLevelWebhooks};
use crate::config_error::{ConfigError, validate_base_url};
use crate::http::auth::RotatingRefresh;
use crate::http::{AuthScheme, RateQuota};
use crate::provider::directory::AccountDirectory;
use crate::provider::{ProviderDefaults, ProviderKind, ProviderSetup, SetupContext};
use crate::secret::{Secret, SecretRef};

/// The production API host.
pub const DEFAULT_BASE_URL: &str = "https://services.leadconnectorhq.com";
/// Rows per page unless configured.
const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest `page_size` accepted; HighLevel documents no maximum and is known to honour
/// 100, so anything larger is only a request that the server may clamp.
const MAX_PAGE_SIZE: u32 = 1000;

/// `[sources.highlevel]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighLevelConfig {
    /// API base URL; default `https://services.leadconnectorhq.com`. The token endpoint is
    /// `<base_url>/oauth/token`. Plain http is accepted only for loopback addresses.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Conversations per search request (`limit`), 1–1000, default 100. Larger pages mean
    /// fewer requests per sweep; a server that clamps the value is detected.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The `Version` header sent with every request; default `2021-04-15`, the only value
    /// the spec's enum lists. Clients in the field send `2021-07-28` successfully, so any
    /// other value HighLevel may require is accepted as given.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The location (sub-account) id, for a source that mirrors one location. Use either
    /// this or `locations`.
    #[serde(default)]
    pub location_id: Option<String>,
    /// Several locations mirrored by this source, each becoming its own source
    /// `name/locationId` with its own cursor and rate-limit budget.
    #[serde(default)]
    pub locations: Vec<LocationConfig>,
    /// Private Integration Token used by every location that has no credential of its own.
    #[serde(default)]
    pub private_integration_token: Option<SecretRef>,
    /// OAuth refresh token of the app's installation in the location, when the source has
    /// exactly one location. Used only until the database holds a newer one: HighLevel
    /// returns a new refresh token on every refresh and invalidates the old one.
    #[serde(default)]
    pub refresh_token: Option<SecretRef>,
    /// OAuth app (marketplace) client id; required when any location uses a refresh token.
    #[serde(default)]
    pub client_id: Option<String>,
    /// OAuth app client secret; required when any location uses a refresh token.
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// Agency mode: the agency (Company) id. With `agency_refresh_token`, the source lists
    /// no locations: it mirrors every location where the app is installed, found at
    /// start-up (`GET /oauth/installedLocations`), each as `name/locationId`.
    #[serde(default)]
    pub company_id: Option<String>,
    /// Agency mode: the OAuth refresh token of the app's agency-level installation
    /// (`user_type=Company`). Rotated like a location's; used only until the database
    /// holds a newer one.
    #[serde(default)]
    pub agency_refresh_token: Option<SecretRef>,
    /// Agency mode: the marketplace app's id, which the installed-locations listing asks
    /// for. Default: `client_id` up to its first `-` (HighLevel's client ids are
    /// `<appId>-<suffix>`).
    #[serde(default)]
    pub app_id: Option<String>,
    /// Agency mode: how often the installed locations are listed again while running, to
    /// catch installs and uninstalls whose events were lost. Default 15 minutes, at
    /// least 10 seconds.
    #[serde(default, with = "humantime_serde")]
    pub relist_interval: Option<std::time::Duration>,
    /// Path to the PEM public key that verifies the app's webhooks (`x-wh-signature`).
    /// Default: the key HighLevel publishes, built into convsync; set this only when
    /// HighLevel announces a new key before convsync ships it.
    #[serde(default)]
    pub webhook_public_key: Option<PathBuf>,
}

/// One entry of `locations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    /// The location (sub-account) id.
    pub id: String,
    /// This location's Private Integration Token (overrides the source-level credential).
    #[serde(default)]
    pub private_integration_token: Option<SecretRef>,
    /// The OAuth refresh token of the app's installation in this location (overrides the
    /// source-level credential; needs `client_id` and `client_secret`).
    #[serde(default)]
    pub refresh_token: Option<SecretRef>,
}

fn default_page_size() -> u32 {
    DEFAULT_PAGE_SIZE
}

/// One account per location (`name/<location id>`), listed without resolving a secret.
pub(crate) fn account_suffixes(cfg: &HighLevelConfig) -> Vec<Option<&str>> {
    cfg.location_id
        .iter()
        .map(|id| id.trim())
        .chain(cfg.locations.iter().map(|l| l.id.trim()))
        .map(Some)
        .collect()
}

/// The documented defaults: HighLevel's burst limit of 100 requests per 10 s, evenly
/// spaced, which never exceeds a fixed window.
pub(crate) fn defaults() -> ProviderDefaults {
    ProviderDefaults {
        poll_interval: Duration::from_secs(60),
        min_poll_interval: Duration::from_secs(10),
        min_poll_reason: "every cycle costs at least one search request per location, from a \
                          burst budget of 100 requests per 10 s that the app shares with its \
                          other uses",
        lookback: Duration::from_secs(5 * 60),
        sweep_interval: Duration::from_secs(30 * 60),
        quota: Some(RateQuota {
            requests: std::num::NonZeroU32::new(100).unwrap_or(std::num::NonZeroU32::MIN),
            per: Duration::from_secs(10),
            burst: std::num::NonZeroU32::MIN,
        }),
    }
}

/// HighLevel's refresh tokens die after a year unused (later-findings: "valid for a year
/// unless used").
pub(super) const REFRESH_TOKEN_UNUSED_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Rotate at least monthly, so that even an idle location's refresh token stays young.
pub(super) const ROTATE_REFRESH_TOKEN_EVERY: Duration = Duration::from_secs(30 * 24 * 3600);

/// A credential, resolved.
enum Credential {
    PrivateIntegrationToken(Secret),
    RefreshToken(Secret),
}

/// The settings every location of a source shares, validated.
pub(super) struct Common {
    pub(super) search_url: Url,
    pub(super) token_url: Url,
    pub(super) installed_url: Url,
    pub(super) mint_url: Url,
    pub(super) page_size: u32,
    pub(super) api_version: String,
    pub(super) webhooks: Arc<HighLevelWebhooks>,
}

fn common(cfg: &HighLevelConfig, key: &dyn Fn(&str) -> String) -> Result<Common, ConfigError> {
    let base_url = validate_base_url(
        &key("base_url"),
        cfg.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
    )?;
    let url = |path: &str| join(&base_url, path, &key("base_url"));
    if !(1..=MAX_PAGE_SIZE).contains(&cfg.page_size) {
        return Err(ConfigError::new(
            key("page_size"),
            format!(
                "{} is out of range: expected 1 to {MAX_PAGE_SIZE} (100 is known to work)",
                cfg.page_size
            ),
        ));
    }
    let api_version = api_version(cfg.api_version.as_deref(), &key("api_version"))?;
    let webhooks = match &cfg.webhook_public_key {
        None => HighLevelWebhooks::published(),
        Some(path) => HighLevelWebhooks::from_file(path),
    }
    .map(Arc::new)
    .map_err(|e| ConfigError::new(key("webhook_public_key"), e.to_string()))?;
    Ok(Common {
        search_url: url("conversations/search")?,
        token_url: url("oauth/token")?,
        installed_url: url("oauth/installedLocations")?,
        mint_url: url("oauth/locationToken")?,
        page_size: cfg.page_size,
        api_version,
        webhooks,
    })
}

/// Whether the source is in agency mode (its locations are found, not listed).
fn is_agency(cfg: &HighLevelConfig) -> bool {
    cfg.company_id.is_some() || cfg.agency_refresh_token.is_some()
}

/// Validates the settings, resolves the secrets and builds one adapter per configured
/// location (none in agency mode: see [`directory`]).
pub fn setup(
    cfg: &HighLevelConfig,
    ctx: &SetupContext<'_>,
) -> Result<Vec<ProviderSetup>, ConfigError> {
    if is_agency(cfg) {
        return Ok(Vec::new());
    }
    let key = |field: &str| ctx.key(ProviderKind::Highlevel, field);
    let Common {
        search_url,
        token_url,
        page_size,
        api_version,
        webhooks,
        ..
    } = common(cfg, &key)?;
    let locations = locations(cfg, &key)?;
    let shared_pit = resolve(
        &cfg.private_integration_token,
        &key("private_integration_token"),
    )?;
    let shared_refresh = resolve(&cfg.refresh_token, &key("refresh_token"))?;
    if shared_pit.is_some() && shared_refresh.is_some() {
        return Err(ConfigError::new(
            key("refresh_token"),
            "set either private_integration_token or refresh_token, not both",
        ));
    }
    if shared_refresh.is_some() && locations.len() > 1 {
        return Err(ConfigError::new(
            key("refresh_token"),
            "a refresh token belongs to one location's app installation: give each entry of \
             `locations` its own refresh_token",
        ));
    }
    let mut oauth_app: Option<(String, Secret)> = None;
    let mut setups = Vec::with_capacity(locations.len());
    for (location, entry_key, own) in locations {
        let own_pit = resolve(&own.0, &format!("{entry_key}.private_integration_token"))?;
        let own_refresh = resolve(&own.1, &format!("{entry_key}.refresh_token"))?;
        let credential = match (own_pit, own_refresh) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    format!("{entry_key}.refresh_token"),
                    "set either private_integration_token or refresh_token, not both",
                ));
            }
            (Some(pit), None) => Credential::PrivateIntegrationToken(pit),
            (None, Some(refresh)) => Credential::RefreshToken(refresh),
            (None, None) => match (&shared_pit, &shared_refresh) {
                (Some(pit), _) => Credential::PrivateIntegrationToken(pit.clone()),
                (None, Some(refresh)) => Credential::RefreshToken(refresh.clone()),
                (None, None) => {
                    return Err(ConfigError::new(
                        key("private_integration_token"),
                        format!(
                            "location {location} has no credential: set private_integration_token \
                             (a Private Integration Token of the sub-account) or refresh_token \
                             with client_id and client_secret (an OAuth app installed in it)"
                        ),
                    ));
                }
            },
        };
        let (auth, credential_key, budget_key) = match credential {
            Credential::PrivateIntegrationToken(token) => {
                let fingerprint = token.fingerprint();
                (
                    AuthScheme::Bearer(token),
                    format!("highlevel/pit/{fingerprint}"),
                    format!("highlevel/pit/{fingerprint}/{location}"),
                )
            }
            Credential::RefreshToken(refresh) => {
                let (client_id, client_secret) = match &oauth_app {
                    Some(app) => app.clone(),
                    None => {
                        let app = oauth_client(cfg, &key)?;
                        oauth_app = Some(app.clone());
                        app
                    }
                };
                // The initial token's fingerprint is part of the key: a new refresh token
                // in the config (after a re-install) starts a new chain instead of being
                // ignored in favour of the stored, dead one.
                let vault_key = format!(
                    "highlevel/oauth/{client_id}/{location}/{}",
                    refresh.fingerprint()
                );
                (
                    AuthScheme::RotatingRefresh(RotatingRefresh {
                        token_url: token_url.clone(),
                        client_id: client_id.clone(),
                        client_secret,
                        initial_refresh_token: refresh,
                        extra_form: vec![("user_type".to_owned(), "Location".to_owned())],
                        vault_key: vault_key.clone(),
                        // Named by `config` once the source's name is known.
                        source: location.clone(),
                        rotate_every: ROTATE_REFRESH_TOKEN_EVERY,
                        expires_unused_after: REFRESH_TOKEN_UNUSED_LIFETIME,
                    }),
                    vault_key,
                    format!("highlevel/app/{client_id}/{location}"),
                )
            }
        };
        setups.push(ProviderSetup {
            provider: Arc::new(
                HighLevel::new(
                    location.clone(),
                    search_url.clone(),
                    page_size,
                    api_version.clone(),
                )
                .with_webhooks(Some(webhooks.clone())),
            ),
            auth,
            credential_key,
            budget_key,
            name_suffix: Some(location),
            defaults: defaults(),
        });
    }
    Ok(setups)
}

/// Agency mode: validates the agency credential and builds the directory that finds the
/// source's locations (`None` for a source that lists its locations). `entry` is the
/// source's name, for the recovery command a refused agency token names.
pub fn directory(
    cfg: &HighLevelConfig,
    ctx: &SetupContext<'_>,
    entry: &str,
) -> Result<Option<Arc<dyn AccountDirectory>>, ConfigError> {
    if !is_agency(cfg) {
        return Ok(None);
    }
    let key = |field: &str| ctx.key(ProviderKind::Highlevel, field);
    let listed = [
        ("location_id", cfg.location_id.is_some()),
        ("locations", !cfg.locations.is_empty()),
        (
            "private_integration_token",
            cfg.private_integration_token.is_some(),
        ),
        ("refresh_token", cfg.refresh_token.is_some()),
    ];
    if let Some((field, _)) = listed.iter().find(|(_, set)| *set) {
        return Err(ConfigError::new(
            key(field),
            "an agency source (company_id + agency_refresh_token) finds its locations where \
             the app is installed: remove this key, or configure the locations in a source \
             of their own",
        ));
    }
    let company_id = cfg
        .company_id
        .as_deref()
        .map(str::trim)
        .filter(|id| is_plain_id(id))
        .ok_or_else(|| {
            ConfigError::new(
                key("company_id"),
                "missing or not an id: an agency source needs the agency's company id \
                 (letters and digits, e.g. 5DP4iH6HLkQsiKESj6rh)",
            )
        })?;
    let refresh_key = key("agency_refresh_token");
    let refresh_token = resolve(&cfg.agency_refresh_token, &refresh_key)?.ok_or_else(|| {
        ConfigError::new(
            refresh_key,
            "missing: an agency source needs the refresh token of the app's agency-level \
             installation (user_type Company)",
        )
    })?;
    let (client_id, client_secret) = oauth_client(cfg, &key)?;
    let app_id = match cfg.app_id.as_deref().map(str::trim) {
        Some(app_id) => app_id,
        None => client_id.split('-').next().unwrap_or(&client_id),
    };
    if !is_plain_id(app_id) {
        return Err(ConfigError::new(
            key("app_id"),
            format!(
                "{app_id:?} is not an app id (expected the marketplace app's id, e.g. 6650f1a2b3c4d5e6f7a8b9c0)"
            ),
        ));
    }
    let relist_interval = cfg.relist_interval.unwrap_or(DEFAULT_RELIST_INTERVAL);
    if relist_interval < MIN_RELIST_INTERVAL {
        return Err(ConfigError::new(
            key("relist_interval"),
            format!(
                "at least {}: each re-listing sends the agency's requests",
                humantime::format_duration(MIN_RELIST_INTERVAL)
            ),
        ));
    }
    let agency = HighLevelAgency::new(AgencySettings {
        entry: entry.to_owned(),
        company_id: company_id.to_owned(),
        app_id: app_id.to_owned(),
        relist_interval,
        client_id,
        client_secret,
        refresh_token,
        common: common(cfg, &key)?,
    });
    Ok(Some(Arc::new(agency)))
}

/// How often an agency's installed locations are listed again by default: one request
/// per 100 locations a quarter hour is little against HighLevel's limits, and an install
/// whose event was lost is mirrored within that time.
const DEFAULT_RELIST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The shortest re-listing interval accepted (the shortest poll interval too).
const MIN_RELIST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// An id HighLevel issues: short, letters and digits only (it is sent in queries).
fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The `Version` header value: the spec's by default, otherwise whatever is configured,
/// as long as it can be sent as a header (HighLevel's versions are dates, but which ones
/// the server accepts is not published, so no list is enforced here).
fn api_version(value: Option<&str>, key: &str) -> Result<String, ConfigError> {
    let Some(value) = value else {
        return Ok(API_VERSION.to_owned());
    };
    let value = value.trim();
    if value.is_empty() || value.len() > 64 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ConfigError::new(
            key,
            format!(
                "{value:?} cannot be sent as the Version header: expected a version such as \
                 {API_VERSION} (the default) or 2021-07-28, without spaces"
            ),
        ));
    }
    Ok(value.to_owned())
}

/// A location id, the key its errors are reported under, and its own credential refs.
type LocationEntry = (String, String, (Option<SecretRef>, Option<SecretRef>));

/// The configured locations, checked: one of `location_id` / `locations`, ids non-empty,
/// without spaces, and unique.
fn locations(
    cfg: &HighLevelConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<LocationEntry>, ConfigError> {
    let entries: Vec<LocationEntry> = match (&cfg.location_id, cfg.locations.is_empty()) {
        (Some(_), false) => {
            return Err(ConfigError::new(
                key("locations"),
                "set either location_id (one location) or locations (several), not both",
            ));
        }
        (None, true) => {
            return Err(ConfigError::new(
                key("location_id"),
                "missing: set location_id (the sub-account id) or a locations list",
            ));
        }
        (Some(id), true) => vec![(id.clone(), key("location_id"), (None, None))],
        (None, false) => cfg
            .locations
            .iter()
            .enumerate()
            .map(|(i, l)| {
                (
                    l.id.clone(),
                    key(&format!("locations[{i}]")),
                    (l.private_integration_token.clone(), l.refresh_token.clone()),
                )
            })
            .collect(),
    };
    let mut seen = std::collections::HashSet::new();
    for (id, entry_key, _) in &entries {
        if id.trim().is_empty() || id.contains(char::is_whitespace) || id.contains('/') {
            return Err(ConfigError::new(
                entry_key.clone(),
                format!(
                    "{id:?} is not a location id (expected the sub-account id, e.g. ve9EPM428kjkvShlRW1KT)"
                ),
            ));
        }
        if !seen.insert(id.clone()) {
            return Err(ConfigError::new(
                entry_key.clone(),
                format!("location {id} is listed twice"),
            ));
        }
    }
    Ok(entries)
}

fn oauth_client(
    cfg: &HighLevelConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<(String, Secret), ConfigError> {
    let client_id = cfg
        .client_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                key("client_id"),
                "missing: a refresh token needs the OAuth app's client_id",
            )
        })?;
    let secret_key = key("client_secret");
    let client_secret = resolve(&cfg.client_secret, &secret_key)?.ok_or_else(|| {
        ConfigError::new(
            secret_key,
            "missing: a refresh token needs the OAuth app's client_secret",
        )
    })?;
    Ok((client_id.to_owned(), client_secret))
}

fn resolve(reference: &Option<SecretRef>, key: &str) -> Result<Option<Secret>, ConfigError> {
    reference
        .as_ref()
        .map(|r| {
            r.resolve()
                .map_err(|e| ConfigError::new(key, e.to_string()))
        })
        .transpose()
}

/// `base` + `path`, keeping any path prefix of the base URL (a proxy, the simulator).
fn join(base: &Url, path: &str, key: &str) -> Result<Url, ConfigError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.set_query(None);
    base.join(path)
        .map_err(|e| ConfigError::new(key, format!("cannot build the {path} URL: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> SetupContext<'static> {
        SetupContext { key: "sources[hl]" }
    }

    fn parse(toml_text: &str) -> HighLevelConfig {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(toml_text))
            .extract()
            .unwrap()
    }

    /// Secret files for one test, referenced as `{ file = "..." }`.
    struct SecretFiles(tempfile::TempDir);

    impl SecretFiles {
        fn new() -> Self {
            SecretFiles(tempfile::tempdir().unwrap())
        }

        fn add(&self, name: &str, value: &str) -> String {
            let path = self.0.path().join(name);
            std::fs::write(&path, value).unwrap();
            format!("{{ file = \"{}\" }}", path.display())
        }
    }

    fn err(cfg: &HighLevelConfig) -> ConfigError {
        match setup(cfg, &ctx()) {
            Ok(_) => panic!("expected a config error"),
            Err(e) => e,
        }
    }

    /// One location with a Private Integration Token: a static bearer, the production
    /// URL, its own budget.
    #[test]
    fn single_location_with_a_private_integration_token() {
        let files = SecretFiles::new();
        let pit = files.add("pit", "pit-123");
        let cfg = parse(&format!(
            "location_id = \"locA\"\nprivate_integration_token = {pit}"
        ));
        let setups = setup(&cfg, &ctx()).unwrap();
        assert_eq!(setups.len(), 1);
        let s = &setups[0];
        assert!(matches!(&s.auth, AuthScheme::Bearer(t) if t.expose() == "pit-123"));
        assert_eq!(s.provider.account(), "locA");
        assert_eq!(s.name_suffix.as_deref(), Some("locA"));
        assert!(s.budget_key.ends_with("/locA"));
        assert!(!s.credential_key.contains("pit-123") && !s.budget_key.contains("pit-123"));
        assert_eq!(s.defaults.quota.unwrap().requests.get(), 100);
    }

    /// Every location verifies webhooks, with HighLevel's published key unless
    /// `webhook_public_key` names another PEM; a key that cannot verify is a config error.
    #[test]
    fn webhooks_use_the_published_key_or_the_configured_one() {
        let files = SecretFiles::new();
        let pit = files.add("pit", "pit-123");
        let base = format!(
            "private_integration_token = {pit}\n[[locations]]\nid = \"locA\"\n[[locations]]\nid = \"locB\"\n"
        );
        let setups = setup(&parse(&base), &ctx()).unwrap();
        assert!(setups.iter().all(|s| s.provider.webhooks().is_some()));

        let test_key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/provider/highlevel/testdata/webhook-test-only-public-key.pem"
        );
        let cfg = parse(&format!("webhook_public_key = \"{test_key}\"\n{base}"));
        assert!(
            setup(&cfg, &ctx()).unwrap()[0]
                .provider
                .webhooks()
                .is_some()
        );

        let not_a_key = files.add("not-a-key.pem", "hello");
        let not_a_key = not_a_key
            .trim_start_matches("{ file = \"")
            .trim_end_matches("\" }");
        for (path, words) in [
            (not_a_key, "PUBLIC KEY"),
            (
                "/nonexistent/highlevel.pem",
                "cannot read /nonexistent/highlevel.pem",
            ),
        ] {
            let cfg = parse(&format!("webhook_public_key = \"{path}\"\n{base}"));
            let e = err(&cfg);
            assert_eq!(e.key, "sources[hl].highlevel.webhook_public_key");
            assert!(e.message.contains(words), "{e}");
        }
    }

    /// Several locations with their own credentials get separate budgets; an OAuth one
    /// rotates through the token endpoint under the base URL, as a Location token.
    #[test]
    fn several_locations_with_mixed_credentials() {
        let files = SecretFiles::new();
        let pit = files.add("pit", "pit-a");
        let refresh = files.add("refresh", "rt-b");
        let secret = files.add("secret", "shh");
        let cfg = parse(&format!(
            "base_url = \"http://127.0.0.1:4000/api\"\nclient_id = \"app-1\"\nclient_secret = {secret}\n\
             [[locations]]\nid = \"locA\"\nprivate_integration_token = {pit}\n\
             [[locations]]\nid = \"locB\"\nrefresh_token = {refresh}\n"
        ));
        let setups = setup(&cfg, &ctx()).unwrap();
        assert_eq!(setups.len(), 2);
        assert_ne!(setups[0].budget_key, setups[1].budget_key);
        match &setups[1].auth {
            AuthScheme::RotatingRefresh(rr) => {
                assert_eq!(
                    rr.token_url.as_str(),
                    "http://127.0.0.1:4000/api/oauth/token"
                );
                assert_eq!(rr.client_id, "app-1");
                assert_eq!(rr.initial_refresh_token.expose(), "rt-b");
                assert_eq!(
                    rr.extra_form,
                    vec![("user_type".to_owned(), "Location".to_owned())]
                );
                assert!(rr.vault_key.contains("locB") && !rr.vault_key.contains("rt-b"));
            }
            other => panic!("expected OAuth, got {other:?}"),
        }
    }

    /// Mistakes fail at start naming the offending key.
    #[test]
    fn mistakes_name_the_key() {
        let files = SecretFiles::new();
        let pit = files.add("pit", "pit");
        let refresh = files.add("refresh", "rt");
        let cases = [
            (format!("private_integration_token = {pit}"), "sources[hl].highlevel.location_id"),
            ("location_id = \"locA\"".to_owned(), "sources[hl].highlevel.private_integration_token"),
            (format!("location_id = \"locA\"\nrefresh_token = {refresh}"), "sources[hl].highlevel.client_id"),
            (
                format!("refresh_token = {refresh}\nclient_id = \"a\"\nclient_secret = {pit}\nlocations = [{{ id = \"a\" }}, {{ id = \"b\" }}]"),
                "sources[hl].highlevel.refresh_token",
            ),
            (
                format!("private_integration_token = {pit}\nlocations = [{{ id = \"a\" }}, {{ id = \"a\" }}]"),
                "sources[hl].highlevel.locations[1]",
            ),
            (format!("location_id = \"a b\"\nprivate_integration_token = {pit}"), "sources[hl].highlevel.location_id"),
            (format!("location_id = \"a\"\npage_size = 0\nprivate_integration_token = {pit}"), "sources[hl].highlevel.page_size"),
            (format!("location_id = \"a\"\napi_version = \"2021 07 28\"\nprivate_integration_token = {pit}"), "sources[hl].highlevel.api_version"),
            (format!("location_id = \"a\"\napi_version = \" \"\nprivate_integration_token = {pit}"), "sources[hl].highlevel.api_version"),
            (
                format!("location_id = \"a\"\nbase_url = \"http://example.com\"\nprivate_integration_token = {pit}"),
                "sources[hl].highlevel.base_url",
            ),
            (
                "location_id = \"a\"\nprivate_integration_token = { env = \"HL_TEST_UNSET_VARIABLE\" }".to_owned(),
                "sources[hl].highlevel.private_integration_token",
            ),
        ];
        for (text, expected_key) in cases {
            let e = err(&parse(&text));
            assert_eq!(e.key, expected_key, "{text}: {e}");
        }
    }

    /// `Version` is the spec's value unless `api_version` names another, which is sent as
    /// given: the spec's enum is not what the server enforces.
    #[test]
    fn api_version_defaults_to_the_spec_and_any_other_is_sent() {
        let files = SecretFiles::new();
        let pit = files.add("pit", "pit");
        for (line, expected) in [
            ("", API_VERSION),
            ("api_version = \"2021-07-28\"", "2021-07-28"),
            ("api_version = \" 2030-01-01 \"", "2030-01-01"),
        ] {
            let cfg = parse(&format!(
                "location_id = \"a\"\nprivate_integration_token = {pit}\n{line}"
            ));
            let setups = setup(&cfg, &ctx()).unwrap();
            let provider = &setups[0].provider;
            let request = provider.walks()[0]
                .build_request(&crate::provider::WalkContext {
                    since: None,
                    position: None,
                })
                .unwrap();
            assert!(
                request.headers.contains(&("Version", expected.to_owned())),
                "{line}: {:?}",
                request.headers
            );
        }
    }

    /// Secrets never reach a setup's Debug output.
    #[test]
    fn debug_output_holds_no_secret() {
        let files = SecretFiles::new();
        let refresh = files.add("refresh", "rt-very-secret");
        let secret = files.add("secret", "client-very-secret");
        let cfg = parse(&format!(
            "location_id = \"locA\"\nrefresh_token = {refresh}\nclient_id = \"app\"\nclient_secret = {secret}"
        ));
        let text = format!("{:?}", setup(&cfg, &ctx()).unwrap());
        assert!(!text.contains("very-secret"), "{text}");
    }

    /// The documented multi-location file loads through the real config path into one
    /// source per location, named `NAME/<locationId>`, with HighLevel's defaults.
    #[test]
    fn documented_multi_location_file_loads() {
        let files = SecretFiles::new();
        let secret = files.add("secret", "client-secret");
        let refresh = files.add("refresh", "rt-1");
        let pit = files.add("pit", "pit-2");
        let path = files.0.path().join("convsync.toml");
        std::fs::write(
            &path,
            format!(
                "[[sources]]\nname = \"hl\"\nprovider = \"highlevel\"\n\n\
                 [sources.highlevel]\nclient_id = \"app-1\"\nclient_secret = {secret}\n\n\
                 [[sources.highlevel.locations]]\nid = \"ve9EPM428kjkvShlRW1KT\"\nrefresh_token = {refresh}\n\n\
                 [[sources.highlevel.locations]]\nid = \"l1C08ntBrFjLS0elLIYU\"\nprivate_integration_token = {pit}\n"
            ),
        )
        .unwrap();
        let config = crate::config::Config::load(&path).unwrap();
        let names: Vec<_> = config.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["hl/ve9EPM428kjkvShlRW1KT", "hl/l1C08ntBrFjLS0elLIYU"]
        );
        let first = &config.sources[0];
        assert_eq!(first.schedule.sweep_interval, Duration::from_secs(1800));
        assert_eq!(first.quota.unwrap().per, Duration::from_secs(10));
        assert!(matches!(first.setup.auth, AuthScheme::RotatingRefresh(_)));
        assert!(matches!(
            config.sources[1].setup.auth,
            AuthScheme::Bearer(_)
        ));
    }

    /// An agency source lists no location: its directory holds the agency's rotating
    /// credential (user type Company), lists installed locations of the app named by the
    /// client id, and mints each location's token with it.
    #[test]
    fn an_agency_source_finds_its_locations() {
        let files = SecretFiles::new();
        let refresh = files.add("agency", "rt-agency-very-secret");
        let secret = files.add("secret", "client-very-secret");
        let cfg = parse(&format!(
            "base_url = \"http://127.0.0.1:4000\"\ncompany_id = \"comp1\"\n\
             agency_refresh_token = {refresh}\nclient_id = \"app1-xyz\"\nclient_secret = {secret}"
        ));
        assert!(setup(&cfg, &ctx()).unwrap().is_empty());
        let directory = directory(&cfg, &ctx(), "hl").unwrap().expect("agency mode");
        match directory.auth() {
            AuthScheme::RotatingRefresh(rr) => {
                assert_eq!(
                    rr.extra_form,
                    vec![("user_type".to_owned(), "Company".to_owned())]
                );
                assert_eq!(rr.source, "hl");
                assert!(rr.vault_key.contains("comp1") && !rr.vault_key.contains("secret"));
            }
            other => panic!("expected the agency's refresh token, got {other:?}"),
        }
        let listing = directory.page_request(200).unwrap();
        assert_eq!(
            listing.url.as_str(),
            "http://127.0.0.1:4000/oauth/installedLocations?companyId=comp1&appId=app1&isInstalled=true&skip=200&limit=100"
        );
        let issuer = Arc::new(crate::http::Authenticator::new(
            directory.auth().clone(),
            None,
        ));
        let location = directory.account("locA", issuer);
        assert_eq!(location.name_suffix.as_deref(), Some("locA"));
        assert_eq!(location.provider.account(), "locA");
        match &location.auth {
            AuthScheme::Minted(minted) => {
                assert_eq!(
                    minted.mint_url.as_str(),
                    "http://127.0.0.1:4000/oauth/locationToken"
                );
                assert!(
                    minted
                        .form
                        .contains(&("locationId".to_owned(), "locA".to_owned()))
                );
                assert!(
                    minted
                        .form
                        .contains(&("companyId".to_owned(), "comp1".to_owned()))
                );
            }
            other => panic!("expected a minted token, got {other:?}"),
        }
        let text = format!("{directory:?} {location:?}");
        assert!(!text.contains("very-secret"), "{text}");
    }

    /// Agency mistakes fail at start naming the key.
    #[test]
    fn agency_mistakes_name_the_key() {
        let files = SecretFiles::new();
        let rt = files.add("rt", "rt");
        let agency = format!(
            "company_id = \"comp1\"\nagency_refresh_token = {rt}\nclient_id = \"app-x\"\nclient_secret = {rt}"
        );
        let cases = [
            (
                format!("company_id = \"comp1\"\nclient_id = \"a\"\nclient_secret = {rt}"),
                "agency_refresh_token",
            ),
            (
                format!("agency_refresh_token = {rt}\nclient_id = \"a\"\nclient_secret = {rt}"),
                "company_id",
            ),
            (
                format!(
                    "company_id = \"comp 1\"\nagency_refresh_token = {rt}\nclient_id = \"a\"\nclient_secret = {rt}"
                ),
                "company_id",
            ),
            (
                format!(
                    "company_id = \"comp1\"\nagency_refresh_token = {rt}\nclient_secret = {rt}"
                ),
                "client_id",
            ),
            (
                format!("company_id = \"comp1\"\nagency_refresh_token = {rt}\nclient_id = \"a\""),
                "client_secret",
            ),
            (format!("{agency}\napp_id = \"a/b\""), "app_id"),
            (
                format!("{agency}\nrelist_interval = \"5s\""),
                "relist_interval",
            ),
            (format!("{agency}\nlocation_id = \"locA\""), "location_id"),
            (
                format!("{agency}\nlocations = [{{ id = \"locA\" }}]"),
                "locations",
            ),
            (
                format!("{agency}\nprivate_integration_token = {rt}"),
                "private_integration_token",
            ),
            (format!("{agency}\nrefresh_token = {rt}"), "refresh_token"),
        ];
        for (text, field) in cases {
            let e = match directory(&parse(&text), &ctx(), "hl") {
                Ok(_) => panic!("{text}: expected a config error"),
                Err(e) => e,
            };
            assert_eq!(
                e.key,
                format!("sources[hl].highlevel.{field}"),
                "{text}: {e}"
            );
        }
    }

    /// The URLs keep a base path and drop a trailing slash or query.
    #[test]
    fn urls_are_joined_under_the_base() {
        let base = Url::parse("https://services.leadconnectorhq.com").unwrap();
        assert_eq!(
            join(&base, "conversations/search", "k").unwrap().as_str(),
            "https://services.leadconnectorhq.com/conversations/search"
        );
        let base = Url::parse("http://127.0.0.1:9/prefix/?x=1").unwrap();
        assert_eq!(
            join(&base, "oauth/token", "k").unwrap().as_str(),
            "http://127.0.0.1:9/prefix/oauth/token"
        );
    }
}
