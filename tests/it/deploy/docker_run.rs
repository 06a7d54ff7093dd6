//! The plain `docker run` of docs/deploy.md (the section marked `docker-run`), run
//! verbatim against an image built offline: the container mirrors the simulator, `/readyz`
//! turns healthy, the documented `docker exec … status` shows every conversation the
//! simulator shows, and `docker stop` ends it with exit 0.
//!
//! Four substitutions keep the run apart from anything else on the engine: the image tag,
//! the container name, the volume and the published host port (still on 127.0.0.1). The
//! simulator runs in the container's network namespace (`--network container:NAME`), the
//! same image running the mounted build that has one, so convsync reaches it on its own
//! loopback.
//!
//! Without a Docker engine the test is skipped with a message, unless `CI` is set.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::deploy::{
    PATIENCE, SpruceSite, documented_steps, skip, static_binary, text, wait_until,
};

/// What docs/deploy.md names, and the test replaces.
const DOC_NAME: &str = "convsync";
const DOC_VOLUME: &str = "-v convsync-data:";
const DOC_PORT: &str = "-p 127.0.0.1:9477:9477";
/// Where the simulator serves Spruce, on the container's loopback.
const SIM_PORT: u16 = 18481;

/// The run's own names, and the cleanup of whatever the run made, even when it fails.
struct Run {
    name: String,
    volume: String,
    tag: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl Run {
    fn simulator(&self) -> String {
        format!("{}-sim", self.name)
    }

    /// A documented command with the run's names; panics if one it should carry is missing.
    fn rewrite(&self, step: &str) -> String {
        let replace = |step: &str, from: &str, to: &str| {
            assert!(step.contains(from), "`{from}` not in the documented {step}");
            step.replace(from, to)
        };
        if let Some(run) = step.strip_prefix("docker run ") {
            let run = replace(
                run,
                &format!("--name {DOC_NAME} "),
                &format!("--name {} ", self.name),
            );
            let run = replace(&run, DOC_VOLUME, &format!("-v {}:", self.volume));
            let run = replace(&run, DOC_PORT, &format!("-p 127.0.0.1:{}:9477", self.port));
            let image = run
                .strip_suffix(&format!(" {DOC_NAME}"))
                .unwrap_or_else(|| {
                    panic!("the documented docker run does not end in the image: {run}")
                });
            format!("docker run {image} {}", self.tag)
        } else if step.starts_with("docker exec ") {
            replace(
                step,
                &format!("docker exec {DOC_NAME} "),
                &format!("docker exec {} ", self.name),
            )
        } else {
            step.to_owned()
        }
    }

    /// Runs one documented step in the run's directory; returns its stdout.
    fn step(&self, step: &str) -> String {
        let step = self.rewrite(step);
        eprintln!("$ {step}");
        let output = Command::new("bash")
            .current_dir(self.dir.path())
            .args(["-euo", "pipefail", "-c", &step])
            .output()
            .unwrap();
        eprint!("{}", text(&output));
        assert!(
            output.status.success(),
            "documented step failed ({}): {step}",
            output.status
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for container in [self.name.clone(), self.simulator()] {
                eprintln!(
                    "--- logs of {container} ---\n{}",
                    text(&docker(&["logs", &container]))
                );
            }
        }
        let _ = docker(&["rm", "--force", "--volumes", &self.simulator(), &self.name]);
        let _ = docker(&["volume", "rm", "--force", &self.volume]);
        let _ = docker(&["image", "rm", "--force", &self.tag]);
    }
}

/// The documented `docker run`, `docker ps` and `docker exec … status`, for real on an
/// image built offline, then `docker stop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_docker_run_mirrors_and_stops_cleanly() {
    let test = "documented_docker_run_mirrors_and_stops_cleanly";
    if !docker(&["info"]).status.success() {
        skip(test, "no Docker engine");
        return;
    }
    let steps = documented_steps("docker-run");
    let [run_step, ps_step, status_step] = &steps[..] else {
        panic!("docker-run should be docker run, docker ps, docker exec … status: {steps:?}");
    };
    assert!(status_step.ends_with(" convsync status"), "{status_step}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = std::process::id();
    let run = Run {
        name: format!("convsync-it-run-{id}"),
        volume: format!("convsync-it-run-{id}-data"),
        tag: format!("convsync:it-run-{id}"),
        port,
        dir: tempfile::tempdir().unwrap(),
    };
    // The image as offline users build it (the docs' alternative to `docker build`), from
    // the binary without the simulator; the simulator runs the build that has one.
    let binary = static_binary(&["--without-sim"]);
    let simulator = static_binary(&[]);
    let built = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/docker/build-offline.sh"
    ))
    .arg(&run.tag)
    .env("CONVSYNC_BINARY", &binary)
    .output()
    .unwrap();
    assert!(built.status.success(), "build-offline.sh: {}", text(&built));

    // The files the docs ask for in the current directory, readable by the user 10001.
    let site = SpruceSite::start(40).await;
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
    let write = |file: &str, contents: &str, mode: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = run.dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("convsync.toml", &config, 0o644);
    write(
        "secrets/spruce_api_token",
        &site.sim.accounts().spruce[0].api_token,
        0o444,
    );

    run.step(run_step);
    // Test only: the simulator in the container's network namespace, same seed and size
    // as `site` (which supplies the organization, the token and the truth); a tmpfs over
    // the image's volume so it leaves no anonymous volume behind.
    let sim_mount = format!("{simulator}:/usr/local/bin/convsync-sim:ro");
    let network = format!("container:{}", run.name);
    let sim_port = SIM_PORT.to_string();
    let started = docker(&[
        "run",
        "-d",
        "--name",
        &run.simulator(),
        "--network",
        &network,
        "--read-only",
        "--tmpfs",
        "/var/lib/convsync",
        "-v",
        &sim_mount,
        "--entrypoint",
        "/usr/local/bin/convsync-sim",
        &run.tag,
        "simulate",
        "--seed",
        "8",
        "--spruce-port",
        &sim_port,
        "--conversations",
        "40",
        "--activity-rate",
        "0",
        "--d365-accounts",
        "0",
        "--sinch-accounts",
        "0",
        "--highlevel-locations",
        "0",
    ]);
    assert!(started.status.success(), "simulator: {}", text(&started));
    assert!(
        run.step(ps_step).contains(&run.name),
        "docker ps does not list {}",
        run.name
    );

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
    // The documented status shows every conversation the simulator shows.
    let truth = site.visible_truth().await.len();
    assert!(truth > 0, "the simulator shows no conversations");
    let expected = format!("rows: {truth} (");
    let mut status = String::new();
    wait_until(
        "`docker exec … status` to show the simulator's conversations",
        || {
            status = run.step(status_step);
            status.contains(&expected)
        },
    );

    // `docker stop`: SIGTERM, the page in flight finished, exit 0.
    let stopped = docker(&["stop", &run.name]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let exit = docker(&["inspect", "--format", "{{.State.ExitCode}}", &run.name]);
    let logs = text(&docker(&["logs", &run.name]));
    assert_eq!(
        String::from_utf8_lossy(&exit.stdout).trim(),
        "0",
        "no clean exit on docker stop:\n{logs}"
    );
    assert!(logs.contains("convsync stopped"), "{logs}");
    eprintln!("docker run: {truth} conversations mirrored, /readyz healthy, exit 0 on stop");
}
