//! `SimClient`: the control API from another process (tests that run `convsync simulate`
//! as a child process).

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::accounts::SimAccounts;
use super::activity::{Affected, Mutation};
use super::control::{
    ActivityCommand, ActivityOutcome, ClockAdvance, ClockReading, RevokeTokens, SimUrls,
    WebhookTarget,
};
use super::counters::RequestCounts;
use super::faults::Faults;
use super::platform::{Platform, PlatformSelector};
use super::truth::TruthConversation;
use super::webhooks::{WebhookCounts, WebhookFaults};

/// HTTP client of a simulator's control listener.
#[derive(Clone, Debug)]
pub struct SimClient {
    http: reqwest::Client,
    base: Url,
}

impl SimClient {
    /// A client for the control listener at `control_url`.
    pub fn new(control_url: Url) -> SimClient {
        SimClient {
            http: reqwest::Client::new(),
            base: control_url,
        }
    }

    fn url(&self, path: &str) -> anyhow::Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("joining {path} to {}", self.base))
    }

    async fn read<T: DeserializeOwned>(response: reqwest::Response) -> anyhow::Result<T> {
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("simulator control API answered {status}: {body}");
        }
        Ok(response.json().await?)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Self::read(self.http.get(self.url(path)?).send().await?).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let response = self
            .http
            .request(method, self.url(path)?)
            .json(body)
            .send()
            .await?;
        Self::read(response).await
    }

    async fn send_empty<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<()> {
        let response = self.http.post(self.url(path)?).json(body).send().await?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "simulator control API answered {status}"
        );
        Ok(())
    }

    /// Poll `/health` until the simulator answers or `timeout` passes.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.get::<serde_json::Value>("health").await {
                Ok(_) => return Ok(()),
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(error.context("simulator did not become ready"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Base URLs of every listener.
    pub async fn urls(&self) -> anyhow::Result<SimUrls> {
        self.get("urls").await
    }

    /// Accounts and credentials.
    pub async fn accounts(&self) -> anyhow::Result<SimAccounts> {
        self.get("accounts").await
    }

    /// Truth of one account.
    pub async fn truth(
        &self,
        provider: Platform,
        account: &str,
    ) -> anyhow::Result<Vec<TruthConversation>> {
        let mut url = self.url("truth")?;
        url.query_pairs_mut()
            .append_pair("provider", provider.as_str())
            .append_pair("account", account);
        Self::read(self.http.get(url).send().await?).await
    }

    /// Request counters.
    pub async fn requests(&self) -> anyhow::Result<RequestCounts> {
        self.get("requests").await
    }

    /// Zero the request counters.
    pub async fn reset_requests(&self) -> anyhow::Result<()> {
        self.send_empty("requests/reset", &serde_json::json!({}))
            .await
    }

    /// Faults of every provider.
    pub async fn faults(&self) -> anyhow::Result<std::collections::BTreeMap<Platform, Faults>> {
        self.get("faults").await
    }

    /// Replace the faults of one provider or all.
    pub async fn set_faults(
        &self,
        selector: impl Into<PlatformSelector>,
        faults: &Faults,
    ) -> anyhow::Result<()> {
        let path = format!("faults/{}", String::from(selector.into()));
        let _: serde_json::Value = self.send(reqwest::Method::PUT, &path, faults).await?;
        Ok(())
    }

    /// Run an activity command.
    pub async fn activity(&self, command: &ActivityCommand) -> anyhow::Result<ActivityOutcome> {
        self.send(reqwest::Method::POST, "activity", command).await
    }

    /// Pause the background generator.
    pub async fn pause_activity(&self) -> anyhow::Result<()> {
        self.activity(&ActivityCommand::Pause).await.map(|_| ())
    }

    /// Resume the background generator.
    pub async fn resume_activity(&self) -> anyhow::Result<()> {
        self.activity(&ActivityCommand::Resume).await.map(|_| ())
    }

    /// Apply `count` random changes now.
    pub async fn apply_activity(&self, count: u64) -> anyhow::Result<Affected> {
        Ok(self
            .activity(&ActivityCommand::Apply { count })
            .await?
            .affected)
    }

    /// Apply one targeted change.
    pub async fn mutate(
        &self,
        provider: Platform,
        account: &str,
        mutation: Mutation,
    ) -> anyhow::Result<Affected> {
        let command = ActivityCommand::Mutate {
            provider,
            account: account.to_owned(),
            mutation,
        };
        Ok(self.activity(&command).await?.affected)
    }

    /// Revoke issued access tokens.
    pub async fn revoke_tokens(&self, selector: impl Into<PlatformSelector>) -> anyhow::Result<()> {
        self.send_empty(
            "tokens/revoke",
            &RevokeTokens {
                provider: selector.into(),
            },
        )
        .await
    }

    /// Read the simulated clock.
    pub async fn clock(&self) -> anyhow::Result<ClockReading> {
        self.get("clock").await
    }

    /// Move the simulated clock forward.
    pub async fn advance_clock(&self, by: Duration) -> anyhow::Result<ClockReading> {
        let millis = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.send(
            reqwest::Method::POST,
            "clock/advance",
            &ClockAdvance { millis },
        )
        .await
    }

    /// Webhook counters (the simulator's truth about its deliveries).
    pub async fn webhook_counts(&self) -> anyhow::Result<WebhookCounts> {
        self.get("webhooks").await
    }

    /// Zero the webhook counters.
    pub async fn reset_webhook_counts(&self) -> anyhow::Result<()> {
        self.send_empty("webhooks/reset", &serde_json::json!({}))
            .await
    }

    /// Replace the webhook faults of one provider or all.
    pub async fn set_webhook_faults(
        &self,
        selector: impl Into<PlatformSelector>,
        faults: &WebhookFaults,
    ) -> anyhow::Result<()> {
        let path = format!("webhooks/faults/{}", String::from(selector.into()));
        let _: serde_json::Value = self.send(reqwest::Method::PUT, &path, faults).await?;
        Ok(())
    }

    /// Send `account`'s webhook events to `url` (loopback only; `None` stops them).
    pub async fn set_webhook_target(
        &self,
        provider: Platform,
        account: &str,
        url: Option<Url>,
    ) -> anyhow::Result<()> {
        let body = WebhookTarget {
            provider,
            account: account.to_owned(),
            url,
        };
        let response = self
            .http
            .put(self.url("webhooks/target")?)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("simulator control API answered {status}: {body}");
        }
        Ok(())
    }
}
