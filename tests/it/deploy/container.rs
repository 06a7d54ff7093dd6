//! The container image, for real: built from deploy/docker without pulling anything,
//! run by testcontainers against the simulator on the host, judged by its own
//! HEALTHCHECK, its mirror compared with the simulator's truth, and stopped with SIGTERM.
//!
//! Needs a Docker engine. Without one the test is skipped with a message, unless `CI` is
//! set: then a missing engine is a failure.

use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt as _;
use testcontainers::bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, TopOptionsBuilder,
};
use testcontainers::core::logs::LogFrame;
use testcontainers::core::{AccessMode, Healthcheck, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

use super::docker_api::{self, SHIMMED_ENV, VersionProxy};
use crate::support::deploy::{PATIENCE, SpruceSite, mirrored};

const IMAGE: &str = "convsync";
const TAG: &str = "it-offline";
/// The image's unprivileged user (deploy/docker/rootfs.sh).
const SERVICE_UID: u64 = 10001;
/// `docker stop` grace period; a clean exit within it has status 0, a kill 137.
const STOP_GRACE_SECONDS: i32 = 30;

/// The engine, or `None` after printing why the test is skipped (fails under CI).
async fn engine_or_skip(test: &str) -> Option<docker_api::Engine> {
    match docker_api::connect().await {
        Ok(engine) => Some(engine),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: CI is set but Docker is unusable: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED {test}: Docker is unavailable ({why}); set CI=1 to make this a failure"
            );
            None
        }
    }
}

/// Builds the image with the offline script, as CI and users without registry access do.
async fn build_image() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/docker/build-offline.sh"
    );
    let output = tokio::process::Command::new(script)
        .arg(format!("{IMAGE}:{TAG}"))
        .env_remove("CONVSYNC_SOURCE")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs this same test in a child process that reaches the engine through `proxy`, and
/// checks that it ran and passed.
async fn run_through_proxy(test: &str, engine: &docker_api::Engine) {
    let proxy = VersionProxy::start(engine.version);
    let exact = test.split_once("::").map_or(test, |(_, rest)| rest);
    eprintln!(
        "Docker engine speaks API {}; running {exact} through a version proxy",
        engine.version
    );
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([exact, "--exact", "--nocapture", "--test-threads=1"])
        .env("DOCKER_HOST", proxy.docker_host())
        .env(SHIMMED_ENV, engine.version.to_string())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("--- proxied run ---\n{stdout}{stderr}--- end of proxied run ---");
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the proxied run failed:\n{stdout}\n{stderr}"
    );
}

/// Files under `/var/lib/convsync` of a (stopped) container: their owners, and a copy of
/// the database on the host.
async fn fetch_state(
    engine: &docker_api::Engine,
    container: &str,
    into: &std::path::Path,
) -> Vec<(String, u64)> {
    let options = DownloadFromContainerOptionsBuilder::new()
        .path("/var/lib/convsync")
        .build();
    let archive: Vec<u8> = engine
        .docker
        .download_from_container(container, Some(options))
        .map_ok(|chunk| chunk.to_vec())
        .try_concat()
        .await
        .unwrap();
    let mut owners = Vec::new();
    let mut entries = tar::Archive::new(archive.as_slice());
    for entry in entries.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        owners.push((path.display().to_string(), entry.header().uid().unwrap()));
        if entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            std::fs::write(into.join(path.file_name().unwrap()), bytes).unwrap();
        }
    }
    owners
}

