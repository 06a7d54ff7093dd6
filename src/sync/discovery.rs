//! Discovery: the sources of an entry that lists no accounts but finds them at the
//! provider (a HighLevel agency's installed locations), listed at start-up and
//! again periodically while running ([`Directory::list`]).
//!
//! The listing is sent with the directory's own credential and budget, page by page, and
//! distrusted: the page count is bounded, each page must start beyond the last, the ids
//! are deduplicated, and more accounts than the directory's maximum fail the start rather
//! than start that many tasks. Each account becomes a source `entry/account` whose token is
//! minted with the directory's credential, shared by all of them (one refresh token chain).

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{DirectorySettings, SourceSettings};
use crate::http::{
    ApiClient, Authenticator, HttpError, HttpSettings, RequestBudget, RequestTally, TokenVault,
};
use crate::provider::ProviderError;

/// Why an entry's accounts could not be listed. Holds no secret.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The listing request failed (after the client's retries).
    #[error("{entry}: listing its accounts failed")]
    Http {
        /// The entry.
        entry: String,
        /// Why.
        #[source]
        source: HttpError,
    },
    /// The provider's answer is not a listing.
    #[error("{entry}: the account listing is unreadable")]
    Provider {
        /// The entry.
        entry: String,
        /// Why.
        #[source]
        source: ProviderError,
    },
    /// The listing names more accounts than the directory runs, or never ends.
    #[error(
        "{entry}: the account listing names more than {max} accounts (or does not end); none is started"
    )]
    TooMany {
        /// The entry.
        entry: String,
        /// The directory's maximum.
        max: usize,
    },
    /// The shared HTTP client could not be built.
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A directory entry as the engine keeps it while running: its settings, the
/// authenticator that mints every account's token (one refresh token chain), and the
/// client that lists its accounts (for the periodic re-listing).
pub struct Directory {
    settings: DirectorySettings,
    issuer: Arc<Authenticator>,
    api: ApiClient,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("entry", &self.settings.entry)
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// The entry's settings.
    pub fn settings(&self) -> &DirectorySettings {
        &self.settings
    }

    /// The source of `account`, its token minted with the directory's credential.
    pub fn source(&self, account: &str) -> SourceSettings {
        self.settings.source(
            self.settings
                .directory
                .account(account, self.issuer.clone()),
        )
    }

    /// The name `account`'s source runs under.
    pub fn source_name(&self, account: &str) -> String {
        crate::config::expanded_name(&self.settings.entry, Some(account))
    }

    /// Every account the provider lists now (bounded like the start-up listing).
    pub async fn list(&self) -> Result<Vec<String>, DiscoveryError> {
        list_accounts(&self.api, &self.settings).await
    }
}

/// What the start-up listing found: one source per account, and the directories.
#[derive(Debug, Default)]
pub struct Discovered {
    /// One source per listed account, in listing order.
    pub sources: Vec<SourceSettings>,
    /// The directories, kept to add and retire accounts while running.
    pub directories: Vec<Arc<Directory>>,
}

/// Lists the accounts of every directory and returns one source per account, in listing
/// order. `vault` keeps each directory's rotating refresh token.
pub async fn discover_sources(
    http: &HttpSettings,
    vault: Arc<dyn TokenVault>,
    directories: &[DirectorySettings],
) -> Result<Discovered, DiscoveryError> {
    let mut discovered = Discovered::default();
    if directories.is_empty() {
        return Ok(discovered);
    }
    let client = crate::http::build_client(http).map_err(DiscoveryError::Client)?;
    for settings in directories {
        let directory = &settings.directory;
        let issuer = Arc::new(
            Authenticator::new(directory.auth().clone(), Some(vault.clone()))
                .with_max_response_bytes(http.max_response_bytes),
        );
        let api = ApiClient::new(
            client.clone(),
            issuer.clone(),
            Arc::new(RequestBudget::new(directory.quota())),
            http.clone(),
            Arc::new(RequestTally::default()),
        );
        let directory = Directory {
            settings: settings.clone(),
            issuer,
            api,
        };
        let accounts = directory.list().await?;
        tracing::info!(
            source = %settings.entry,
            accounts = accounts.len(),
            "listed the accounts where the app is installed; each runs as its own source"
        );
        discovered
            .sources
            .extend(accounts.iter().map(|account| directory.source(account)));
        discovered.directories.push(Arc::new(directory));
    }
    Ok(discovered)
}

/// Every account the directory lists, deduplicated, in listing order.
async fn list_accounts(
    api: &ApiClient,
    settings: &DirectorySettings,
) -> Result<Vec<String>, DiscoveryError> {
    let directory = &settings.directory;
    let entry = || settings.entry.clone();
    let max = directory.max_accounts();
    let too_many = || DiscoveryError::TooMany {
        entry: entry(),
        max,
    };
    let provider = |source| DiscoveryError::Provider {
        entry: entry(),
        source,
    };
    let mut accounts = Vec::new();
    let mut seen = HashSet::new();
    let mut skip = 0u64;
    // Every page but the last names at least one account or moves `skip` on: more pages
    // than accounts allowed means a listing that does not end.
    for _ in 0..=max {
        let spec = directory.page_request(skip).map_err(provider)?;
        let response = api
            .send(&spec, directory.as_ref())
            .await
            .map_err(|source| DiscoveryError::Http {
                entry: entry(),
                source,
            })?;
        let page = directory.parse_page(skip, &response).map_err(provider)?;
        for account in page.accounts {
            if seen.insert(account.clone()) {
                accounts.push(account);
            }
        }
        if accounts.len() > max {
            return Err(too_many());
        }
        match page.next {
            None => return Ok(accounts),
            Some(next) if next > skip => skip = next,
            Some(_) => {
                return Err(provider(ProviderError::Malformed(
                    "the account listing's next page does not start beyond this one".to_owned(),
                )));
            }
        }
    }
    Err(too_many())
}
