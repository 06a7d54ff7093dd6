//! `[sources.spruce]`: what a user configures for one Spruce organization, validated once
//! at start-up and turned into the adapter, its bearer token and its budget keys.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::SpruceProvider;
use crate::config_error::{ConfigError, validate_base_url};
use crate::http::AuthScheme;
use crate::provider::{ProviderDefaults, ProviderKind, ProviderSetup, SetupContext};
use crate::secret::SecretRef;

/// The public API host; the OpenAPI server is this plus `/v1`.
const DEFAULT_BASE_URL: &str = "https://api.sprucehealth.com";
/// The largest page the API accepts (`pageSize` 1–200) and our default: fewer requests.
const MAX_PAGE_SIZE: u32 = 200;

/// `[sources.spruce]` settings.
///
/// ```toml
/// [[sources]]
/// name = "clinic"
/// provider = "spruce"
/// [sources.spruce]
/// organization_id = "entity_2A0ORG0000000"
/// api_token = { env = "SPRUCE_API_TOKEN" }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpruceConfig {
    /// The organization's entity id (`entity_…`, the segment after `/org/` in any Spruce
    /// web-app URL). Stored in the mirror's `account` column and used as the rate-limit
    /// scope, because Spruce limits requests per organization, not per token.
    pub organization_id: String,
    /// Where the organization's API token is (`{ env = "…" }`, `{ file = "…" }` or
    /// `{ credential = "…" }`). An org admin creates it under Settings → API Access.
    pub api_token: SecretRef,
    /// API base URL; `/v1/…` is appended. Only tests and the simulator change it (plain
    /// http is accepted for loopback addresses only).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Conversations (and conversation items) per request, 1–200. The largest page costs
    /// the fewest requests against the per-minute budget.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Learn who spoke last (last inbound/outbound time, direction, `awaiting_reply`) by
    /// reading the newest items of every conversation whose `lastMessageAt` moved: one
    /// extra request per such conversation. Turn off to mirror the listing only.
    #[serde(default = "default_true")]
    pub track_reply_state: bool,
    /// The webhook endpoint's signing secret (`webhookSigningSecret.value`, returned once
    /// when the endpoint is created), as a secret reference: with it, the source takes
    /// signed events at `/webhooks/NAME` when `[webhooks] listen` is set. Used as the
    /// UTF-8 text Spruce returns, not base64-decoded.
    #[serde(default)]
    pub webhook_secret: Option<SecretRef>,
    /// The webhook endpoint's id (`id` of the endpoint `CreateWebhookEndpoint` returned):
    /// with it (and `webhook_secret`), the daemon replays the endpoint's delivery log at
    /// start-up from the newest event it recorded, so events sent while it was down reach
    /// the mirror before the next poll (docs/webhooks.md, "Replay after downtime").
    #[serde(default)]
    pub webhook_endpoint_id: Option<String>,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

fn default_page_size() -> u32 {
    MAX_PAGE_SIZE
}

fn default_true() -> bool {
    true
}

/// A Spruce entry is one account, named as written.
pub(crate) fn account_suffixes(_cfg: &SpruceConfig) -> Vec<Option<&str>> {
    vec![None]
}

/// Spruce's defaults for the source settings a user may leave out.
pub(crate) fn defaults() -> ProviderDefaults {
    ProviderDefaults {
        poll_interval: Duration::from_secs(60),
        min_poll_interval: Duration::from_secs(10),
        min_poll_reason: "Spruce's request budget is per organization and shared with every other integration",
        // The listing is eventually consistent; Spruce's own guidance is a few minutes.
        lookback: Duration::from_secs(5 * 60),
        // Archive, assignment, tag and title changes are only seen by the sweep.
        sweep_interval: Duration::from_secs(6 * 3600),
        // The numbers are not published: pacing follows the `s-ratelimit-*` headers.
        quota: None,
    }
}

