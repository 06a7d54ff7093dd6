//! The simulated accounts and the credentials a client needs to reach them.
//!
//! Credentials are derived from the seed, so a demo restarted with the same seed keeps
//! working with the configuration written for the previous run (except HighLevel
//! refresh tokens, which rotate on use).

use serde::{Deserialize, Serialize};

use super::ids::{base62, crockford, guid, hash_all};
use super::options::SimOptions;
use super::platform::Platform;

/// A D365 custom messaging channel and the Entra app registration that can read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct D365Account {
    /// Key used by truth/mutation calls (equals `channel_id`).
    pub account: String,
    /// Entra tenant id (path segment of the token URL).
    pub tenant_id: String,
    /// App registration (client) id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// The `scope` the token request must carry.
    pub scope: String,
    /// Dataverse organization id (`organization-id` header).
    pub organization_id: String,
    /// Custom channel id (`channel-id` header).
    pub channel_id: String,
    /// Token the channel's webhook calls carry in `x-ms-token` (config `webhook_token`).
    #[serde(default)]
    pub webhook_token: String,
}

/// A Spruce organization with its static API token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpruceAccount {
    /// Key used by truth/mutation calls (equals `organization_id`).
    pub account: String,
    /// Organization entity id.
    pub organization_id: String,
    /// Bearer token (never expires; revocation does not touch it).
    pub api_token: String,
    /// The organization's webhook endpoint (`wde_…`), whose delivery log is listable.
    #[serde(default)]
    pub webhook_endpoint_id: String,
    /// The endpoint's signing secret, as `CreateWebhookEndpoint` returns it once
    /// (config `webhook_secret`).
    #[serde(default)]
    pub webhook_signing_secret: String,
}

/// A Sinch project with one CONVERSATION-mode app and an access key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinchAccount {
    /// Key used by truth/mutation calls (equals `app_id`).
    pub account: String,
    /// Project id (path segment).
    pub project_id: String,
    /// The conversation-mode app holding the conversations.
    pub app_id: String,
    /// Access key id (Basic user name at the token endpoint).
    pub key_id: String,
    /// Access key secret.
    pub key_secret: String,
    /// A DISPATCH-mode app of the same project (no conversations), when enabled.
    pub dispatch_app_id: Option<String>,
    /// The secret of the app's webhook (config `webhook_secret`).
    #[serde(default)]
    pub webhook_secret: String,
}

/// A HighLevel location (sub-account) with an installed marketplace app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighLevelLocation {
    /// Key used by truth/mutation calls (equals `location_id`).
    pub account: String,
    /// Location id (`locationId` query parameter).
    pub location_id: String,
    /// Agency (company) id.
    pub company_id: String,
    /// Marketplace app client id (shared by all locations).
    pub client_id: String,
    /// Marketplace app client secret.
    pub client_secret: String,
    /// Initial refresh token (single use: each refresh returns a new one).
    pub refresh_token: String,
    /// Private Integration Token of the location (static bearer token).
    pub private_integration_token: String,
    /// Id of the user who installed the app.
    pub user_id: String,
}

/// The agency (company) that owns the HighLevel locations, with the app's agency-level
/// installation: its refresh token mints location tokens (`POST /oauth/locationToken`) and
/// lists the installed locations (`GET /oauth/installedLocations`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HighLevelAgency {
    /// Agency (company) id.
    pub company_id: String,
    /// The marketplace app's id (its client id up to the first `-`).
    pub app_id: String,
    /// Initial refresh token of the agency-level installation (`user_type=Company`; single
    /// use like a location's).
    pub refresh_token: String,
}

/// Every simulated account, per provider.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimAccounts {
    /// D365 channels.
    pub d365: Vec<D365Account>,
    /// Spruce organizations.
    pub spruce: Vec<SpruceAccount>,
    /// Sinch projects/apps.
    pub sinch: Vec<SinchAccount>,
    /// HighLevel locations.
    pub highlevel: Vec<HighLevelLocation>,
    /// The agency owning the HighLevel locations (when there are any).
    #[serde(default)]
    pub highlevel_agency: Option<HighLevelAgency>,
}

