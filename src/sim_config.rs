//! A convsync configuration for a running simulator: every account of every provider as a
//! `[[sources]]` entry, with the secrets referenced the way a real deployment would (an
//! environment variable or a file), never inline. Used by `convsync simulate`'s banner, by
//! `convsync demo` and by process-level tests, so they cannot drift from the real config
//! format.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::provider::ProviderKind;
use convsync_sim::SimHandle;

/// Where the generated configuration points for secrets.
#[derive(Debug, Clone)]
pub enum SecretPlacement {
    /// `{ env = "SIM_..." }`; the caller exports the variables listed in
    /// [`GeneratedConfig::secrets`] (see [`GeneratedConfig::env_exports`]).
    Env,
    /// `{ file = "DIR/NAME" }`; the files are written (mode 0600) by
    /// [`GeneratedConfig::write_secret_files`].
    Files(PathBuf),
}

/// Per-source settings the generator applies to every source.
#[derive(Debug, Clone, Default)]
pub struct SourceTuning {
    /// `poll_interval` of every source; D365 sources poll at their 60 s minimum when this
    /// is shorter (instead of their 300 s default, so a short run sees them work).
    pub poll_interval: Option<String>,
    /// `sweep_interval` for every source.
    pub sweep_interval: Option<String>,
    /// Use HighLevel's OAuth refresh-token flow instead of private integration tokens.
    pub highlevel_oauth: bool,
    /// Give every source the key its simulated webhooks are signed with (`webhook_secret`,
    /// `webhook_token` or, for a 2025-09 D365 tenant, `webhook_entra`, `webhook_public_key`),
    /// so a daemon with `[webhooks] listen` takes the events the simulator sends to
    /// `--webhook-base`. D365 sources then read their messages too (`messages = true`):
    /// D365 events carry message facts, and a poll that never reads them would leave a row
    /// whose message columns only events ever filled.
    pub webhooks: Option<WebhookKeys>,
}

/// Where the HighLevel source finds the public half of the simulator's TEST-ONLY signing
/// key (`webhook_public_key` is a path, not a secret reference).
#[derive(Debug, Clone)]
pub struct WebhookKeys {
    /// A PEM file holding [`convsync_sim::HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM`]; see
    /// [`write_highlevel_public_key`].
    pub highlevel_public_key: PathBuf,
}

/// Writes the simulator's TEST-ONLY HighLevel public key to `path` (for
/// [`WebhookKeys::highlevel_public_key`]).
pub fn write_highlevel_public_key(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, convsync_sim::HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM)
}

/// A generated configuration and the secrets it refers to.
#[derive(Debug, Clone)]
pub struct GeneratedConfig {
    /// The TOML text.
    pub toml: String,
    /// (variable or file name, value) for every secret referenced.
    pub secrets: Vec<(String, String)>,
    placement: SecretPlacement,
}

impl GeneratedConfig {
    /// `export NAME='value'` lines, for [`SecretPlacement::Env`].
    pub fn env_exports(&self) -> String {
        self.secrets
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'\n"))
            .collect()
    }

    /// Writes the secret files (owner-only) for [`SecretPlacement::Files`].
    pub fn write_secret_files(&self) -> std::io::Result<()> {
        let SecretPlacement::Files(dir) = &self.placement else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        for (name, value) in &self.secrets {
            write_private(&dir.join(name), value)?;
        }
        Ok(())
    }
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write as _;
    options.open(path)?.write_all(value.as_bytes())
}

