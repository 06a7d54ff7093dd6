//! Webhooks (docs/webhooks.md): the receiver over loopback with real signatures,
//! the ordering rule between events and polls, on both stores, the replay of Spruce's
//! delivery log after downtime, and the simulator's events end to end, in process and
//! through the real binaries.

mod daemon;
mod end_to_end;
mod ordering;
mod process;
mod receiver;
mod replay;

use convsync::config::Config;
use convsync::health::{Notifier, Service};
use tokio_util::sync::CancellationToken;

use crate::support::app::TestApp;

/// The receiver (and its start-up replay) beside the health endpoint, as `convsync run`
/// starts them.
pub(crate) async fn start_service(
    config: &Config,
    app: &TestApp,
    stop: &CancellationToken,
) -> Service {
    Service::start_with_webhooks(
        &config.health,
        &config.webhooks,
        app.engine(),
        Notifier::disabled(),
        stop.clone(),
    )
    .await
    .unwrap()
}
