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
pub enum Platform {
    /// Microsoft Dynamics 365 Contact Center messaging API (custom channel).
    D365,
    /// Spruce Health public API v1.
    Spruce,
    /// Sinch Conversation API v1.
    Sinch,
    /// HighLevel (LeadConnector) API v2.
    HighLevel,
}

impl Platform {
    /// All providers, in a fixed order (used for deterministic iteration).
    pub const ALL: [Platform; 4] = [
        Platform::D365,
        Platform::Spruce,
        Platform::Sinch,
        Platform::HighLevel,
    ];

    /// The lower-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::D365 => "d365",
            Platform::Spruce => "spruce",
            Platform::Sinch => "sinch",
            Platform::HighLevel => "highlevel",
        }
    }

    /// Resolution of the timestamps the real API shows, in microseconds.
    ///
    /// The simulator stamps events at this resolution so that the truth it reports is
    /// exactly what a client can observe (D365 shows .NET ticks, which we model at 1 µs;
    /// the others show milliseconds).
    pub(crate) fn precision_us(self) -> i64 {
        match self {
            Platform::D365 => 1,
            Platform::Spruce | Platform::Sinch | Platform::HighLevel => 1_000,
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

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unrecognised provider name.
#[derive(Debug, thiserror::Error)]
#[error("unknown provider {0:?} (expected d365, spruce, sinch or highlevel)")]
pub struct UnknownPlatform(pub String);

impl FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "d365" => Ok(Platform::D365),
            "spruce" => Ok(Platform::Spruce),
            "sinch" => Ok(Platform::Sinch),
            "highlevel" => Ok(Platform::HighLevel),
            _ => Err(UnknownPlatform(s.to_owned())),
        }
    }
}

/// A provider, or all of them: the target of a fault setting or a token revocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PlatformSelector {
    /// Every provider.
    All,
    /// Just this one.
    One(Platform),
}

impl PlatformSelector {
    /// The providers this selector designates.
    pub fn providers(self) -> Vec<Platform> {
        match self {
            PlatformSelector::All => Platform::ALL.to_vec(),
            PlatformSelector::One(p) => vec![p],
        }
    }
}

impl From<Platform> for PlatformSelector {
    fn from(p: Platform) -> Self {
        PlatformSelector::One(p)
    }
}

impl From<PlatformSelector> for String {
    fn from(s: PlatformSelector) -> String {
        match s {
            PlatformSelector::All => "all".to_owned(),
            PlatformSelector::One(p) => p.as_str().to_owned(),
        }
    }
}

impl TryFrom<String> for PlatformSelector {
    type Error = UnknownPlatform;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for PlatformSelector {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("all") {
            Ok(PlatformSelector::All)
        } else {
            s.parse().map(PlatformSelector::One)
        }
    }
}
