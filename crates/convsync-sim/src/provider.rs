//! Which of the four simulated platforms a request, account or conversation belongs to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the four messaging platforms the simulator imitates.
///
/// The wire names (`d365`, `spruce`, `sinch`, `highlevel`) are used in the control API,
/// in truth records and in request counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Microsoft Dynamics 365 Contact Center messaging API (custom channel).
    D365,
    /// Spruce Health public API v1.
    Spruce,
    /// Sinch Conversation API v1.
    Sinch,
    /// HighLevel (LeadConnector) API v2.
    HighLevel,
}

impl Provider {
    /// All providers, in a fixed order (used for deterministic iteration).
    pub const ALL: [Provider; 4] = [
        Provider::D365,
        Provider::Spruce,
        Provider::Sinch,
        Provider::HighLevel,
    ];

    /// The lower-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::D365 => "d365",
            Provider::Spruce => "spruce",
            Provider::Sinch => "sinch",
            Provider::HighLevel => "highlevel",
        }
    }

    /// Resolution of the timestamps the real API shows, in microseconds.
    ///
    /// The simulator stamps events at this resolution so that the truth it reports is
    /// exactly what a client can observe (D365 shows .NET ticks, which we model at 1 µs;
    /// the others show milliseconds).
    pub(crate) fn precision_us(self) -> i64 {
        match self {
            Provider::D365 => 1,
            Provider::Spruce | Provider::Sinch | Provider::HighLevel => 1_000,
        }
    }

    /// Truncate a microsecond timestamp to this provider's resolution.
    pub(crate) fn truncate_us(self, us: i64) -> i64 {
        us.div_euclid(self.precision_us()) * self.precision_us()
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unrecognised provider name.
#[derive(Debug, thiserror::Error)]
#[error("unknown provider {0:?} (expected d365, spruce, sinch or highlevel)")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "d365" => Ok(Provider::D365),
            "spruce" => Ok(Provider::Spruce),
            "sinch" => Ok(Provider::Sinch),
            "highlevel" => Ok(Provider::HighLevel),
            _ => Err(UnknownProvider(s.to_owned())),
        }
    }
}

/// A provider, or all of them: the target of a fault setting or a token revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ProviderSelector {
    /// Every provider.
    All,
    /// Just this one.
    One(Provider),
}

impl ProviderSelector {
    /// The providers this selector designates.
    pub fn providers(self) -> Vec<Provider> {
        match self {
            ProviderSelector::All => Provider::ALL.to_vec(),
            ProviderSelector::One(p) => vec![p],
        }
    }
}

impl From<Provider> for ProviderSelector {
    fn from(p: Provider) -> Self {
        ProviderSelector::One(p)
    }
}

impl From<ProviderSelector> for String {
    fn from(s: ProviderSelector) -> String {
        match s {
            ProviderSelector::All => "all".to_owned(),
            ProviderSelector::One(p) => p.as_str().to_owned(),
        }
    }
}

impl TryFrom<String> for ProviderSelector {
    type Error = UnknownProvider;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for ProviderSelector {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("all") {
            Ok(ProviderSelector::All)
        } else {
            s.parse().map(ProviderSelector::One)
        }
    }
}
