//! The provider registry: one line per provider in `for_each_provider!`. Everything that
//! enumerates the providers — [`ProviderKind`], the `[sources.<name>]` tables of a
//! `[[sources]]` entry (`with_provider_tables!`), setup and defaults — is generated from
//! it, so that `config.rs` names no provider and adding one is a folder plus a line here.
//!
//! Each provider folder follows one template: `pub fn setup(&Table, &SetupContext)`,
//! `pub(crate) fn defaults()` and `pub(crate) fn account_suffixes(&Table)`, with `Table`
//! its `[sources.<name>]` settings type.

use super::{ProviderDefaults, ProviderSetup, SetupContext};
use crate::config_error::ConfigError;

/// Calls `$then!` with the registry, after any tokens given in brackets: per provider, its
/// name (the `provider = "…"` value, the `[sources.<name>]` table and its module), its
/// [`ProviderKind`] variant with the table's type, its label and its description.
macro_rules! for_each_provider {
    ($then:path $(, [$($args:tt)*])?) => {
        $then! {
            [$($($args)*)?]
            d365 => D365(D365Config), "Dynamics 365",
                "Dynamics 365 Contact Center, custom-channel messaging API.";
            spruce => Spruce(SpruceConfig), "Spruce", "Spruce Health public API.";
            sinch => Sinch(SinchConfig), "Sinch", "Sinch Conversation API.";
            highlevel => Highlevel(HighLevelConfig), "HighLevel",
                "HighLevel (LeadConnector) conversations search.";
        }
    };
}
pub(crate) use for_each_provider;

macro_rules! define_registry {
    ([] $($name:ident => $kind:ident($table:ident), $label:literal, $doc:literal;)*) => {
        /// The platforms convsync mirrors.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum ProviderKind {
            $(#[doc = $doc] $kind,)*
        }

        impl ProviderKind {
            /// Every provider, in registry order.
            pub const ALL: &[ProviderKind] = &[$(ProviderKind::$kind),*];

            /// The name used in config files and in the mirror's `provider` column.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ProviderKind::$kind => stringify!($name),)*
                }
            }

            /// The provider's defaults, without any account settings (for commands that
            /// read the database only and must not resolve secrets).
            pub fn defaults(self) -> ProviderDefaults {
                match self {
                    $(ProviderKind::$kind => super::$name::defaults(),)*
                }
            }
        }

        /// One provider's `[sources.<name>]` table, borrowed from a `[[sources]]` entry.
        #[derive(Debug, Clone, Copy)]
        pub enum ProviderTable<'a> {
            $(#[doc = concat!($label, " settings.")] $kind(&'a super::$name::$table),)*
        }

        impl<'a> ProviderTable<'a> {
            /// Whose table it is.
            pub fn kind(&self) -> ProviderKind {
                match self {
                    $(ProviderTable::$kind(_) => ProviderKind::$kind,)*
                }
            }

            /// Validates the settings, resolves the secrets and builds the adapters (one per
            /// account the table lists).
            pub fn setup(&self, ctx: &SetupContext<'_>) -> Result<Vec<ProviderSetup>, ConfigError> {
                match self {
                    $(ProviderTable::$kind(table) => super::$name::setup(table, ctx),)*
                }
            }

            /// The name suffix of each account the table lists (`None`: the entry is one
            /// account named as written), read without resolving any secret.
            pub fn account_suffixes(self) -> Vec<Option<&'a str>> {
                match self {
                    $(ProviderTable::$kind(table) => super::$name::account_suffixes(table),)*
                }
            }
        }
    };
}
for_each_provider!(define_registry);

impl ProviderTable<'_> {
    /// The directory that finds the entry's accounts at the provider, when the table
    /// configures one instead of listing accounts (only a HighLevel agency does).
    pub fn directory(
        &self,
        ctx: &SetupContext<'_>,
        entry: &str,
    ) -> Result<Option<std::sync::Arc<dyn super::directory::AccountDirectory>>, ConfigError> {
        match self {
            ProviderTable::Highlevel(table) => super::highlevel::directory(table, ctx, entry),
            _ => Ok(None),
        }
    }
}

/// Ends a `[[sources]]` struct with one optional field per provider (its
/// `[sources.<name>]` table) and gives it `provider_tables()`, listing those present in
/// registry order. `config.rs` wraps its `SourceConfig` in it.
macro_rules! with_provider_tables {
    ($($item:tt)*) => {
        $crate::provider::registry::for_each_provider!(
            $crate::provider::registry::provider_table_fields, [$($item)*]
        );
    };
}
pub(crate) use with_provider_tables;

/// The expansion of [`with_provider_tables`], given the registry.
macro_rules! provider_table_fields {
    (
        [$(#[$meta:meta])* pub struct $source:ident { $($body:tt)* }]
        $($name:ident => $kind:ident($table:ident), $label:literal, $doc:literal;)*
    ) => {
        $(#[$meta])*
        pub struct $source {
            $($body)*
            $(
                #[doc = concat!($label, " settings (`provider = \"", stringify!($name), "\"`).")]
                #[serde(default)]
                pub $name: Option<$crate::provider::$name::$table>,
            )*
        }

        impl $source {
            /// The provider tables this entry has, in registry order.
            pub fn provider_tables(&self) -> Vec<$crate::provider::ProviderTable<'_>> {
                let mut tables = Vec::new();
                $(
                    if let Some(table) = &self.$name {
                        tables.push($crate::provider::ProviderTable::$kind(table));
                    }
                )*
                tables
            }
        }
    };
}
pub(crate) use provider_table_fields;