/// Validates the settings, resolves the token and builds the adapter.
pub fn setup(
    cfg: &SpruceConfig,
    ctx: &SetupContext<'_>,
) -> Result<Vec<ProviderSetup>, ConfigError> {
    let key = |field: &str| ctx.key(ProviderKind::Spruce, field);
    let organization_id = cfg.organization_id.trim();
    if organization_id.is_empty() || organization_id.contains(char::is_whitespace) {
        return Err(ConfigError::new(
            key("organization_id"),
            "must be the organization's entity id, e.g. \"entity_2A0ORG0000000\"",
        ));
    }
    if !(1..=MAX_PAGE_SIZE).contains(&cfg.page_size) {
        return Err(ConfigError::new(
            key("page_size"),
            format!(
                "{} is outside the range Spruce accepts (1–{MAX_PAGE_SIZE})",
                cfg.page_size
            ),
        ));
    }
    let base_url = validate_base_url(&key("base_url"), &cfg.base_url)?;
    let api_root =
        api_root(&base_url).map_err(|message| ConfigError::new(key("base_url"), message))?;
    let token = cfg.api_token.resolve().map_err(|e| {
        ConfigError::new(
            key("api_token"),
            format!(
                "cannot read the Spruce API token ({}): {e}",
                cfg.api_token.describe()
            ),
        )
    })?;
    let mut provider = SpruceProvider::new(
        organization_id.to_owned(),
        api_root,
        cfg.page_size,
        cfg.track_reply_state,
    );
    if let Some(secret) = &cfg.webhook_secret {
        let secret = secret.resolve().map_err(|e| {
            ConfigError::new(
                key("webhook_secret"),
                format!(
                    "cannot read the Spruce webhook signing secret ({}): {e}",
                    secret.describe()
                ),
            )
        })?;
        provider = provider.with_webhooks(secret);
    }
    if let Some(endpoint_id) = &cfg.webhook_endpoint_id {
        let endpoint_id = endpoint_id.trim();
        if endpoint_id.is_empty() || endpoint_id.contains(char::is_whitespace) {
            return Err(ConfigError::new(
                key("webhook_endpoint_id"),
                "must be the webhook endpoint's id, as CreateWebhookEndpoint returned it",
            ));
        }
        if cfg.webhook_secret.is_none() {
            return Err(ConfigError::new(
                key("webhook_endpoint_id"),
                "needs webhook_secret: the replayed events are the endpoint's signed events",
            ));
        }
        provider = provider.with_event_log(endpoint_id.to_owned());
    }
    Ok(vec![ProviderSetup {
        credential_key: format!("spruce:{}", token.fingerprint()),
        budget_key: format!("spruce:{organization_id}"),
        auth: AuthScheme::Bearer(token),
        provider: std::sync::Arc::new(provider),
        name_suffix: None,
        defaults: defaults(),
    }])
}

