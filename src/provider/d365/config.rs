//! `[sources.d365]`: what a user configures for one custom messaging channel, and the
//! validation that turns it into an adapter plus its Entra client-credentials scheme.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::webhook::entra::{EntraRules, EntraTokenCheck};
use super::{D365, D365Webhooks};
use crate::config_error::{ConfigError, validate_base_url};
use crate::http::auth::{ClientCredentials, CredentialPlacement};
use crate::http::jwks::{JwksPolicy, SigningKeys};
use crate::http::{AuthScheme, HttpSettings, RateQuota};
use crate::provider::{ProviderDefaults, ProviderKind, ProviderSetup, SetupContext};
use crate::secret::SecretRef;

/// Entra's public-cloud authority, where client-credentials tokens come from.
const DEFAULT_LOGIN_URL: &str = "https://login.microsoftonline.com";

/// The Dataverse zone of North-American organizations (`crm.dynamics.com`).
const DEFAULT_ZONE: &str = "crm";

/// The largest page the list endpoint accepts (error 30007 above it).
pub(super) const MAX_PAGE_SIZE: u32 = 250;

/// How long one fetch of the Entra signing keys may take: webhook requests wait for it, and
/// D365 gives each delivery 10 s.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Share of the cycle's requests that message follow-ups may use by default.
const DEFAULT_MESSAGES_SHARE: f64 = 0.1;

/// Why D365 refuses short poll intervals; shown when a config asks for less.
const MIN_POLL_REASON: &str = "Microsoft asks integrators not to use the conversations endpoint as a \
     polling mechanism (updates are meant to reach the channel's webhook); convsync polls it only \
     to reconcile, and sparsely";

/// `[sources.d365]` settings of one custom messaging channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct D365Config {
    /// The Messaging API host, `https://m-{org_id}.{geo}.omnichannelengagementhub.com`. The
    /// `{geo}` part is tenant-specific and cannot be derived, so it is configured whole.
    pub base_url: String,
    /// The Dataverse organization id (GUID), sent as the organization header (see
    /// `header_names`) and used to derive the token scope.
    pub organization_id: String,
    /// The custom channel id (`msdyn_occustommessagingchannel` record id, GUID), sent as the
    /// channel header (see `header_names`). The listing only shows this channel's conversations, so it is
    /// also the mirror's `account`.
    pub channel_id: String,
    /// The Entra tenant (directory) id or verified domain of the app registration.
    pub tenant_id: String,
    /// The app registration's client (application) id.
    pub client_id: String,
    /// The app registration's client secret, as a reference (`{ env = ".." }`,
    /// `{ file = ".." }` or `{ credential = ".." }`).
    pub client_secret: SecretRef,
    /// The Dataverse zone of the organization's datacenter (`crm` North America, `crm4`
    /// EMEA, `crm11` UK, ...): the token scope is
    /// `https://{organization_id without dashes}-c.{zone}.dynamics.com/.default`.
    #[serde(default)]
    pub zone: Option<String>,
    /// The whole token scope, overriding the one derived from `organization_id` and `zone`.
    #[serde(default)]
    pub scope: Option<String>,
    /// The Entra authority host (sovereign clouds, tests); the token endpoint is
    /// `{login_url}/{tenant_id}/oauth2/v2.0/token`.
    #[serde(default)]
    pub login_url: Option<String>,
    /// Conversations per page (1–250; default 250, the maximum, to spend the fewest requests).
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Read each active conversation's messages to fill last-activity time, last message
    /// direction and reply state (off by default: one extra request per conversation).
    #[serde(default)]
    pub messages: bool,
    /// Share (0.0–1.0) of a cycle's requests that message follow-ups may use.
    #[serde(default)]
    pub messages_share: Option<f64>,
    /// Which names the channel and organization headers go under. Microsoft renamed them
    /// between versions of its docs, and which builds accept which is not documented:
    /// `"both"` (default) sends `channel-id`/`organization-id` *and*
    /// `x-ms-channel-id`/`x-ms-organization-id`, which works with either generation;
    /// `"plain"` sends only the first pair (2025-09 docs), `"x-ms"` only the second
    /// (2025-04 docs), for a gateway that refuses unknown headers.
    #[serde(default)]
    pub header_names: Option<String>,
    /// The static token the channel's webhook requests carry (`x-ms-token`, or
    /// `Authorization: Bearer`), as a secret reference. When set, the receiver accepts the
    /// activities posted to `/webhooks/NAME/v3/conversations/{id}/activities`
    /// (docs/webhooks.md). Not together with `webhook_entra`.
    #[serde(default)]
    pub webhook_token: Option<SecretRef>,
    /// The Entra app whose access tokens the channel's webhook requests carry in
    /// `Authorization: Bearer` (Microsoft's 2025-09 docs): when set, the receiver accepts
    /// requests whose token passes the checks of docs/webhooks.md. Not together with
    /// `webhook_token`.
    #[serde(default)]
    pub webhook_entra: Option<WebhookEntraConfig>,
}

