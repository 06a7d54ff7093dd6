//! `convsync simulate`: the bundled provider simulator alone, with a banner that lists its
//! listeners and a convsync configuration ready to paste.

use convsync_sim::{SimHandle, SimOptions, Simulator};
use tokio_util::sync::CancellationToken;

use crate::sim_config::{SecretPlacement, SourceTuning, convsync_sources};

/// `convsync simulate`: start, print the URLs and credentials (with a configuration
/// snippet), serve until `shutdown` is cancelled.
pub async fn run(options: SimOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handle = Simulator::start(options).await?;
    println!("{}", banner(&handle));
    shutdown.cancelled().await;
    handle.shutdown().await;
    Ok(())
}

/// The start-up banner: listeners, control API, and a ready-to-paste configuration.
fn banner(handle: &SimHandle) -> String {
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
    let generated = convsync_sources(handle, &SecretPlacement::Env, &SourceTuning::default());
    let _ = writeln!(out, "{}", generated.toml);
    let _ = writeln!(out, "# --- environment ---");
    let _ = write!(out, "{}", generated.env_exports());
    out
}