/// Renders `[[sources]]` for every simulated account (the caller adds `[database]` etc.).
pub fn convsync_sources(
    handle: &SimHandle,
    placement: &SecretPlacement,
    tuning: &SourceTuning,
) -> GeneratedConfig {
    let urls = handle.urls();
    let accounts = handle.accounts();
    let mut out = String::new();
    let mut secrets = Vec::new();
    let mut secret = |name: String, value: &str| -> String {
        let reference = match placement {
            SecretPlacement::Env => format!("{{ env = \"{name}\" }}"),
            SecretPlacement::Files(dir) => {
                format!("{{ file = \"{}\" }}", dir.join(&name).display())
            }
        };
        secrets.push((name, value.to_owned()));
        reference
    };
    let d365_interval = tuning.poll_interval.as_deref().map(|asked| {
        let min = ProviderKind::D365.defaults().min_poll_interval;
        let asked = humantime::parse_duration(asked).unwrap_or(min);
        humantime::format_duration(asked.max(min)).to_string()
    });
    let common = |out: &mut String, name: &str, provider: &str, interval: Option<&str>| {
        let _ = writeln!(
            out,
            "[[sources]]\nname = \"{name}\"\nprovider = \"{provider}\""
        );
        if let Some(p) = interval {
            let _ = writeln!(out, "poll_interval = \"{p}\"");
        }
        if let Some(s) = &tuning.sweep_interval {
            let _ = writeln!(out, "sweep_interval = \"{s}\"");
        }
    };
    for (i, a) in accounts.d365.iter().enumerate() {
        common(
            &mut out,
            &format!("d365-{i}"),
            "d365",
            d365_interval.as_deref(),
        );
        let reference = secret(format!("SIM_D365_CLIENT_SECRET_{i}"), &a.client_secret);
        let _ = writeln!(
            out,
            "[sources.d365]\nbase_url = \"{}\"\nlogin_url = \"{}\"\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = {reference}\norganization_id = \"{}\"\nchannel_id = \"{}\"\nscope = \"{}\"\n",
            urls.d365,
            urls.d365.as_str().trim_end_matches('/'),
            a.tenant_id,
            a.client_id,
            a.organization_id,
            a.channel_id,
            a.scope
        );
        if tuning.webhooks.is_some() {
            let _ = writeln!(out, "messages = true");
            if handle.d365_sends_entra_tokens() {
                // A 2025-09 tenant: Entra tokens of the channel's app, for its client id.
                let _ = writeln!(
                    out,
                    "webhook_entra = {{ tenant_id = \"{}\", audiences = [\"{}\"], allowed_client_ids = [\"{}\"] }}\n",
                    a.tenant_id, a.client_id, a.client_id
                );
            } else {
                let reference = secret(format!("SIM_D365_WEBHOOK_TOKEN_{i}"), &a.webhook_token);
                let _ = writeln!(out, "webhook_token = {reference}\n");
            }
        }
    }
    for (i, a) in accounts.spruce.iter().enumerate() {
        common(
            &mut out,
            &format!("spruce-{i}"),
            "spruce",
            tuning.poll_interval.as_deref(),
        );
        let reference = secret(format!("SIM_SPRUCE_API_TOKEN_{i}"), &a.api_token);
        let _ = writeln!(
            out,
            "[sources.spruce]\nbase_url = \"{}\"\norganization_id = \"{}\"\napi_token = {reference}\n",
            urls.spruce, a.organization_id
        );
        if tuning.webhooks.is_some() {
            let reference = secret(
                format!("SIM_SPRUCE_WEBHOOK_SECRET_{i}"),
                &a.webhook_signing_secret,
            );
            let _ = writeln!(out, "webhook_secret = {reference}\n");
        }
    }
    for (i, a) in accounts.sinch.iter().enumerate() {
        common(
            &mut out,
            &format!("sinch-{i}"),
            "sinch",
            tuning.poll_interval.as_deref(),
        );
        let reference = secret(format!("SIM_SINCH_KEY_SECRET_{i}"), &a.key_secret);
        let _ = writeln!(
            out,
            "[sources.sinch]\nbase_url = \"{}\"\ntoken_url = \"{}\"\nproject_id = \"{}\"\napp_id = \"{}\"\nkey_id = \"{}\"\nkey_secret = {reference}\n",
            urls.sinch,
            handle.sinch_token_url(),
            a.project_id,
            a.app_id,
            a.key_id
        );
        if tuning.webhooks.is_some() {
            let reference = secret(format!("SIM_SINCH_WEBHOOK_SECRET_{i}"), &a.webhook_secret);
            let _ = writeln!(out, "webhook_secret = {reference}\n");
        }
    }
    if !accounts.highlevel.is_empty() {
        common(
            &mut out,
            "highlevel",
            "highlevel",
            tuning.poll_interval.as_deref(),
        );
        let _ = writeln!(
            out,
            "[sources.highlevel]\nbase_url = \"{}\"",
            urls.highlevel
        );
        if let Some(keys) = &tuning.webhooks {
            let _ = writeln!(
                out,
                "webhook_public_key = \"{}\"",
                keys.highlevel_public_key.display()
            );
        }
        if tuning.highlevel_oauth {
            let first = &accounts.highlevel[0];
            let reference = secret("SIM_HIGHLEVEL_CLIENT_SECRET".into(), &first.client_secret);
            let _ = writeln!(
                out,
                "client_id = \"{}\"\nclient_secret = {reference}",
                first.client_id
            );
        }
        let _ = writeln!(out);
        for (i, a) in accounts.highlevel.iter().enumerate() {
            let _ = writeln!(
                out,
                "[[sources.highlevel.locations]]\nid = \"{}\"",
                a.location_id
            );
            let credential = if tuning.highlevel_oauth {
                format!(
                    "refresh_token = {}",
                    secret(format!("SIM_HIGHLEVEL_REFRESH_TOKEN_{i}"), &a.refresh_token)
                )
            } else {
                format!(
                    "private_integration_token = {}",
                    secret(
                        format!("SIM_HIGHLEVEL_PIT_{i}"),
                        &a.private_integration_token
                    )
                )
            };
            let _ = writeln!(out, "{credential}\n");
        }
    }
    GeneratedConfig {
        toml: out,
        secrets,
        placement: placement.clone(),
    }
}