/// `webhook_entra = { … }`: which Entra access tokens authenticate webhook requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntraConfig {
    /// The directory (tenant) id, a GUID: tokens must carry it as `tid` and come from its
    /// issuer.
    pub tenant_id: String,
    /// The accepted `aud` values: the registered app's client id (v2 tokens) and/or its
    /// application id URI (`api://…`, v1 tokens). At least one.
    pub audiences: Vec<String>,
    /// The callers (client ids, the token's `azp` or `appid`) accepted; empty or absent:
    /// any app of the tenant that can get a token for the audience.
    #[serde(default)]
    pub allowed_client_ids: Vec<String>,
    /// Where the tenant's signing keys are published; default
    /// `{login_url}/{tenant_id}/discovery/v2.0/keys`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The accepted `iss` values; default the tenant's v2
    /// (`https://login.microsoftonline.com/{tenant_id}/v2.0`) and v1
    /// (`https://sts.windows.net/{tenant_id}/`) issuers. Sovereign clouds set theirs.
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
}

/// The names the channel and organization headers are sent under (`header_names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeaderNames {
    /// Both generations' pairs.
    Both,
    /// `channel-id` / `organization-id` (Microsoft's 2025-09 docs).
    Plain,
    /// `x-ms-channel-id` / `x-ms-organization-id` (Microsoft's 2025-04 docs).
    XMs,
}

impl HeaderNames {
    /// `(channel header, organization header)` pairs to send.
    pub(super) fn pairs(self) -> &'static [(&'static str, &'static str)] {
        const PLAIN: (&str, &str) = ("channel-id", "organization-id");
        const X_MS: (&str, &str) = ("x-ms-channel-id", "x-ms-organization-id");
        match self {
            HeaderNames::Both => &[PLAIN, X_MS],
            HeaderNames::Plain => &[PLAIN],
            HeaderNames::XMs => &[X_MS],
        }
    }

    fn parse(key: &str, value: Option<&str>) -> Result<HeaderNames, ConfigError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("both") => Ok(HeaderNames::Both),
            Some("plain") => Ok(HeaderNames::Plain),
            Some("x-ms") => Ok(HeaderNames::XMs),
            Some(other) => Err(ConfigError::new(
                key,
                format!(
                    "{other:?} is not one of \"both\" (default: channel-id and x-ms-channel-id \
                     pairs), \"plain\" (channel-id / organization-id) or \"x-ms\" \
                     (x-ms-channel-id / x-ms-organization-id)"
                ),
            )),
        }
    }
}

/// Everything the adapter needs once the settings are valid.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// The API host (and any path prefix), ending in `/`.
    pub base_url: Url,
    /// Organization header value.
    pub organization_id: String,
    /// Channel header value and mirror account.
    pub channel_id: String,
    /// The names those two headers are sent under.
    pub header_names: HeaderNames,
    /// `PageSize` of the list calls.
    pub page_size: u32,
    /// Whether message follow-ups run.
    pub messages: bool,
    /// Share of the request budget for follow-ups.
    pub messages_share: f64,
}

