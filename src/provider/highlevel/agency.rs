//! Agency mode: a source that holds the agency's (Company) OAuth credential instead of a
//! list of locations, and mirrors every location where the app is installed.
//!
//! HighLevel lists them with `GET /oauth/installedLocations` (`companyId`, `appId`,
//! `isInstalled=true`, paged by `skip`/`limit`) and mints a location's access token from
//! the agency's with `POST /oauth/locationToken` (`companyId`, `locationId`); both take
//! the agency token as bearer and the `Version` header `2021-07-28`, the only value their
//! spec allows (`shared/providers/highlevel/oauth.json`). The agency's refresh token
//! rotates exactly like a location's and is kept in the same vault.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::HighLevel;
use super::config::{Common, REFRESH_TOKEN_UNUSED_LIFETIME, ROTATE_REFRESH_TOKEN_EVERY};
use super::webhook::HighLevelWebhooks;
use crate::http::auth::{MintedToken, RotatingRefresh};
use crate::http::{
    AuthScheme, Authenticator, HttpResponse, RateQuota, RequestSpec, ResponsePolicy,
};
use crate::provider::directory::{AccountDirectory, DirectoryPage};
use crate::provider::{ProviderError, ProviderSetup};
use crate::secret::Secret;

/// The `Version` the OAuth endpoints' spec allows (unlike the search's).
const OAUTH_API_VERSION: &str = "2021-07-28";

/// Locations asked for per listing page.
const PAGE_LIMIT: u64 = 100;

/// The most locations one agency source runs: each is a task with its own budget and
/// cursor, so a listing that claims more is refused rather than obeyed.
pub const MAX_LOCATIONS: usize = 2000;

/// Longest location id accepted from the listing (HighLevel's are 20 characters).
const MAX_LOCATION_ID_BYTES: usize = 64;

/// An agency source: its credential, where to list and mint, and what each location's
/// adapter reads.
pub struct HighLevelAgency {
    company_id: String,
    app_id: String,
    /// How often the installed locations are listed again while running.
    relist_interval: Duration,
    client_id: String,
    auth: AuthScheme,
    credential_key: String,
    quota: Option<RateQuota>,
    installed_url: Url,
    mint_url: Url,
    search_url: Url,
    page_size: u32,
    api_version: String,
    webhooks: Arc<HighLevelWebhooks>,
}

impl std::fmt::Debug for HighLevelAgency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HighLevelAgency")
            .field("company_id", &self.company_id)
            .field("app_id", &self.app_id)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// What [`HighLevelAgency::new`] needs from the validated configuration.
pub(super) struct AgencySettings {
    pub(super) entry: String,
    pub(super) company_id: String,
    pub(super) app_id: String,
    pub(super) relist_interval: Duration,
    pub(super) client_id: String,
    pub(super) client_secret: Secret,
    pub(super) refresh_token: Secret,
    pub(super) common: Common,
}

impl HighLevelAgency {
    pub(super) fn new(settings: AgencySettings) -> HighLevelAgency {
        let AgencySettings {
            entry,
            company_id,
            app_id,
            relist_interval,
            client_id,
            client_secret,
            refresh_token,
            common,
        } = settings;
        // The initial token's fingerprint keys the chain, as for a location: a new agency
        // token in the config (after a re-install) starts afresh.
        let credential_key = format!(
            "highlevel/agency/{client_id}/{company_id}/{}",
            refresh_token.fingerprint()
        );
        let auth = AuthScheme::RotatingRefresh(RotatingRefresh {
            token_url: common.token_url.clone(),
            client_id: client_id.clone(),
            client_secret,
            initial_refresh_token: refresh_token,
            extra_form: vec![("user_type".to_owned(), "Company".to_owned())],
            vault_key: credential_key.clone(),
            source: entry,
            rotate_every: ROTATE_REFRESH_TOKEN_EVERY,
            expires_unused_after: REFRESH_TOKEN_UNUSED_LIFETIME,
        });
        HighLevelAgency {
            quota: super::defaults().quota,
            company_id,
            app_id,
            relist_interval,
            client_id,
            auth,
            credential_key,
            installed_url: common.installed_url,
            mint_url: common.mint_url,
            search_url: common.search_url,
            page_size: common.page_size,
            api_version: common.api_version,
            webhooks: common.webhooks,
        }
    }
}

impl ResponsePolicy for HighLevelAgency {
    fn describe_error(&self, status: reqwest::StatusCode, body: &[u8]) -> String {
        super::errors::describe(status, body, &self.company_id)
    }

    fn remaining_requests(&self, headers: &reqwest::header::HeaderMap) -> Option<u64> {
        super::limits::remaining_requests(headers)
    }
}

/// `GetInstalledLocationsSuccessfulResponseDto`: only what is read.
#[derive(Deserialize)]
struct InstalledLocations {
    locations: Option<Vec<Value>>,
    #[serde(default)]
    count: Option<Value>,
}

impl AccountDirectory for HighLevelAgency {
    fn auth(&self) -> &AuthScheme {
        &self.auth
    }

    fn credential_key(&self) -> &str {
        &self.credential_key
    }

    fn owner(&self) -> &str {
        &self.company_id
    }

    fn relist_interval(&self) -> Duration {
        self.relist_interval
    }

    fn quota(&self) -> Option<RateQuota> {
        self.quota
    }

    fn page_request(&self, skip: u64) -> Result<RequestSpec, ProviderError> {
        let mut url = self.installed_url.clone();
        url.query_pairs_mut()
            .append_pair("companyId", &self.company_id)
            .append_pair("appId", &self.app_id)
            .append_pair("isInstalled", "true")
            .append_pair("skip", &skip.to_string())
            .append_pair("limit", &PAGE_LIMIT.to_string());
        Ok(RequestSpec::get(url, "installed_locations")
            .header("Version", OAUTH_API_VERSION)
            .header("Accept", "application/json"))
    }