impl SimAccounts {
    /// Derive the accounts of a run from its options.
    pub(crate) fn generate(options: &SimOptions) -> SimAccounts {
        let seed = options.seed;
        let h = |p: Platform, i: u32, what: u64| {
            hash_all(&[seed, p.index() as u64, u64::from(i), what])
        };
        let g = |p: Platform, i: u32, what: u64| {
            guid((u128::from(h(p, i, what)) << 64) | u128::from(h(p, i, what + 1000)))
        };
        let ulid = |p: Platform, i: u32, what: u64| {
            crockford(
                (u128::from(h(p, i, what)) << 64) | u128::from(h(p, i, what + 1000)),
                26,
            )
        };
        let secret = |p: Platform, i: u32, what: u64| {
            format!(
                "{}{}{}",
                base62(h(p, i, what), 11),
                base62(h(p, i, what + 1), 11),
                base62(h(p, i, what + 2), 10)
            )
        };
        let hl_client = format!(
            "{}-{}",
            base62(h(Platform::HighLevel, 0, 90), 11).to_lowercase(),
            base62(h(Platform::HighLevel, 0, 91), 8).to_lowercase()
        );
        let hl_secret = guid(
            (u128::from(h(Platform::HighLevel, 0, 92)) << 64)
                | u128::from(h(Platform::HighLevel, 0, 93)),
        );
        SimAccounts {
            d365: (0..options.d365_accounts)
                .map(|i| {
                    let org = g(Platform::D365, i, 1);
                    let channel = g(Platform::D365, i, 2);
                    D365Account {
                        account: channel.clone(),
                        tenant_id: g(Platform::D365, i, 3),
                        client_id: g(Platform::D365, i, 4),
                        client_secret: secret(Platform::D365, i, 5),
                        scope: format!(
                            "https://{}-c.crm.dynamics.com/.default",
                            org.replace('-', "")
                        ),
                        organization_id: org,
                        channel_id: channel,
                        webhook_token: secret(Platform::D365, i, 20),
                    }
                })
                .collect(),
            spruce: (0..options.spruce_accounts)
                .map(|i| {
                    let org = format!(
                        "entity_{}",
                        crockford(u128::from(h(Platform::Spruce, i, 1)), 13)
                    );
                    SpruceAccount {
                        account: org.clone(),
                        organization_id: org,
                        api_token: format!("spr_{}", secret(Platform::Spruce, i, 2)),
                        webhook_endpoint_id: format!("wde_{}", ulid(Platform::Spruce, i, 20)),
                        webhook_signing_secret: secret(Platform::Spruce, i, 21),
                    }
                })
                .collect(),
            sinch: (0..options.sinch_accounts)
                .map(|i| {
                    let app = ulid(Platform::Sinch, i, 1);
                    SinchAccount {
                        account: app.clone(),
                        project_id: g(Platform::Sinch, i, 2),
                        app_id: app,
                        key_id: g(Platform::Sinch, i, 3),
                        key_secret: secret(Platform::Sinch, i, 4),
                        dispatch_app_id: options
                            .sinch_dispatch_app
                            .then(|| ulid(Platform::Sinch, i, 5)),
                        webhook_secret: secret(Platform::Sinch, i, 20),
                    }
                })
                .collect(),
            highlevel: (0..options.highlevel_locations)
                .map(|i| {
                    let location = base62(h(Platform::HighLevel, i, 1), 20);
                    HighLevelLocation {
                        account: location.clone(),
                        location_id: location,
                        company_id: base62(h(Platform::HighLevel, 0, 2), 20),
                        client_id: hl_client.clone(),
                        client_secret: hl_secret.clone(),
                        refresh_token: format!("rt_{}", secret(Platform::HighLevel, i, 3)),
                        private_integration_token: format!("pit-{}", g(Platform::HighLevel, i, 4)),
                        user_id: base62(h(Platform::HighLevel, 0, 5), 20),
                    }
                })
                .collect(),
            highlevel_agency: (options.highlevel_locations > 0).then(|| HighLevelAgency {
                company_id: base62(h(Platform::HighLevel, 0, 2), 20),
                app_id: hl_client.split('-').next().unwrap_or(&hl_client).to_owned(),
                refresh_token: format!("rt_agency_{}", secret(Platform::HighLevel, 0, 6)),
            }),
        }
    }

    /// Account keys of a provider, in account order.
    pub fn keys(&self, provider: Platform) -> Vec<String> {
        match provider {
            Platform::D365 => self.d365.iter().map(|a| a.account.clone()).collect(),
            Platform::Spruce => self.spruce.iter().map(|a| a.account.clone()).collect(),
            Platform::Sinch => self.sinch.iter().map(|a| a.account.clone()).collect(),
            Platform::HighLevel => self.highlevel.iter().map(|a| a.account.clone()).collect(),
        }
    }

    /// Position of an account key within its provider's accounts.
    pub(crate) fn position(&self, provider: Platform, account: &str) -> Option<usize> {
        self.keys(provider).iter().position(|k| k == account)
    }
}