/// The image built offline runs the mirror as a non-root service: healthy by its own
/// HEALTHCHECK against the simulator on the host, with a read-only root filesystem and the
/// database in a named volume matching the simulator's truth, and a clean exit on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_mirrors_the_simulator_as_a_healthy_non_root_service() {
    let test = concat!(
        module_path!(),
        "::container_mirrors_the_simulator_as_a_healthy_non_root_service"
    );
    let Some(engine) = engine_or_skip(test).await else {
        return;
    };
    if !engine.speaks_testcontainers_version() && std::env::var_os(SHIMMED_ENV).is_none() {
        run_through_proxy(test, &engine).await;
        return;
    }
    build_image().await;
    let image = engine
        .docker
        .inspect_image(&format!("{IMAGE}:{TAG}"))
        .await
        .unwrap();
    let image_config = image.config.unwrap();
    assert_eq!(
        image_config.user.as_deref(),
        Some("10001:10001"),
        "the image runs as the unprivileged user"
    );
    let healthcheck = image_config.healthcheck.unwrap().test.unwrap();
    assert_eq!(healthcheck, ["CMD", "/usr/local/bin/convsync", "health"]);
    // OCI labels set by build-offline.sh: Cargo's version and the commit built.
    let labels = image_config.labels.unwrap_or_default();
    let head = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let label = |key: &str| {
        labels
            .get(&format!("org.opencontainers.image.{key}"))
            .cloned()
    };
    assert_eq!(label("version").as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(label("revision"), Some(head), "{labels:?}");
    // The source address is whatever deploy/docker/oci-source.sh finds, and no label at
    // all when it finds nothing (a checkout without `repository` or an https origin).
    let source = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/docker/oci-source.sh"
    ))
    .output()
    .unwrap();
    let source = String::from_utf8_lossy(&source.stdout).trim().to_owned();
    assert_eq!(
        label("source"),
        Some(source).filter(|s| !s.is_empty()),
        "{labels:?}"
    );

    // The container shares the host's network, so the simulator and the health endpoint
    // are both on loopback (plain http is accepted for loopback only).
    let site = SpruceSite::start(40).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = site.dir.path().join("container.toml");
    std::fs::write(
        &config,
        site.config_text(
            "sqlite:///var/lib/convsync/convsync.db",
            "0.0.0.0:9477",
            std::path::Path::new("/run/secrets/spruce-token"),
        ),
    )
    .unwrap();
    let volume = format!("convsync-it-{}", std::process::id());
    let logs = Arc::new(Mutex::new(String::new()));
    let sink = logs.clone();
    let started = GenericImage::new(IMAGE, TAG)
        .with_wait_for(WaitFor::healthcheck())
        .with_network("host")
        .with_readonly_rootfs(true)
        .with_env_var("CONVSYNC_HEALTH__LISTEN", format!("127.0.0.1:{port}"))
        .with_mount(
            Mount::bind_mount(config.display().to_string(), "/etc/convsync/convsync.toml")
                .with_access_mode(AccessMode::ReadOnly),
        )
        .with_mount(
            Mount::bind_mount(
                site.token_file().display().to_string(),
                "/run/secrets/spruce-token",
            )
            .with_access_mode(AccessMode::ReadOnly),
        )
        .with_mount(Mount::volume_mount(&volume, "/var/lib/convsync"))
        // The image's own HEALTHCHECK command, checked more often than in production.
        .with_health_check(
            Healthcheck::empty()
                .with_interval(Duration::from_secs(1))
                .with_retries(1000),
        )
        .with_log_consumer(move |frame: &LogFrame| {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(frame.bytes()))
        })
        .with_startup_timeout(PATIENCE)
        .start()
        .await;
    let container = match started {
        Ok(container) => container,
        Err(e) => panic!(
            "the container did not become healthy: {e}\nlogs:\n{}",
            logs.lock().unwrap()
        ),
    };
    let id = container.id().to_owned();

    let top = engine
        .docker
        .top_processes(
            &id,
            Some(TopOptionsBuilder::new().ps_args("-o pid,uid,args").build()),
        )
        .await
        .unwrap();
    let titles = top.titles.unwrap();
    let uid_column = titles.iter().position(|t| t == "UID").unwrap();
    let processes = top.processes.unwrap();
    assert!(!processes.is_empty());
    for process in &processes {
        assert_eq!(
            process[uid_column],
            SERVICE_UID.to_string(),
            "a process runs as another user: {process:?}"
        );
    }

    container
        .stop_with_timeout(Some(STOP_GRACE_SECONDS))
        .await
        .unwrap();
    let exit_code = container.exit_code().await.unwrap();
    let logs_text = logs.lock().unwrap().clone();
    assert_eq!(
        exit_code,
        Some(0),
        "no clean exit within {STOP_GRACE_SECONDS} s of SIGTERM; logs:\n{logs_text}"
    );
    assert!(logs_text.contains("convsync stopped"), "{logs_text}");

    let copy = tempfile::tempdir().unwrap();
    let owners = fetch_state(&engine, &id, copy.path()).await;
    assert!(
        owners.iter().any(|(path, _)| path.ends_with("convsync.db")),
        "{owners:?}"
    );
    for (path, uid) in &owners {
        assert_eq!(*uid, SERVICE_UID, "{path} is owned by uid {uid}");
    }
    let mirror = mirrored(&copy.path().join("convsync.db")).await;
    assert_eq!(mirror, site.visible_truth().await);
    eprintln!(
        "container {id}: healthy, {} conversations mirrored, processes {processes:?}, files {owners:?}, exit 0",
        mirror.len()
    );

    container.rm().await.unwrap();
    engine
        .docker
        .remove_volume(
            &volume,
            None::<testcontainers::bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
        .unwrap();
}
