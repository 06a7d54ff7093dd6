//! How convsync reaches a database *server* (PostgreSQL; a SQLite file has no connection to
//! secure): whether the connection is encrypted and how the server is checked. The
//! password is a [`crate::secret::Secret`] in [`super::StoreSettings`], resolved from its
//! reference at start-up like every other secret.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[database] tls_mode`: libpq's `sslmode` values, with libpq's default (`prefer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP only.
    Disable,
    /// Plain TCP first, TLS if the server insists.
    Allow,
    /// TLS if the server offers it, plain TCP otherwise; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked (encryption against passive
    /// listeners only).
    Require,
    /// TLS with a certificate signed by a trusted CA, for any host name.
    VerifyCa,
    /// TLS with a certificate signed by a trusted CA and issued for the host connected to.
    VerifyFull,
}

impl TlsMode {
    /// Whether the server's certificate is checked against a CA (`tls_root_cert`, or the
    /// built-in public roots), the only modes that stop a man in the middle.
    pub fn verifies_server(self) -> bool {
        matches!(self, TlsMode::VerifyCa | TlsMode::VerifyFull)
    }

    /// The mode as the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS side of a server connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Whether to encrypt, and what to check.
    pub mode: TlsMode,
    /// The CA certificate(s) (PEM) that signed the server's certificate; `None` trusts the
    /// built-in public roots (or libpq's `PGSSLROOTCERT`).
    pub root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// What a connection error says about how it was attempted (no secret in it).
    pub fn describe(&self) -> String {
        match &self.root_cert {
            Some(cert) => format!("tls_mode {}, tls_root_cert {}", self.mode, cert.display()),
            None => format!("tls_mode {}", self.mode),
        }
    }
}
