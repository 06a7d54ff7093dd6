//! Issued access tokens and single-use refresh tokens.
//!
//! Expired tokens are remembered (up to a bound) so a client can be told "expired"
//! rather than "unknown", as real providers do in `WWW-Authenticate`; spent refresh tokens
//! too, so that a client presenting one again is told apart from one presenting garbage.

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::ids::base62;

/// Why a presented token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenRejection {
    #[error("the access token is invalid")]
    Unknown,
    #[error("the access token expired")]
    Expired,
}

#[derive(Clone, Copy, Debug)]
struct Issued {
    account: usize,
    expires_at_us: Option<i64>,
}

/// Bound on remembered tokens per provider (oldest forgotten first).
const MAX_REMEMBERED: usize = 100_000;

/// Token registry of one provider.
#[derive(Debug)]
pub(crate) struct TokenStore {
    access: HashMap<String, Issued>,
    order: VecDeque<String>,
    refresh: HashMap<String, usize>,
    /// Refresh tokens already spent, with their account (forgotten in bulk past the bound).
    spent: HashMap<String, usize>,
    rng: StdRng,
}

/// What spending a refresh token found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Valid: spent now, for this account.
    Spent(usize),
    /// Spent before (rotated away), by this account.
    AlreadySpent(usize),
    /// Never issued (or forgotten).
    Unknown,
}

impl TokenStore {
    pub(crate) fn new(seed: u64) -> Self {
        TokenStore {
            access: HashMap::new(),
            order: VecDeque::new(),
            refresh: HashMap::new(),
            spent: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A fresh random token string with a recognisable prefix.
    pub(crate) fn random_string(&mut self, prefix: &str) -> String {
        let a: u64 = self.rng.random();
        let b: u64 = self.rng.random();
        let c: u64 = self.rng.random();
        format!(
            "{prefix}{}{}{}",
            base62(a, 11),
            base62(b, 11),
            base62(c, 11)
        )
    }

    /// Issue an access token for `account`, valid for `ttl_us` (None = forever).
    pub(crate) fn issue(
        &mut self,
        prefix: &str,
        account: usize,
        now_us: i64,
        ttl_us: Option<i64>,
    ) -> String {
        let token = self.random_string(prefix);
        self.remember(
            token.clone(),
            Issued {
                account,
                expires_at_us: ttl_us.map(|ttl| now_us.saturating_add(ttl)),
            },
        );
        token
    }

    /// Register a token that never expires (static API keys, private integration tokens).
    pub(crate) fn register_static(&mut self, token: &str, account: usize) {
        self.access.insert(
            token.to_owned(),
            Issued {
                account,
                expires_at_us: None,
            },
        );
    }

    fn remember(&mut self, token: String, issued: Issued) {
        if self.order.len() >= MAX_REMEMBERED {
            let oldest = self.order.pop_front();
            if let Some(old) = oldest {
                self.access.remove(&old);
            }
        }
        self.order.push_back(token.clone());
        self.access.insert(token, issued);
    }

    /// The account a bearer token belongs to.
    pub(crate) fn validate(&self, token: &str, now_us: i64) -> Result<usize, TokenRejection> {
        let issued = self.access.get(token).ok_or(TokenRejection::Unknown)?;
        match issued.expires_at_us {
            Some(at) if now_us >= at => Err(TokenRejection::Expired),
            _ => Ok(issued.account),
        }
    }

    /// Forget every issued (non-static) access token.
    pub(crate) fn revoke_issued(&mut self) {
        for token in self.order.drain(..) {
            self.access.remove(&token);
        }
    }

    /// Register a refresh token (usable once).
    pub(crate) fn add_refresh(&mut self, token: String, account: usize) {
        self.refresh.insert(token, account);
    }

    /// The account an unspent refresh token belongs to.
    pub(crate) fn refresh_owner(&self, token: &str) -> Option<usize> {
        self.refresh.get(token).copied()
    }

    /// Spend a refresh token: it is valid once.
    pub(crate) fn spend_refresh(&mut self, token: &str) -> Spend {
        if let Some(account) = self.refresh.remove(token) {
            if self.spent.len() >= MAX_REMEMBERED {
                self.spent.clear();
            }
            self.spent.insert(token.to_owned(), account);
            return Spend::Spent(account);
        }
        match self.spent.get(token) {
            Some(&account) => Spend::AlreadySpent(account),
            None => Spend::Unknown,
        }
    }
}