/// Validates the settings, resolves the client secret and builds the adapter.
pub fn setup(cfg: &D365Config, ctx: &SetupContext<'_>) -> Result<Vec<ProviderSetup>, ConfigError> {
    let key = |field: &str| ctx.key(ProviderKind::D365, field);

    let organization_id = guid(&key("organization_id"), &cfg.organization_id)?;
    let channel_id = guid(&key("channel_id"), &cfg.channel_id)?;
    let client_id = required(&key("client_id"), &cfg.client_id)?;
    let tenant_id = tenant(&key("tenant_id"), &cfg.tenant_id)?;
    let base_url = api_base(&key("base_url"), &cfg.base_url, &organization_id)?;
    let scope = match &cfg.scope {
        Some(scope) => required(&key("scope"), scope)?,
        None => {
            let zone = zone(&key("zone"), cfg.zone.as_deref().unwrap_or(DEFAULT_ZONE))?;
            default_scope(&organization_id, &zone)
        }
    };
    let login_url = validate_base_url(
        &key("login_url"),
        cfg.login_url.as_deref().unwrap_or(DEFAULT_LOGIN_URL),
    )?;
    let token_url = token_url(&key("login_url"), &login_url, &tenant_id)?;
    let page_size = cfg.page_size.unwrap_or(MAX_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ConfigError::new(
            key("page_size"),
            format!("{page_size} is out of range: the list endpoint accepts 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    let messages_share = cfg.messages_share.unwrap_or(DEFAULT_MESSAGES_SHARE);
    if !(0.0..=1.0).contains(&messages_share) {
        return Err(ConfigError::new(
            key("messages_share"),
            "must be a share between 0.0 and 1.0 (0.1 = 10 % of a cycle's requests)",
        ));
    }
    let header_names = HeaderNames::parse(&key("header_names"), cfg.header_names.as_deref())?;
    let client_secret = cfg.client_secret.resolve().map_err(|e| {
        ConfigError::new(
            key("client_secret"),
            format!("cannot read {}: {e}", cfg.client_secret.describe()),
        )
    })?;

    let credential_key = format!(
        "d365:{}:{}:{}:{}",
        token_url,
        client_id.to_ascii_lowercase(),
        client_secret.fingerprint(),
        scope
    );
    let budget_key = format!("d365:{}:{}", base_url, organization_id);
    let settings = Settings {
        base_url,
        organization_id,
        channel_id,
        header_names,
        page_size,
        messages: cfg.messages,
        messages_share,
    };
    let webhooks = match (&cfg.webhook_token, &cfg.webhook_entra) {
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key("webhook_entra"),
                "is set together with webhook_token: a bearer value cannot be both a static \
                 token and an Entra access token. Keep webhook_token for a channel that sends \
                 a fixed token (x-ms-token, or a static Authorization: Bearer), or \
                 webhook_entra for one that sends tokens of its registered Entra app",
            ));
        }
        (Some(reference), None) => {
            let token = reference.resolve().map_err(|e| {
                ConfigError::new(
                    key("webhook_token"),
                    format!("cannot read {}: {e}", reference.describe()),
                )
            })?;
            if token.expose().is_empty() {
                return Err(ConfigError::new(
                    key("webhook_token"),
                    "is empty: give the token the channel's webhook requests carry",
                ));
            }
            Some(D365Webhooks::new(token))
        }
        (None, Some(entra)) => Some(D365Webhooks::entra(entra_check(
            entra,
            &login_url,
            &key("webhook_entra"),
            source_name(ctx.key),
        )?)),
    }
    .map(|webhooks| webhooks.reading_messages(settings.messages));
    Ok(vec![ProviderSetup {
        provider: Arc::new(D365::new(settings).with_webhooks(webhooks)),
        auth: AuthScheme::ClientCredentials(ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope: Some(scope),
            placement: CredentialPlacement::FormFields,
        }),
        credential_key,
        budget_key,
        name_suffix: None,
        defaults: defaults(),
    }])
}

