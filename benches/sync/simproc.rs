//! The simulator in its own process (`convsync simulate`), so that the sync process's peak
//! RSS and CPU time are its own, and a convsync configuration for it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use convsync_sim::{Platform, SimClient};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use url::Url;

/// World generation of 1M conversations takes seconds; a loaded machine gets more.
const BANNER_TIMEOUT: Duration = Duration::from_secs(600);

/// How a source's request budget is configured in the generated file.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// No effective limit: backfill and delta figures measure convsync, not the pacing.
    Unlimited,
    /// The provider's documented default (no `rate_limit` key).
    ProductDefault,
    /// `rate_limit = { requests, per, burst = 1 }`.
    Explicit { requests: u32, per_ms: u64 },
}

/// A running `convsync simulate` serving one account of one provider.
pub struct SimProcess {
    child: Child,
    /// Kept open so the simulator never writes into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
    /// Control API client.
    pub client: SimClient,
    /// The provider it serves.
    pub provider: Platform,
    sources_toml: String,
    secrets: Vec<(String, String)>,
}

/// The `--*-accounts` flags that give `provider` one account and the others none.
fn account_flags(provider: Platform) -> Vec<String> {
    let count = |p: Platform| if p == provider { "1" } else { "0" };
    [
        ("--d365-accounts", Platform::D365),
        ("--spruce-accounts", Platform::Spruce),
        ("--sinch-accounts", Platform::Sinch),
        ("--highlevel-locations", Platform::HighLevel),
    ]
    .into_iter()
    .flat_map(|(flag, p)| [flag.to_owned(), count(p).to_owned()])
    .collect()
}

/// Flags that lift the simulator's own documented limits (Spruce, HighLevel) for
/// throughput runs.
pub fn unlimited_flags() -> Vec<String> {
    [
        "--spruce-rate-limit",
        "4000000000",
        "--highlevel-burst-limit",
        "4000000000",
        "--highlevel-daily-limit",
        "4000000000",
    ]
    .map(String::from)
    .to_vec()
}

impl SimProcess {
    /// Starts the simulator with `conversations` per account and no background activity,
    /// and reads its banner (URLs, configuration snippet, secrets).
    pub async fn start(
        bin: &Path,
        provider: Platform,
        conversations: u32,
        extra: &[String],
        log: &Path,
    ) -> anyhow::Result<SimProcess> {
        let mut flags = vec!["--conversations".to_owned(), conversations.to_string()];
        flags.extend(account_flags(provider));
        flags.extend_from_slice(extra);
        SimProcess::start_with(bin, &flags, provider, log).await
    }

    /// Starts the simulator with no background activity and exactly `flags` besides (the
    /// accounts and conversations included); `provider` is the one measured.
    pub async fn start_with(
        bin: &Path,
        flags: &[String],
        provider: Platform,
        log: &Path,
    ) -> anyhow::Result<SimProcess> {
        let mut child = tokio::process::Command::new(bin)
            .arg("simulate")
            .args(["--seed", "42", "--activity-rate", "0"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting convsync simulate")?;
        let stdout = child.stdout.take().context("simulator stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let banner = tokio::time::timeout(BANNER_TIMEOUT, read_banner(&mut lines))
            .await
            .context("the simulator did not print its banner in time")??;
        let client = SimClient::new(banner.control);
        client.wait_ready(Duration::from_secs(30)).await?;
        Ok(SimProcess {
            child,
            _stdout: lines,
            client,
            provider,
            sources_toml: banner.sources_toml,
            secrets: banner.secrets,
        })
    }

    /// Writes a configuration for the mirror at `database_url` (a SQLite file or a
    /// PostgreSQL database): secrets as files under `dir`, the budget as asked, sweeps
    /// pushed a day out so that delta cycles measure deltas only.
    pub fn write_config(
        &self,
        dir: &Path,
        database_url: &str,
        budget: Budget,
    ) -> anyhow::Result<PathBuf> {
        let secret_dir = dir.join("secrets");
        std::fs::create_dir_all(&secret_dir)?;
        let mut toml = self.sources_toml.clone();
        for (name, value) in &self.secrets {
            let file = secret_dir.join(name);
            std::fs::write(&file, value)?;
            toml = toml.replace(
                &format!("{{ env = \"{name}\" }}"),
                &format!("{{ file = \"{}\" }}", file.display()),
            );
        }
        let budget_line = match budget {
            Budget::Unlimited => Some(
                "rate_limit = { requests = 1000000000, per = \"1s\", burst = 1000000000 }"
                    .to_owned(),
            ),
            Budget::ProductDefault => None,
            Budget::Explicit { requests, per_ms } => Some(format!(
                "rate_limit = {{ requests = {requests}, per = \"{per_ms}ms\" }}"
            )),
        };
        let mut out = format!("[database]\nurl = \"{database_url}\"\n\n");
        for line in toml.lines() {
            out.push_str(line);
            out.push('\n');
            if line.starts_with("provider = ") {
                out.push_str("sweep_interval = \"24h\"\n");
                if let Some(b) = &budget_line {
                    out.push_str(b);
                    out.push('\n');
                }
            }
        }
        let path = dir.join("convsync.toml");
        std::fs::write(&path, out)?;
        Ok(path)
    }

    /// Stops the simulator (SIGTERM, then SIGKILL after a grace period).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: `pid` is our own child, not yet reaped (we hold its handle).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

struct Banner {
    control: Url,
    sources_toml: String,
    secrets: Vec<(String, String)>,
}

/// Reads `convsync simulate`'s banner: the control URL, the configuration snippet between
/// its markers, and the `export NAME='value'` lines that end with a blank line.
async fn read_banner(lines: &mut Lines<BufReader<ChildStdout>>) -> anyhow::Result<Banner> {
    #[derive(PartialEq)]
    enum Part {
        Head,
        Toml,
        Env,
    }
    let mut part = Part::Head;
    let mut control = None;
    let mut sources_toml = String::new();
    let mut secrets = Vec::new();
    while let Some(line) = lines.next_line().await? {
        match part {
            Part::Head => {
                if let Some(rest) = line.trim_start().strip_prefix("control") {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    control =
                        Some(Url::parse(url).with_context(|| format!("control URL in {line:?}"))?);
                } else if line.starts_with("# --- configuration snippet") {
                    part = Part::Toml;
                }
            }
            Part::Toml if line.starts_with("# --- environment") => part = Part::Env,
            Part::Toml => {
                sources_toml.push_str(&line);
                sources_toml.push('\n');
            }
            Part::Env if line.trim().is_empty() => {
                let control = control.context("no control URL in the banner")?;
                return Ok(Banner {
                    control,
                    sources_toml,
                    secrets,
                });
            }
            Part::Env => {
                let Some((name, value)) =
                    line.strip_prefix("export ").and_then(|l| l.split_once('='))
                else {
                    bail!("unexpected banner line {line:?}");
                };
                secrets.push((name.to_owned(), value.trim_matches('\'').to_owned()));
            }
        }
    }
    bail!("the simulator exited before printing its banner")
}
