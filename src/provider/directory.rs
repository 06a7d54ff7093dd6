//! Account directories: a source entry whose accounts are not listed in the configuration
//! but found at the provider (a HighLevel agency's locations where its app is installed).
//!
//! Like the rest of a provider, a directory is pure translation: it builds the listing's
//! page requests and reads their answers, and builds the adapter of each account it lists.
//! The engine (`crate::sync::discovery`) sends the requests with the directory's own
//! credential, bounds the walk, and turns each account into a source `entry/account`.

use std::sync::Arc;

use crate::http::{
    AuthScheme, Authenticator, HttpResponse, RateQuota, RequestSpec, ResponsePolicy,
};
use crate::provider::{ProviderError, ProviderSetup};

/// One page of a directory's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryPage {
    /// The accounts on the page, as listed (checked ids).
    pub accounts: Vec<String>,
    /// Where the next page starts (`skip`), when a further page may hold more; it must
    /// be beyond this page's start.
    pub next: Option<u64>,
}

/// A source entry that finds its accounts at the provider.
pub trait AccountDirectory: ResponsePolicy + Send + Sync + std::fmt::Debug {
    /// The directory's own credential (the agency's), used for the listing and to mint
    /// each account's token.
    fn auth(&self) -> &AuthScheme;

    /// Entries with equal keys share one token cache (no secret in it).
    fn credential_key(&self) -> &str;

    /// Who owns the directory at the provider (HighLevel's `companyId`): install and
    /// uninstall events naming another owner are not this directory's.
    fn owner(&self) -> &str;

    /// How often the accounts are listed again while running (`sync::relist`).
    fn relist_interval(&self) -> std::time::Duration;

    /// The listing's request quota (the provider limits the directory's resource like an
    /// account's).
    fn quota(&self) -> Option<RateQuota>;

    /// The request for the page that starts after `skip` accounts.
    fn page_request(&self, skip: u64) -> Result<RequestSpec, ProviderError>;

    /// Reads one page of the listing. `skip` is where it starts.
    fn parse_page(
        &self,
        skip: u64,
        response: &HttpResponse,
    ) -> Result<DirectoryPage, ProviderError>;

    /// The most accounts a listing may yield; a provider that lists more is refused, so a
    /// broken listing cannot start thousands of sources.
    fn max_accounts(&self) -> usize;

    /// The adapter of one listed account, authenticating with a token minted by `issuer`
    /// (the authenticator built from [`AccountDirectory::auth`], shared by all accounts).
    fn account(&self, account: &str, issuer: Arc<Authenticator>) -> ProviderSetup;
}