/// The Entra token check of `webhook_entra`, its keys fetched from the tenant's key set.
fn entra_check(
    cfg: &WebhookEntraConfig,
    login_url: &Url,
    key: &str,
    owner: &str,
) -> Result<EntraTokenCheck, ConfigError> {
    let field = |name: &str| format!("{key}.{name}");
    let tenant_id = guid(&field("tenant_id"), &cfg.tenant_id)?;
    let audiences = cfg
        .audiences
        .iter()
        .map(|audience| required(&field("audiences"), audience))
        .collect::<Result<Vec<_>, _>>()?;
    if audiences.is_empty() {
        return Err(ConfigError::new(
            field("audiences"),
            "is empty: give the registered app's client id and/or application id URI",
        ));
    }
    let allowed_client_ids = cfg
        .allowed_client_ids
        .iter()
        .map(|id| guid(&field("allowed_client_ids"), id))
        .collect::<Result<Vec<_>, _>>()?;
    let issuers = match &cfg.issuers {
        None => EntraRules::default_issuers(&tenant_id),
        Some(issuers) if issuers.is_empty() => {
            return Err(ConfigError::new(
                field("issuers"),
                "is empty: leave it out for the tenant's own issuers",
            ));
        }
        Some(issuers) => issuers
            .iter()
            .map(|issuer| required(&field("issuers"), issuer))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let jwks_url = match &cfg.jwks_url {
        Some(url) => validate_base_url(&field("jwks_url"), url)?,
        None => {
            let base = login_url.as_str().trim_end_matches('/');
            Url::parse(&format!("{base}/{tenant_id}/discovery/v2.0/keys")).map_err(|e| {
                ConfigError::new(field("jwks_url"), format!("cannot build the URL: {e}"))
            })?
        }
    };
    let client = crate::http::build_client(&HttpSettings {
        timeout: JWKS_TIMEOUT,
        connect_timeout: JWKS_TIMEOUT,
        ..HttpSettings::default()
    })
    .map_err(|e| ConfigError::new(key, format!("cannot build an HTTP client: {e}")))?;
    let keys = SigningKeys::new(jwks_url, client, JwksPolicy::default(), owner.to_owned());
    let rules = EntraRules {
        tenant_id,
        audiences,
        issuers,
        allowed_client_ids,
    };
    Ok(EntraTokenCheck::new(rules, Arc::new(keys)))
}

/// The source's name in `sources[NAME]`, for log lines.
fn source_name(key: &str) -> &str {
    key.strip_prefix("sources[")
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(key)
}

/// A D365 entry is one account, named as written.
pub(crate) fn account_suffixes(_cfg: &D365Config) -> Vec<Option<&str>> {
    vec![None]
}

/// The defaults a D365 source starts from: sparse polling, as Microsoft asks.
pub(crate) fn defaults() -> ProviderDefaults {
    ProviderDefaults {
        poll_interval: Duration::from_secs(300),
        min_poll_interval: Duration::from_secs(60),
        min_poll_reason: MIN_POLL_REASON,
        // "Created after" is exclusive and the service is assumed eventually consistent:
        // re-list the last five minutes of creations every cycle.
        lookback: Duration::from_secs(300),
        sweep_interval: Duration::from_secs(30 * 60),
        // Microsoft publishes no numbers; stay well below anything plausible and let 429 +
        // Retry-After do the rest.
        quota: Some(RateQuota {
            requests: NonZeroU32::new(300).expect("nonzero"),
            per: Duration::from_secs(60),
            burst: NonZeroU32::new(10).expect("nonzero"),
        }),
    }
}

/// `https://{org without dashes}-c.{zone}.dynamics.com/.default`, the documented scope.
fn default_scope(organization_id: &str, zone: &str) -> String {
    format!(
        "https://{}-c.{zone}.dynamics.com/.default",
        organization_id.replace('-', "")
    )
}

fn required(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(value.to_owned())
}

/// A GUID in its usual 8-4-4-4-12 form (braces tolerated), lower-cased.
fn guid(key: &str, value: &str) -> Result<String, ConfigError> {
    let trimmed = value.trim().trim_start_matches('{').trim_end_matches('}');
    let groups: Vec<&str> = trimmed.split('-').collect();
    let lengths_ok = groups.len() == 5
        && groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()));
    if !lengths_ok {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
        ));
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// A tenant is a GUID or a verified domain; either becomes a path segment of the token URL.
fn tenant(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = required(key, value)?;
    let valid = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !valid {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not a tenant id or domain (letters, digits, '-', '.', '_')"),
        ));
    }
    Ok(value)
}

fn zone(key: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim().to_ascii_lowercase();
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not a Dataverse zone such as \"crm\", \"crm4\" or \"crm11\""),
        ));
    }
    Ok(value)
}

