//! `convsync simulate`: the bundled provider simulator alone, with a banner that lists its
//! listeners and a convsync configuration ready to paste.

use convsync_sim::{SimHandle, SimOptions, Simulator};
use tokio_util::sync::CancellationToken;

use crate::sim_config::{
    SecretPlacement, SourceTuning, WebhookKeys, convsync_sources, write_highlevel_public_key,
};

/// `convsync simulate`: start, print the URLs and credentials (with a configuration
/// snippet), serve until `shutdown` is cancelled.
pub async fn run(options: SimOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let webhook_base = options.webhook_base.clone();
    let handle = Simulator::start(options).await?;
    let keys = match &webhook_base {
        Some(_) => {
            // `webhook_public_key` is a path: the TEST-ONLY public key goes to a file.
            let path = std::env::temp_dir().join("convsync-sim-highlevel-webhook-public-key.pem");
            write_highlevel_public_key(&path)?;
            Some(WebhookKeys {
                highlevel_public_key: path,
            })
        }
        None => None,
    };
    println!("{}", banner(&handle, webhook_base.as_ref(), keys));
    shutdown.cancelled().await;
    handle.shutdown().await;
    Ok(())
}

/// The start-up banner: listeners, control API, and a ready-to-paste configuration (with
/// the webhook keys and a `[webhooks]` section when events go to `webhook_base`).
fn banner(
    handle: &SimHandle,
    webhook_base: Option<&url::Url>,
    keys: Option<WebhookKeys>,
) -> String {
    use std::fmt::Write as _;
    let urls = handle.urls();
    let mut out = String::new();
    let _ = writeln!(out, "convsync provider simulator");
    let _ = writeln!(out, "  D365       {}", urls.d365);
    let _ = writeln!(out, "  Spruce     {}", urls.spruce);
    let _ = writeln!(out, "  Sinch      {}", urls.sinch);
    let _ = writeln!(out, "  HighLevel  {}", urls.highlevel);
    let _ = writeln!(
        out,
        "  control    {}  (GET /truth, /requests, /faults; POST /activity)",
        urls.control
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "# --- configuration snippet (secrets via environment variables) ---"
    );
    let tuning = SourceTuning {
        webhooks: keys,
        ..SourceTuning::default()
    };
    let generated = convsync_sources(handle, &SecretPlacement::Env, &tuning);
    if let Some(base) = webhook_base {
        let host = base.host_str().unwrap_or("127.0.0.1");
        let port = base.port_or_known_default().unwrap_or(80);
        let _ = writeln!(
            out,
            "# webhooks go to {base}NAME: the receiver serves /webhooks/NAME\n[webhooks]\nlisten = \"{host}:{port}\"\n"
        );
    }
    let _ = writeln!(out, "{}", generated.toml);
    let _ = writeln!(out, "# --- environment ---");
    let _ = write!(out, "{}", generated.env_exports());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `--webhook-base`, the banner's configuration loads with a receiver and every
    /// source's webhook key.
    #[tokio::test]
    async fn the_banner_configures_the_receiver_and_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let options = SimOptions {
            conversations: 2,
            activity_rate: 0.0,
            webhook_base: Some("http://127.0.0.1:9478/webhooks/".parse().unwrap()),
            ..SimOptions::default()
        };
        let base = options.webhook_base.clone();
        let handle = Simulator::start(options).await.unwrap();
        let key = dir.path().join("key.pem");
        write_highlevel_public_key(&key).unwrap();
        let text = banner(
            &handle,
            base.as_ref(),
            Some(WebhookKeys {
                highlevel_public_key: key.clone(),
            }),
        );
        handle.shutdown().await;
        let snippet = text
            .split("# --- environment ---")
            .next()
            .unwrap()
            .split("---\n")
            .nth(1)
            .unwrap();
        let path = dir.path().join("convsync.toml");
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = \"sqlite://{}/m.db\"\n\n{snippet}",
                dir.path().display()
            ),
        )
        .unwrap();
        use figment::providers::Format as _;
        let config: serde_json::Value =
            figment::Figment::from(figment::providers::Toml::file(&path))
                .extract()
                .unwrap();
        assert_eq!(
            config["webhooks"]["listen"].as_str(),
            Some("127.0.0.1:9478")
        );
        for (provider, field) in [
            ("d365", "webhook_token"),
            ("spruce", "webhook_secret"),
            ("sinch", "webhook_secret"),
            ("highlevel", "webhook_public_key"),
        ] {
            let sources = config["sources"].as_array().unwrap();
            let source = sources
                .iter()
                .find(|s| s["provider"].as_str() == Some(provider))
                .unwrap();
            assert!(source[provider].get(field).is_some(), "{provider}.{field}");
        }
        // D365 events carry message facts: the polls read the messages too.
        let d365 = config["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["provider"].as_str() == Some("d365"))
            .unwrap();
        assert_eq!(d365["d365"]["messages"].as_bool(), Some(true));
        assert!(text.contains("export SIM_SPRUCE_WEBHOOK_SECRET_0="));
    }
}