    fn parse_page(
        &self,
        skip: u64,
        response: &HttpResponse,
    ) -> Result<DirectoryPage, ProviderError> {
        parse_installed(skip, &response.body)
    }

    fn max_accounts(&self) -> usize {
        MAX_LOCATIONS
    }

    fn account(&self, location: &str, issuer: Arc<Authenticator>) -> ProviderSetup {
        ProviderSetup {
            provider: Arc::new(
                HighLevel::new(
                    location.to_owned(),
                    self.search_url.clone(),
                    self.page_size,
                    self.api_version.clone(),
                )
                .with_webhooks(Some(self.webhooks.clone())),
            ),
            auth: AuthScheme::Minted(MintedToken {
                issuer,
                mint_url: self.mint_url.clone(),
                form: vec![
                    ("companyId".to_owned(), self.company_id.clone()),
                    ("locationId".to_owned(), location.to_owned()),
                ],
                headers: vec![("Version", OAUTH_API_VERSION.to_owned())],
            }),
            credential_key: format!("{}/{location}", self.credential_key),
            // HighLevel limits per app per location: the same scope as a location whose
            // own installation's token is configured.
            budget_key: format!("highlevel/app/{}/{location}", self.client_id),
            name_suffix: Some(location.to_owned()),
            defaults: super::defaults(),
        }
    }
}

/// Reads one page of `/oauth/installedLocations`. Every id is checked (non-empty, short,
/// letters, digits, `-` and `_` only: it becomes part of a source name and a URL); an
/// entry that says it is not installed is left out even though the request asked for
/// installed ones only. A page is the last when it is short or `count` says so.
fn parse_installed(skip: u64, body: &[u8]) -> Result<DirectoryPage, ProviderError> {
    let page: InstalledLocations = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("installed locations: {e}")))?;
    let entries = page.locations.ok_or_else(|| {
        ProviderError::Malformed("installed locations: no `locations` array".to_owned())
    })?;
    if u64::try_from(entries.len()).is_ok_and(|n| n > PAGE_LIMIT) {
        return Err(ProviderError::Malformed(format!(
            "installed locations: {} entries on a page of at most {PAGE_LIMIT}",
            entries.len()
        )));
    }
    let mut accounts = Vec::with_capacity(entries.len());
    for entry in &entries {
        let Value::Object(entry) = entry else {
            return Err(ProviderError::Malformed(
                "installed locations: an entry is not an object".to_owned(),
            ));
        };
        if entry.get("isInstalled") == Some(&Value::Bool(false)) {
            continue;
        }
        let id = match entry.get("_id") {
            Some(Value::String(id)) if is_location_id(id) => id.clone(),
            _ => {
                return Err(ProviderError::Malformed(
                    "installed locations: an entry's `_id` is not a location id".to_owned(),
                ));
            }
        };
        accounts.push(id);
    }
    let listed = u64::try_from(entries.len()).unwrap_or(u64::MAX);
    let seen = skip.saturating_add(listed);
    let below_count = match crate::provider::lenient_count(page.count.as_ref()) {
        Some(count) => seen < count,
        None => true,
    };
    Ok(DirectoryPage {
        accounts,
        next: (listed == PAGE_LIMIT && below_count).then_some(seen),
    })
}

fn is_location_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LOCATION_ID_BYTES
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Installed ids are read; a page is the last when short or when `count` is reached.
    #[test]
    fn a_page_lists_installed_ids_and_knows_whether_more_follow() {
        let body = br#"{"locations":[{"_id":"locA","name":"A","address":"x","isInstalled":true},
            {"_id":"locB","name":"B","address":"y"},{"_id":"locC","isInstalled":false}],"count":3}"#;
        let page = parse_installed(0, body).unwrap();
        assert_eq!(page.accounts, ["locA", "locB"]);
        assert_eq!(page.next, None);

        let full: Vec<Value> = (0..PAGE_LIMIT)
            .map(|i| serde_json::json!({ "_id": format!("loc{i}") }))
            .collect();
        let body = serde_json::json!({ "locations": full, "count": 250 }).to_string();
        let next = |skip| parse_installed(skip, body.as_bytes()).unwrap().next;
        assert_eq!(next(0), Some(100));
        assert_eq!(next(100), Some(200));
        assert_eq!(next(200), None);
        let body = serde_json::json!({ "locations": full }).to_string();
        assert_eq!(parse_installed(0, body.as_bytes()).unwrap().next, Some(100));
    }

    /// Hostile listings are refused whole: ids that could not be a location, oversized
    /// pages, other shapes.
    #[test]
    fn hostile_listings_are_refused() {
        let too_many: Vec<Value> = (0..=PAGE_LIMIT)
            .map(|i| serde_json::json!({ "_id": format!("loc{i}") }))
            .collect();
        let too_many = serde_json::json!({ "locations": too_many }).to_string();
        let long = format!(r#"{{"locations":[{{"_id":"{}"}}]}}"#, "a".repeat(65));
        for body in [
            r#"{"locations":[{"_id":"a/b"}]}"#,
            r#"{"locations":[{"_id":""}]}"#,
            r#"{"locations":[{"_id":7}]}"#,
            r#"{"locations":[{"name":"no id"}]}"#,
            r#"{"locations":["locA"]}"#,
            r#"{"count":1}"#,
            r#"[]"#,
            long.as_str(),
            too_many.as_str(),
        ] {
            assert!(parse_installed(0, body.as_bytes()).is_err(), "{body}");
        }
    }
}
