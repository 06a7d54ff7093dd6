//! How convsync reaches a database *server* (PostgreSQL; a SQLite file has no connection to
//! secure): whether the connection is encrypted, how the server is checked and which
//! certificate this process shows a server that asks for one. The password is a
//! [`crate::secret::Secret`] in [`super::StoreSettings`], and so is the client
//! certificate's key, each resolved from its reference at start-up like every other secret.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

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
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Whether to encrypt, and what to check.
    pub mode: TlsMode,
    /// The CA certificate(s) (PEM) that signed the server's certificate; `None` trusts the
    /// built-in public roots (or libpq's `PGSSLROOTCERT`).
    pub root_cert: Option<PathBuf>,
    /// The certificate shown to a server that requires one (`clientcert=verify-full`).
    pub client: Option<ClientIdentity>,
}

/// A client certificate and its private key (`[database] tls_client_cert` and
/// `tls_client_key`).
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    /// The certificate (PEM), which is not secret: a path, read when connecting.
    pub cert: PathBuf,
    /// The private key (PEM), a secret like the password.
    pub key: Secret,
}

impl TlsSettings {
    /// What a connection error says about how it was attempted (no secret in it: the
    /// client certificate's path, never its key).
    pub fn describe(&self) -> String {
        let mut text = format!("tls_mode {}", self.mode);
        if let Some(cert) = &self.root_cert {
            text.push_str(&format!(", tls_root_cert {}", cert.display()));
        }
        if let Some(client) = &self.client {
            text.push_str(&format!(", tls_client_cert {}", client.cert.display()));
        }
        text
    }
}
