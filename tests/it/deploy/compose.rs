//! deploy/docker/compose.yaml with the Compose found on the machine: Debian's
//! `docker-compose` 1.29 (the Python one) and/or the `docker compose` plugin.
//!
//! Every installed Compose validates the file and the replicas' file,
//! deploy/docker/compose.replicas.yaml (`config`; the replicas run for real in
//! compose_replicas.rs, with the [`Run`] set-up shared from here). Then Debian's `docker-compose`
//! runs the commands docs/deploy.md marks (`compose-prepare`, `compose-offline`,
//! `compose-down`) for real, in a copy of the checkout, against an image built offline:
//! the container mirrors the simulator running on the host, `/readyz` turns healthy, and
//! `down` stops it with exit 0 on SIGTERM. Three substitutions keep the run apart from
//! anything else on the engine: the project name, the image tag, and a test override file
//! (host network, so the container reaches the simulator on the host's loopback, and a
//! free health port) added after the documented `-f deploy/docker/compose.yaml`.
//!
//! Without any Compose (or Docker engine) the tests are skipped with a message, unless
//! `CI` is set.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::deploy::{
    PATIENCE, SpruceSite, checkout_files, documented_steps, simulate_args, skip, static_binary,
    text, wait_until,
};

const COMPOSE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker/compose.yaml");
/// PostgreSQL and two replicas (docs/deploy.md, "Running several replicas").
const REPLICAS_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/docker/compose.replicas.yaml"
);
/// What docs/deploy.md names, and the test replaces.
const DOC_PROJECT: &str = "-p convsync ";
/// The compose files docs/deploy.md names, relative to the checkout.
pub(super) const DOC_FILE: &str = "deploy/docker/compose.yaml";
pub(super) const DOC_REPLICAS_FILE: &str = "deploy/docker/compose.replicas.yaml";
const DOC_TAG: &str = "convsync:latest";
/// Where the simulator serves Spruce, on the service's loopback.
pub(super) const SIM_PORT: u16 = 18480;

