//! Secrets: how the configuration points at them and the wrapper that keeps them out of
//! logs, `Debug` output and error messages.
//!
//! A secret is never written inline in a config file: it is a reference to an environment
//! variable, a file (Docker and Kubernetes secrets), or a systemd credential
//! (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`).
//!
//! Every [`Secret`] is also remembered by [`redact`], which scrubs it from any provider
//! text before that text is logged, stored or served.

pub mod redact;

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Where a secret lives. Deserialised from `{ env = "NAME" }`, `{ file = "/path" }` or
/// `{ credential = "name" }`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum SecretRef {
    /// An environment variable holding the secret.
    Env {
        /// The variable's name.
        env: String,
    },
    /// A file holding the secret (surrounding whitespace is trimmed).
    File {
        /// The file's path.
        file: PathBuf,
    },
    /// A systemd credential: a file of this name in `$CREDENTIALS_DIRECTORY`.
    Credential {
        /// The credential's name as given to `LoadCredential=`.
        credential: String,
    },
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.describe())
    }
}

/// Why a secret could not be read. Names where it was looked for, never its value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or empty.
    #[error("environment variable {0} is not set or empty")]
    MissingEnv(String),
    /// The file cannot be read.
    #[error("cannot read secret file: {}", crate::file_access::describe(.path, .source))]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists but holds nothing.
    #[error("secret file {0} is empty")]
    EmptyFile(PathBuf),
    /// `{ credential = ... }` used outside systemd.
    #[error(
        "credential {0:?} requested but $CREDENTIALS_DIRECTORY is not set (not running under systemd with LoadCredential=?)"
    )]
    NoCredentialsDirectory(String),
}

impl SecretRef {
    /// A description safe to print: where the secret comes from.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env { env } => format!("env:{env}"),
            SecretRef::File { file } => format!("file:{}", file.display()),
            SecretRef::Credential { credential } => format!("credential:{credential}"),
        }
    }

    /// Reads the secret now. Called once at start-up so that a missing secret fails the
    /// start, not the first poll.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env { env } => match std::env::var(env) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::configured(v.trim().to_owned())),
                _ => Err(SecretError::MissingEnv(env.clone())),
            },
            SecretRef::File { file } => read_secret_file(file),
            SecretRef::Credential { credential } => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory(credential.clone()))?;
                read_secret_file(&Path::new(&dir).join(credential))
            }
        }
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SecretError::EmptyFile(path.to_owned()));
    }
    Ok(Secret::configured(trimmed.to_owned()))
}

/// A resolved secret value. `Debug` and `Display` print `[redacted]`; the value is reachable
/// only through [`Secret::expose`], which makes every use visible in review.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value issued at run time (an access or refresh token) and remembers it for
    /// redaction among the newest issued values.
    pub fn new(value: String) -> Self {
        redact::remember(&value, redact::Lifetime::Issued);
        Secret(SecretString::from(value))
    }

    /// Wraps a value from the configuration (a client secret, a static token), remembered
    /// for redaction for the life of the process.
    pub fn configured(value: String) -> Self {
        redact::remember(&value, redact::Lifetime::Configured);
        Secret(SecretString::from(value))
    }

    /// The value, for building a request.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A stable, non-reversible fingerprint, used to share one rate limiter or token cache
    /// between sources that use the same credential without keeping the value as a key.
    pub fn fingerprint(&self) -> String {
        let hash = blake3::hash(self.expose().as_bytes());
        hash.to_hex()[..16].to_owned()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2-very-secret");
        assert!(!s.fingerprint().contains("hunter2"));
    }

    #[test]
    fn file_secrets_are_trimmed_and_empty_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        let r = SecretRef::File { file: path.clone() };
        assert_eq!(r.resolve().unwrap().expose(), "abc");
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(r.resolve(), Err(SecretError::EmptyFile(_))));
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let r = SecretRef::File {
            file: "/nonexistent/convsync-secret".into(),
        };
        let msg = r.resolve().unwrap_err().to_string();
        assert!(msg.contains("/nonexistent/convsync-secret"), "{msg}");
    }
}