/// The API base with a trailing slash, so that endpoint paths join below any prefix.
fn api_base(key: &str, value: &str, organization_id: &str) -> Result<Url, ConfigError> {
    let mut url = validate_base_url(key, value.trim())?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            key,
            "must not carry a query string or fragment",
        ));
    }
    let path = url.path().trim_end_matches('/').to_ascii_lowercase();
    if path.ends_with("/api/v1.0/consumer") || path.contains("/api/v1.0/consumer/") {
        return Err(ConfigError::new(
            key,
            format!(
                "{value:?} includes the API path: give only the host, \
                 https://m-{{org_id}}.{{geo}}.omnichannelengagementhub.com"
            ),
        ));
    }
    if let Some(host) = url.host_str() {
        let host = host.to_ascii_lowercase();
        if host.ends_with(".omnichannelengagementhub.com") {
            let expected = format!("m-{organization_id}.");
            if !host.starts_with(&expected) {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "host {host} does not belong to organization {organization_id} \
                         (expected m-{organization_id}.{{geo}}.omnichannelengagementhub.com)"
                    ),
                ));
            }
        }
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn token_url(key: &str, login_url: &Url, tenant_id: &str) -> Result<Url, ConfigError> {
    let base = login_url.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}/{tenant_id}/oauth2/v2.0/token"))
        .map_err(|e| ConfigError::new(key, format!("cannot build the token URL: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "0b9a3c2e-5d1f-4c7a-9e21-7f3b8d6a1c44";
    const CHANNEL: &str = "6f0e7d12-8a4b-4b3e-b0c9-2d5e9a7c3f10";

    /// A config whose client secret is a file in `dir` (when `secret` is given).
    fn config(dir: &tempfile::TempDir, secret: Option<&str>) -> D365Config {
        let path = dir.path().join("client-secret");
        if let Some(secret) = secret {
            std::fs::write(&path, secret).unwrap();
        }
        D365Config {
            base_url: format!("https://m-{ORG}.us.omnichannelengagementhub.com"),
            organization_id: ORG.to_uppercase(),
            channel_id: CHANNEL.into(),
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "3f2b1a90-7c6d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            client_secret: SecretRef::File { file: path },
            zone: None,
            scope: None,
            login_url: None,
            page_size: None,
            messages: false,
            messages_share: None,
            header_names: None,
            webhook_token: None,
            webhook_entra: None,
        }
    }

    /// `webhook_token` gives the source its webhook; without it the source has none.
    #[test]
    fn webhooks_need_a_webhook_token() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&dir, Some("s3cr3t-value\n"));
        assert!(
            setup(&cfg, &ctx()).unwrap()[0]
                .provider
                .webhooks()
                .is_none()
        );
        let path = dir.path().join("webhook-token");
        std::fs::write(&path, "hook-token\n").unwrap();
        cfg.webhook_token = Some(SecretRef::File { file: path.clone() });
        let setups = setup(&cfg, &ctx()).unwrap();
        assert!(setups[0].provider.webhooks().is_some());
        assert!(!format!("{setups:?}").contains("hook-token"));
        for content in [None, Some("\n")] {
            match content {
                Some(text) => std::fs::write(&path, text).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            let err = setup(&cfg, &ctx()).unwrap_err();
            assert_eq!(err.key, "sources[cc].d365.webhook_token", "{err}");
        }
    }

    const TENANT: &str = "7d3c1a52-9b4e-4f0a-8c61-2e5d9f7b3a18";

    fn entra() -> WebhookEntraConfig {
        WebhookEntraConfig {
            tenant_id: TENANT.to_uppercase(),
            audiences: vec!["api://convsync-webhook".into()],
            allowed_client_ids: Vec::new(),
            jwks_url: None,
            issuers: None,
        }
    }

    /// `webhook_entra` alone gives the source a webhook checking Entra tokens, with the
    /// key set under `login_url` unless `jwks_url` says otherwise.
    #[test]
    fn webhook_entra_gives_the_source_an_entra_checked_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&dir, Some("s3cr3t-value\n"));
        cfg.webhook_entra = Some(entra());
        assert!(
            setup(&cfg, &ctx()).unwrap()[0]
                .provider
                .webhooks()
                .is_some()
        );
        let keys_url = |settings: &WebhookEntraConfig, login_url: &str| {
            let login_url = Url::parse(login_url).unwrap();
            entra_check(settings, &login_url, "k", "cc")
                .unwrap()
                .keys()
                .url()
                .to_string()
        };
        assert_eq!(
            keys_url(&entra(), DEFAULT_LOGIN_URL),
            format!("https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys")
        );
        assert_eq!(
            keys_url(&entra(), "http://127.0.0.1:4010/"),
            format!("http://127.0.0.1:4010/{TENANT}/discovery/v2.0/keys")
        );
        let overridden = WebhookEntraConfig {
            jwks_url: Some("https://keys.example.test/jwks".into()),
            issuers: Some(vec!["https://login.microsoftonline.us/x/v2.0".into()]),
            allowed_client_ids: vec!["3F2B1A90-7C6D-4E5F-8A9B-0C1D2E3F4A5B".into()],
            ..entra()
        };
        assert_eq!(
            keys_url(&overridden, DEFAULT_LOGIN_URL),
            "https://keys.example.test/jwks"
        );
    }

    /// A static token and Entra tokens together are ambiguous; each Entra setting is
    /// checked with its key named.
    #[test]
    fn ambiguous_or_broken_entra_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&dir, Some("s3cr3t-value\n"));
        let path = dir.path().join("webhook-token");
        std::fs::write(&path, "hook-token\n").unwrap();
        cfg.webhook_token = Some(SecretRef::File { file: path });
        cfg.webhook_entra = Some(entra());
        let err = setup(&cfg, &ctx()).unwrap_err();
        assert_eq!(err.key, "sources[cc].d365.webhook_entra", "{err}");
        assert!(err.to_string().contains("webhook_token"), "{err}");
        cfg.webhook_token = None;
        type Breaks = fn(&mut WebhookEntraConfig);
        let broken: [(Breaks, &str); 6] = [
            (
                |e| e.tenant_id = "contoso.onmicrosoft.com".into(),
                "tenant_id",
            ),
            (|e| e.audiences.clear(), "audiences"),
            (|e| e.audiences = vec![" ".into()], "audiences"),
            (
                |e| e.allowed_client_ids = vec!["my-app".into()],
                "allowed_client_ids",
            ),
            (
                |e| e.jwks_url = Some("http://keys.example.test/".into()),
                "jwks_url",
            ),
            (|e| e.issuers = Some(Vec::new()), "issuers"),
        ];
        for (breaks, field) in broken {
            let mut settings = entra();
            breaks(&mut settings);
            cfg.webhook_entra = Some(settings);
            let err = setup(&cfg, &ctx()).unwrap_err();
            assert_eq!(
                err.key,
                format!("sources[cc].d365.webhook_entra.{field}"),
                "{err}"
            );
        }
    }

    /// The TOML form of the documentation parses, and a misspelt key is refused.
    #[test]
    fn webhook_entra_parses_from_toml() {
        use figment::providers::Format as _;
        let text = format!(
            "tenant_id = \"{TENANT}\"\naudiences = [\"api://convsync-webhook\"]\nallowed_client_ids = [\"3f2b1a90-7c6d-4e5f-8a9b-0c1d2e3f4a5b\"]\n"
        );
        let parsed: WebhookEntraConfig =
            figment::Figment::from(figment::providers::Toml::string(&text))
                .extract()
                .unwrap();
        assert_eq!(parsed.audiences, ["api://convsync-webhook"]);
        let misspelt = format!("{text}audience = \"x\"\n");
        assert!(
            figment::Figment::from(figment::providers::Toml::string(&misspelt))
                .extract::<WebhookEntraConfig>()
                .is_err()
        );
    }

    fn ctx() -> SetupContext<'static> {
        SetupContext { key: "sources[cc]" }
    }

    /// A complete config yields Entra client credentials with the documented scope and URL.
    #[test]
    fn derives_scope_and_token_url_from_org_and_zone() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&dir, Some("s3cr3t-value\n"));
        cfg.zone = Some("CRM4".into());
        let setups = setup(&cfg, &ctx()).unwrap();
        let AuthScheme::ClientCredentials(cc) = &setups[0].auth else {
            panic!("expected client credentials");
        };
        assert_eq!(
            cc.scope.as_deref(),
            Some("https://0b9a3c2e5d1f4c7a9e217f3b8d6a1c44-c.crm4.dynamics.com/.default")
        );
        assert_eq!(
            cc.token_url.as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(cc.placement, CredentialPlacement::FormFields);
        assert_eq!(cc.client_secret.expose(), "s3cr3t-value");
        assert_eq!(setups[0].provider.account(), CHANNEL);
        assert!(!setups[0].credential_key.contains("s3cr3t"));
        assert!(!format!("{:?}", setups[0]).contains("s3cr3t"));
    }

    /// The default zone is `crm` and an explicit scope wins over the derived one.
    #[test]
    fn scope_defaults_to_crm_and_can_be_overridden() {
        let dir = tempfile::tempdir().unwrap();
        let derived = setup(&config(&dir, Some("x")), &ctx()).unwrap();
        let AuthScheme::ClientCredentials(cc) = &derived[0].auth else {
            panic!("expected client credentials");
        };
        assert!(
            cc.scope
                .as_deref()
                .unwrap()
                .ends_with("-c.crm.dynamics.com/.default")
        );
        let mut cfg = config(&dir, Some("x"));
        cfg.scope = Some("https://custom/.default".into());
        let explicit = setup(&cfg, &ctx()).unwrap();
        let AuthScheme::ClientCredentials(cc) = &explicit[0].auth else {
            panic!("expected client credentials");
        };
        assert_eq!(cc.scope.as_deref(), Some("https://custom/.default"));
    }

    /// A missing secret fails the start and names the full key.
    #[test]
    fn missing_secret_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = setup(&config(&dir, None), &ctx()).unwrap_err();
        assert_eq!(err.key, "sources[cc].d365.client_secret");
        assert!(err.message.contains("client-secret"), "{}", err.message);
    }

    /// Mistakes are reported against the key that holds them.
    #[test]
    fn invalid_values_name_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        type Mutation = Box<dyn Fn(&mut D365Config)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|c| c.organization_id = "not-a-guid".into()),
                "organization_id",
            ),
            (Box::new(|c| c.channel_id = String::new()), "channel_id"),
            (Box::new(|c| c.client_id = "  ".into()), "client_id"),
            (Box::new(|c| c.tenant_id = "a/b".into()), "tenant_id"),
            (Box::new(|c| c.zone = Some("crm 4".into())), "zone"),
            (Box::new(|c| c.page_size = Some(251)), "page_size"),
            (Box::new(|c| c.page_size = Some(0)), "page_size"),
            (Box::new(|c| c.messages_share = Some(1.5)), "messages_share"),
            (
                Box::new(|c| c.header_names = Some("x_ms".into())),
                "header_names",
            ),
            (
                Box::new(|c| c.base_url = "http://example.com".into()),
                "base_url",
            ),
            (
                Box::new(|c| {
                    c.base_url = format!(
                        "https://m-{ORG}.us.omnichannelengagementhub.com/api/v1.0/consumer/"
                    )
                }),
                "base_url",
            ),
            (
                Box::new(|c| {
                    c.base_url = "https://m-11111111-2222-3333-4444-555555555555.eu.omnichannelengagementhub.com".into()
                }),
                "base_url",
            ),
            (
                Box::new(|c| c.login_url = Some("ftp://login".into())),
                "login_url",
            ),
        ];
        for (mutate, field) in cases {
            let mut cfg = config(&dir, Some("x"));
            mutate(&mut cfg);
            let err = setup(&cfg, &ctx()).unwrap_err();
            assert_eq!(
                err.key,
                format!("sources[cc].d365.{field}"),
                "{}",
                err.message
            );
        }
    }

    /// Loopback URLs (the simulator) are accepted over plain http and get a trailing slash.
    #[test]
    fn loopback_base_url_is_accepted() {
        let url = api_base("k", "http://127.0.0.1:8080/prefix", ORG).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/prefix/");
    }

    /// The defaults keep polling sparse, as Microsoft asks.
    #[test]
    fn defaults_poll_sparsely() {
        let d = defaults();
        assert!(d.min_poll_interval >= Duration::from_secs(60));
        assert!(d.poll_interval >= d.min_poll_interval);
        assert!(d.min_poll_reason.contains("webhook"));
    }
}