/// Each Compose on the machine, as the program and arguments that run it.
pub(super) fn composes() -> Vec<Vec<&'static str>> {
    let candidates: [&[&'static str]; 2] = [&["docker-compose"], &["docker", "compose"]];
    candidates
        .into_iter()
        .filter(|c| {
            Command::new(c[0])
                .args(&c[1..])
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(<[&str]>::to_vec)
        .collect()
}

#[test]
fn compose_file_is_valid_for_every_installed_compose() {
    let found = composes();
    if found.is_empty() {
        skip(
            "compose_file_is_valid_for_every_installed_compose",
            "neither docker-compose nor `docker compose` is installed",
        );
        return;
    }
    for compose in found {
        for file in [COMPOSE_FILE, REPLICAS_FILE] {
            let output = Command::new(compose[0])
                .args(&compose[1..])
                .args(["-p", "convsync", "-f", file, "config", "-q"])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{} refuses {file}:\n{}",
                compose.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// The run's own names, and the cleanup of whatever the run made, even when it fails.
pub(super) struct Run {
    pub(super) project: String,
    /// The documented compose file the run uses ([`DOC_FILE`] or [`DOC_REPLICAS_FILE`]).
    pub(super) file: &'static str,
    pub(super) tag: String,
    pub(super) dir: tempfile::TempDir,
}

impl Run {
    /// A run of `file` named after this process and `what`, in a copy of the checkout
    /// (the copy has no target directory: binaries come from the real checkout).
    pub(super) fn new(file: &'static str, what: &str) -> Run {
        let run = Run {
            project: format!("convsync-it-{what}-{}", std::process::id()),
            file,
            tag: format!("convsync:it-{what}-{}", std::process::id()),
            dir: tempfile::tempdir().unwrap(),
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in checkout_files() {
            let to = run.checkout().join(&file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(root.join(&file), &to).unwrap();
        }
        run
    }

    pub(super) fn checkout(&self) -> std::path::PathBuf {
        self.dir.path().join("checkout")
    }

    pub(super) fn override_file(&self) -> std::path::PathBuf {
        self.dir.path().join("test-override.yaml")
    }

    /// A documented command with the run's names: `docker-compose -p convsync -f FILE …`
    /// gets this run's project and the override file, and the image tag becomes this run's.
    fn rewrite(&self, step: &str) -> String {
        let mut step = step.replace(DOC_TAG, &self.tag);
        if step.starts_with("docker-compose ") {
            let documented = format!("{DOC_PROJECT}-f {}", self.file);
            assert!(
                step.contains(&format!("{documented} ")),
                "a compose command without `{documented}`: {step}"
            );
            step = step.replace(
                &documented,
                &format!(
                    "-p {} -f {} -f {}",
                    self.project,
                    self.file,
                    self.override_file().display()
                ),
            );
        }
        step
    }

    /// Runs the documented steps of `section` in the checkout copy, one by one.
    pub(super) fn run_section(&self, section: &str, env: &[(&str, &str)]) -> Vec<String> {
        let mut outputs = Vec::new();
        for step in documented_steps(section) {
            let step = self.rewrite(&step);
            eprintln!("$ {step}");
            let output = Command::new("bash")
                .current_dir(self.checkout())
                .args(["-euo", "pipefail", "-c", &step])
                .envs(env.iter().copied())
                .output()
                .unwrap();
            eprint!("{}", text(&output));
            assert!(
                output.status.success(),
                "documented step failed ({}): {step}",
                output.status
            );
            outputs.push(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        outputs
    }

    /// `docker-compose` with this run's project and files.
    pub(super) fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .current_dir(self.checkout())
            .args(["-p", &self.project, "-f", self.file, "-f"])
            .arg(self.override_file())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- logs ---\n{}",
                text(&self.compose(&["logs", "--no-color"]))
            );
        }
        if self.checkout().join(self.file).exists() {
            let down = self.compose(&["down", "--volumes", "--timeout", "5"]);
            if !down.status.success() {
                eprintln!("cleanup: compose down failed: {}", text(&down));
            }
        }
        let _ = Command::new("docker")
            .args(["image", "rm", "--force", &self.tag])
            .output();
    }
}

/// An override's service `name` running `convsync simulate` (the build at `simulator`,
/// mounted into image `tag`) in the network namespace of service `beside`, so that it
/// answers on that service's loopback, the only place plain http is accepted: Spruce
/// alone, `organizations` organizations of 40 conversations, seed 8 and no activity,
/// the world of [`SpruceSite::start_organizations`]. A tmpfs over the image's volume, so
/// that it leaves no anonymous volume behind.
pub(super) fn simulator_service(
    name: &str,
    beside: &str,
    tag: &str,
    simulator: &str,
    organizations: u32,
) -> String {
    let command: Vec<String> = std::iter::once("/usr/local/bin/convsync-sim".to_owned())
        .chain(simulate_args(SIM_PORT, organizations, "127.0.0.1"))
        .map(|arg| format!("\"{arg}\""))
        .collect();
    format!(
        "  {name}:\n    image: {tag}\n    network_mode: \"service:{beside}\"\n    \
         read_only: true\n    tmpfs: [/var/lib/convsync]\n    \
         volumes: [\"{simulator}:/usr/local/bin/convsync-sim:ro\"]\n    \
         entrypoint: [{}]\n",
        command.join(", ")
    )
}

/// A TCP port free on the host's loopback now.
pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Why the documented Compose commands cannot run here, if they cannot: they need
/// Debian's docker-compose and a Docker engine.
pub(super) fn compose_unavailable() -> Option<&'static str> {
    if !composes().contains(&vec!["docker-compose"]) {
        return Some("Debian's docker-compose is not installed");
    }
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    (!engine).then_some("no Docker engine")
}

/// The documented Compose commands, run for real with Debian's docker-compose 1.29 on an
/// image built offline: the service mirrors the simulator, `/readyz` turns healthy, and
/// `down` stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_compose_commands_run_the_mirror_offline() {
    if let Some(why) = compose_unavailable() {
        skip("documented_compose_commands_run_the_mirror_offline", why);
        return;
    }
    // The binary the offline build packs (without the simulator, like the image the docs
    // build), built once from this checkout (the copy below has no target directory);
    // build-offline.sh takes it from CONVSYNC_BINARY. The simulator beside it runs the
    // build that has one (the .deb's), mounted into its container.
    let binary = static_binary(&["--without-sim"]);
    let simulator = static_binary(&[]);

    let port = free_port();
    let run = Run::new(DOC_FILE, "compose");
    let site = SpruceSite::start(40).await;
    // Test only: this run's image tag, and the simulator beside the service, in the
    // service's network namespace (so convsync reaches it on its own loopback, the only
    // place plain http is accepted): the same image running the mounted build that has a
    // simulator. Same seed and size as `site`, which supplies the organization, the token
    // and the truth. A tmpfs over the image's volume, so that the simulator leaves no
    // anonymous volume behind.
    std::fs::write(
        run.override_file(),
        format!(
            "services:\n  convsync:\n    image: {tag}\n{simulator}",
            tag = run.tag,
            simulator = simulator_service("simulator", "convsync", &run.tag, &simulator, 1),
        ),
    )
    .unwrap();

    let token = site.sim.accounts().spruce[0].api_token.clone();
    let port_text = port.to_string();
    let health_port = [("CONVSYNC_HEALTH_PORT", port_text.as_str())];
    run.run_section("compose-prepare", &[("SPRUCE_TOKEN", &token)]);
    // "Edit deploy/docker/convsync.toml", as the docs ask: the secret from its file,
    // the default database URL, the simulator's address in the container.
    let config = site
        .config_text(
            "sqlite://convsync.db",
            "0.0.0.0:9477",
            Path::new("/run/secrets/spruce_api_token"),
        )
        .replace(
            &site.sim.spruce_base_url().to_string(),
            &format!("http://127.0.0.1:{SIM_PORT}/"),
        );
    assert!(config.contains(&format!(":{SIM_PORT}/")), "{config}");
    std::fs::write(run.checkout().join("deploy/docker/convsync.toml"), config).unwrap();
    run.run_section(
        "compose-offline",
        &[("CONVSYNC_BINARY", &binary), health_port[0]],
    );

    let container = String::from_utf8(run.compose(&["ps", "-q", "convsync"]).stdout).unwrap();
    let container = container.trim().to_owned();
    assert!(!container.is_empty(), "no container for the service");
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = client.get(&readyz).send().await;
        if response.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "{readyz} never turned healthy");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The mirror in the volume holds every conversation the simulator shows.
    let truth = site.visible_truth().await.len() as u64;
    let rows = || {
        let status = run.compose(&["exec", "-T", "convsync", "convsync", "status", "--json"]);
        assert!(status.status.success(), "{}", text(&status));
        let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        report["sources"][0]["rows"].as_u64()
    };
    wait_until("the mirror to hold the simulator's conversations", || {
        rows() == Some(truth)
    });

    // `down`: SIGTERM, the page in flight finished, exit 0, then the container is gone.
    let waiter: Child = Command::new("docker")
        .args(["wait", &container])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let logs: Child = Command::new("docker")
        .args(["logs", "--follow", &container])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both attach in milliseconds; let them before the container can be gone.
    std::thread::sleep(Duration::from_secs(1));
    run.run_section("compose-down", &health_port);
    let exit = waiter.wait_with_output().unwrap();
    let logs = logs.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&exit.stdout).trim(),
        "0",
        "no clean exit on SIGTERM:\n{}",
        text(&logs)
    );
    assert!(text(&logs).contains("convsync stopped"), "{}", text(&logs));
    let left = run.compose(&["ps", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "down left a container"
    );
    eprintln!("compose: {truth} conversations mirrored, /readyz healthy, exit 0 on down");
}
