//! `convsync credentials set-refresh-token`: gives a source whose rotating refresh token
//! was refused (or lost with an answer that never arrived) a new one, after the app was
//! re-authorised. The token is read from a file or stdin — never from the command line,
//! where `ps` and shell history would show it.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::http::AuthScheme;
use crate::secret::Secret;
use crate::store::{Store, shown_url};

/// Refresh tokens are a few hundred bytes; anything far larger is the wrong file.
const MAX_TOKEN_BYTES: u64 = 16 * 1024;

/// What to do with stored credentials.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Store a new OAuth refresh token for a source (after re-authorising the app for its
    /// location), replacing the stored one and clearing any refusal. Reads the token from
    /// --file, or from stdin without it. Restart convsync afterwards.
    SetRefreshToken(SetRefreshToken),
}

/// `credentials set-refresh-token`.
#[derive(Debug, Args)]
pub struct SetRefreshToken {
    /// The source, as `convsync status` names it (e.g. `highlevel/ve9EPM428kjkvShlRW1KT`).
    #[arg(long, value_name = "NAME")]
    source: String,
    /// A file holding the token (default: read it from stdin).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

/// Runs a `credentials` command.
pub async fn run(command: CredentialsCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        CredentialsCommand::SetRefreshToken(args) => set_refresh_token(args, config).await,
    }
}

async fn set_refresh_token(args: SetRefreshToken, config: &Config) -> anyhow::Result<()> {
    let source = super::enabled_source(config, &args.source)?;
    let AuthScheme::RotatingRefresh(rr) = &source.setup.auth else {
        bail!(
            "source {} does not authenticate with a rotating OAuth refresh token; its \
             credential is set in the configuration",
            source.name
        );
    };
    let token = match &args.file {
        Some(path) => read_token(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            &path.display().to_string(),
        )?,
        None => read_token(std::io::stdin().lock(), "stdin")?,
    };
    let store = Store::open(&config.store)
        .await
        .with_context(|| format!("opening {}", shown_url(&config.store.url)))?;
    store
        .save_refresh_token(&rr.vault_key, &token)
        .await
        .context("storing the refresh token")?;
    store.close().await;
    println!(
        "{}: new refresh token stored (fingerprint {}); restart convsync so the source \
         starts again",
        source.name,
        &token.fingerprint()[..8]
    );
    Ok(())
}

/// One token from `input`: trimmed, non-empty, a single word of printable ASCII.
fn read_token(input: impl Read, shown: &str) -> anyhow::Result<Secret> {
    let mut text = String::new();
    input
        .take(MAX_TOKEN_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the refresh token from {shown}"))?;
    if text.len() as u64 > MAX_TOKEN_BYTES {
        bail!("{shown} holds more than {MAX_TOKEN_BYTES} bytes: that is not a refresh token");
    }
    let token = text.trim();
    if token.is_empty() {
        bail!("{shown} is empty: expected the new refresh token");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "{shown} does not hold a single refresh token (it contains spaces, line breaks or \
             non-ASCII characters)"
        );
    }
    Ok(Secret::new(token.to_owned()))
}

/// The rotating refresh-token schemes of `config`'s enabled sources, by source name (what
/// `status` needs to find each source's token in the vault).
pub fn rotating_refresh_by_source(
    config: &Config,
) -> std::collections::HashMap<String, crate::http::auth::RotatingRefresh> {
    config
        .sources
        .iter()
        .filter_map(|s| match &s.setup.auth {
            AuthScheme::RotatingRefresh(rr) => Some((s.name.clone(), rr.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_trimmed_and_garbage_refused() {
        let ok = read_token("  rt-new-token-1234\n".as_bytes(), "stdin").unwrap();
        assert_eq!(ok.expose(), "rt-new-token-1234");
        let empty = read_token("\n".as_bytes(), "stdin").unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
        let two = read_token("a b".as_bytes(), "f").unwrap_err();
        assert!(two.to_string().contains("single refresh token"), "{two}");
        let huge = vec![b'a'; 20_000];
        let big = read_token(&huge[..], "f").unwrap_err();
        assert!(big.to_string().contains("more than"), "{big}");
    }
}