/// The URL that `v1/conversations` is appended to: the base URL with a trailing `/v1`
/// removed (users copy the OpenAPI server URL, which includes it).
fn api_root(base: &Url) -> Result<Url, String> {
    if base.cannot_be_a_base() || base.query().is_some() || base.fragment().is_some() {
        return Err(format!(
            "{base} must be a plain base URL like {DEFAULT_BASE_URL}"
        ));
    }
    let mut root = base.clone();
    let segments: Vec<String> = base
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let keep = match segments.last() {
        Some(last) if last == "v1" => &segments[..segments.len() - 1],
        _ => &segments[..],
    };
    root.set_path(&keep.join("/"));
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> SpruceConfig {
        toml_from_str(toml_text)
    }

    fn toml_from_str(text: &str) -> SpruceConfig {
        use figment::Figment;
        use figment::providers::{Format, Toml};
        Figment::from(Toml::string(text))
            .extract()
            .expect("test config parses")
    }

    fn ctx() -> SetupContext<'static> {
        SetupContext {
            key: "sources[clinic]",
        }
    }

    fn error_of(cfg: &SpruceConfig) -> ConfigError {
        match setup(cfg, &ctx()) {
            Ok(_) => panic!("setup should fail"),
            Err(e) => e,
        }
    }

    /// Unset or empty token variables fail the start naming the key and the variable.
    #[test]
    fn missing_token_names_the_key_and_the_variable() {
        let cfg = config(
            r#"organization_id = "entity_1"
               api_token = { env = "CONVSYNC_TEST_SPRUCE_TOKEN_THAT_IS_NOT_SET" }"#,
        );
        let err = error_of(&cfg);
        assert_eq!(err.key, "sources[clinic].spruce.api_token");
        assert!(
            err.message
                .contains("CONVSYNC_TEST_SPRUCE_TOKEN_THAT_IS_NOT_SET"),
            "{err}"
        );
    }

    /// Page sizes outside 1–200 are refused at start instead of a 400 at the first poll.
    #[test]
    fn page_size_outside_the_api_range_is_refused() {
        let cfg = config(
            r#"organization_id = "entity_1"
               api_token = { env = "X" }
               page_size = 500"#,
        );
        assert_eq!(error_of(&cfg).key, "sources[clinic].spruce.page_size");
    }

    /// Plain http is refused for anything but loopback, naming the base_url key.
    #[test]
    fn plain_http_to_a_remote_host_is_refused() {
        let cfg = config(
            r#"organization_id = "entity_1"
               api_token = { env = "X" }
               base_url = "http://api.sprucehealth.com""#,
        );
        assert_eq!(error_of(&cfg).key, "sources[clinic].spruce.base_url");
    }

    /// A blank organization id cannot label the mirror's rows.
    #[test]
    fn blank_organization_id_is_refused() {
        let cfg = config(
            r#"organization_id = "  "
               api_token = { env = "X" }"#,
        );
        assert_eq!(error_of(&cfg).key, "sources[clinic].spruce.organization_id");
    }

    /// Defaults: the public host, 200 per page, reply state on.
    #[test]
    fn defaults_follow_the_issue() {
        let cfg = config(
            r#"organization_id = "entity_1"
               api_token = { env = "X" }"#,
        );
        assert_eq!(cfg.base_url, "https://api.sprucehealth.com");
        assert_eq!(cfg.page_size, 200);
        assert!(cfg.track_reply_state);
    }

    /// Unknown keys are typos, not silently ignored settings.
    #[test]
    fn unknown_keys_are_refused() {
        use figment::Figment;
        use figment::providers::{Format, Toml};
        let parsed: Result<SpruceConfig, _> = Figment::from(Toml::string(
            r#"organization_id = "entity_1"
               api_token = { env = "X" }
               pagesize = 10"#,
        ))
        .extract();
        assert!(parsed.is_err());
    }

    /// The OpenAPI server URL (with `/v1`) and the bare host both work.
    #[test]
    fn api_root_accepts_the_host_or_the_v1_server_url() {
        for base in [
            "https://api.sprucehealth.com",
            "https://api.sprucehealth.com/",
            "https://api.sprucehealth.com/v1",
            "https://api.sprucehealth.com/v1/",
        ] {
            let root = api_root(&Url::parse(base).unwrap()).unwrap();
            assert_eq!(root.as_str(), "https://api.sprucehealth.com/", "{base}");
        }
        let proxied = api_root(&Url::parse("http://127.0.0.1:8080/spruce/v1").unwrap()).unwrap();
        assert_eq!(proxied.as_str(), "http://127.0.0.1:8080/spruce");
    }

    /// `webhook_endpoint_id` turns on the delivery-log replay only beside the signing
    /// secret, and must look like an id.
    #[test]
    fn the_endpoint_id_needs_the_secret_and_a_real_id() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok").unwrap();
        let with = |extra: &str| {
            config(&format!(
                "organization_id = \"entity_1\"\napi_token = {{ file = \"{}\" }}\n{extra}",
                token.display()
            ))
        };
        let err = error_of(&with("webhook_endpoint_id = \"wde_1\""));
        assert_eq!(err.key, "sources[clinic].spruce.webhook_endpoint_id");
        assert!(err.message.contains("webhook_secret"), "{err}");
        let secret = format!("webhook_secret = {{ file = \"{}\" }}", token.display());
        let err = error_of(&with(&format!("{secret}\nwebhook_endpoint_id = \" \"")));
        assert_eq!(err.key, "sources[clinic].spruce.webhook_endpoint_id");
        let setups = setup(
            &with(&format!("{secret}\nwebhook_endpoint_id = \"wde_1\"")),
            &ctx(),
        )
        .unwrap();
        assert!(setups[0].provider.event_log().is_some());
        let setups = setup(&with(&secret), &ctx()).unwrap();
        assert!(setups[0].provider.event_log().is_none());
    }
}
