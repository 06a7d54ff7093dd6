//! deploy/docker/compose.replicas.yaml for real: docs/deploy.md's "Running several
//! replicas" Compose commands (`compose-prepare`, `compose-replicas`,
//! `compose-replicas-down`), run verbatim with Debian's docker-compose in a copy of the
//! checkout, with the substitutions of the single-service test (tests/it/deploy/compose.rs:
//! project name, image tag, an offline build and a test override file) plus one more:
//! `postgres:16` cannot be pulled here, so the override names the image
//! tests/postgres-image.sh builds from Debian's PostgreSQL, whose entry point honours the
//! official image's `POSTGRES_USER`, `POSTGRES_DB` and `POSTGRES_PASSWORD_FILE`.
//!
//! The configuration has two Spruce organizations, two rate-limit scopes, each read with
//! its own secret file. Each replica gets a simulator of that same world (same seed, no
//! activity) in its network namespace, since convsync accepts plain http on loopback only.
//! Proven: both replicas turn ready, the mirror in PostgreSQL holds exactly the
//! simulator's conversations, the two leases are split between `mirror-a` and `mirror-b`,
//! `docker stop` (SIGTERM) of `mirror-a` releases its lease (logged, exit 0) and
//! `mirror-b` claims it afterwards under the next epoch (logged), and `down` stops `mirror-b` with
//! exit 0 and leaves no container.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::compose::{
    DOC_REPLICAS_FILE, Run, SIM_PORT, compose_unavailable, free_port, simulator_service,
};
use crate::support::deploy::{
    LEASE_OWNERS, PATIENCE, SpruceSite, lease_events, lease_owners, psql_args, psql_rows, skip,
    static_binary, text, wait_until,
};

/// Replica names the compose file gives.
const A: &str = "mirror-a";
const B: &str = "mirror-b";

impl Run {
    /// psql in the `postgres` service, as the server's own user over its socket: one
    /// query, unaligned rows of `|`-separated fields.
    fn psql(&self, query: &str) -> Vec<Vec<String>> {
        let mut args = vec!["exec", "-T", "postgres"];
        args.extend(psql_args(query));
        let output = self.compose(&args);
        assert!(output.status.success(), "psql {query}: {}", text(&output));
        psql_rows(&String::from_utf8_lossy(&output.stdout))
    }

    /// Each scope's lease holder (empty when unowned).
    fn owners(&self) -> BTreeMap<String, String> {
        lease_owners(self.psql(LEASE_OWNERS))
    }

    /// The container of `service`.
    fn container(&self, service: &str) -> String {
        let id = text(&self.compose(&["ps", "-q", service]));
        let id = id.trim().to_owned();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }
}

/// `docker wait` and `docker logs --follow` of a container, attached before it is
/// stopped: its exit code and everything it logged.
fn watch(container: &str) -> impl FnOnce() -> (String, String) {
    let waiter = Command::new("docker")
        .args(["wait", container])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = Command::new("docker")
        .args(["logs", "--follow", container])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both attach in milliseconds; let them before the container can be gone.
    std::thread::sleep(Duration::from_secs(1));
    move || {
        let exit = waiter.wait_with_output().unwrap();
        let logs = logs.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&exit.stdout).trim().to_owned(),
            text(&logs),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_compose_replicas_share_and_hand_over_the_mirror() {
    if let Some(why) = compose_unavailable() {
        skip(
            "documented_compose_replicas_share_and_hand_over_the_mirror",
            why,
        );
        return;
    }
    let started = Instant::now();
    let binary = static_binary(&["--without-sim"]);
    let simulator = static_binary(&[]);
    let postgres_image = run_image_script();

    let run = Run::new(DOC_REPLICAS_FILE, "replicas");
    let site = SpruceSite::start_organizations(40, 2, std::net::Ipv4Addr::LOCALHOST.into()).await;
    // Test only: this run's tags (the locally built PostgreSQL for postgres:16), and a
    // simulator of the same world beside each replica.
    std::fs::write(
        run.override_file(),
        format!(
            "services:\n  postgres:\n    image: {postgres_image}\n  convsync-a:\n    \
             image: {tag}\n  convsync-b:\n    image: {tag}\n{sim_a}{sim_b}",
            tag = run.tag,
            sim_a = simulator_service("simulator-a", "convsync-a", &run.tag, &simulator, 2),
            sim_b = simulator_service("simulator-b", "convsync-b", &run.tag, &simulator, 2),
        ),
    )
    .unwrap();

    let (port_a, port_b) = (free_port().to_string(), free_port().to_string());
    let ports = [
        ("CONVSYNC_HEALTH_PORT_A", port_a.as_str()),
        ("CONVSYNC_HEALTH_PORT_B", port_b.as_str()),
    ];
    run.run_section("compose-prepare", &[("SPRUCE_TOKEN", &site.token(0))]);
    // The second organization's secret, installed like the first; the configuration
    // names each source's file, as the docs' example does.
    let second = run.checkout().join("deploy/docker/secrets/spruce_clinic_b");
    std::fs::write(&second, site.token(1)).unwrap();
    std::fs::set_permissions(&second, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let config = site.sources_text(&format!("http://127.0.0.1:{SIM_PORT}/"), |i| {
        let file = ["spruce_api_token", "spruce_clinic_b"][i];
        format!("{{ file = \"/run/secrets/{file}\" }}")
    });
    std::fs::write(run.checkout().join("deploy/docker/convsync.toml"), config).unwrap();
    let password = format!("pw-{}", std::process::id());
    let mut env = vec![
        ("DB_PASSWORD", password.as_str()),
        ("CONVSYNC_BINARY", &binary),
    ];
    env.extend(ports);
    run.run_section("compose-replicas", &env);

    // Both replicas ready; the mirror holds exactly the simulator's conversations.
    let client = reqwest::Client::new();
    for port in [&port_a, &port_b] {
        let readyz = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + PATIENCE;
        while !client
            .get(&readyz)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "{readyz} never turned healthy");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let truth = site.visible_ids().await;
    let mirrored = || -> Vec<String> {
        run.psql(
            "SELECT conversation_id FROM conversations WHERE deleted_at IS NULL \
             ORDER BY conversation_id",
        )
        .into_iter()
        .map(|mut row| row.remove(0))
        .collect()
    };
    wait_until("the mirror to hold the simulator's conversations", || {
        mirrored() == truth
    });

    // Two scopes, two replicas: one lease each (a replica alone first holds both, then
    // gives one up to the one that joins).
    wait_until("the leases to be split between the replicas", || {
        let owners: Vec<String> = run.owners().into_values().collect();
        owners.len() == 2 && owners.contains(&A.to_owned()) && owners.contains(&B.to_owned())
    });
    let scope_a = run
        .owners()
        .into_iter()
        .find(|(_, owner)| owner == A)
        .unwrap()
        .0;

    // SIGTERM to mirror-a: exit 0 after releasing its lease ("lease released"); mirror-b
    // claims it after that, under the next epoch.
    let container_a = run.container("convsync-a");
    let finished = watch(&container_a);
    let stop = Command::new("docker")
        .args(["stop", "--time", "60", &container_a])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", text(&stop));
    let (exit, logs_a) = finished();
    assert_eq!(
        exit, "0",
        "mirror-a did not exit cleanly on SIGTERM:\n{logs_a}"
    );
    let released = *lease_events(&logs_a, "lease released", &scope_a)
        .last()
        .unwrap_or_else(|| panic!("mirror-a released no lease on {scope_a}:\n{logs_a}"));
    wait_until("mirror-b to claim mirror-a's scope", || {
        run.owners().values().all(|owner| owner == B)
    });
    let logs_b = text(
        &Command::new("docker")
            .args(["logs", &run.container("convsync-b")])
            .output()
            .unwrap(),
    );
    let claimed = *lease_events(&logs_b, "lease claimed; running its sources", &scope_a)
        .last()
        .unwrap_or_else(|| panic!("mirror-b claimed nothing on {scope_a}:\n{logs_b}"));
    assert_eq!(
        claimed.epoch,
        released.epoch + 1,
        "{released:?} {claimed:?}"
    );
    assert!(claimed.at >= released.at, "{released:?} {claimed:?}");
    let released_to_claimed = (claimed.at - released.at).as_seconds_f64();
    // mirror-b alone keeps the mirror complete and ready.
    wait_until("mirror-b to keep the mirror complete", || {
        mirrored() == truth
    });
    let readyz_b = format!("http://127.0.0.1:{port_b}/readyz");
    assert!(
        client
            .get(&readyz_b)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );

    // `down`: mirror-b ends with exit 0, then nothing is left.
    let container_b = run.container("convsync-b");
    let finished = watch(&container_b);
    run.run_section("compose-replicas-down", &ports);
    let (exit, logs) = finished();
    assert_eq!(exit, "0", "mirror-b did not exit cleanly on down:\n{logs}");
    assert!(logs.contains("convsync stopped"), "{logs}");
    let left = run.compose(&["ps", "-q"]);
    assert_eq!(text(&left).trim(), "", "down left a container");
    eprintln!(
        "compose replicas: {} conversations in 2 scopes mirrored, leases split, scope {scope_a} \
         released by mirror-a and claimed by mirror-b {released_to_claimed:.1} s later; \
         {:.0} s in all",
        truth.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The tag of the PostgreSQL image tests/postgres-image.sh builds (or finds).
pub(super) fn run_image_script() -> String {
    let output = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/postgres-image.sh"
    ))
    .stderr(Stdio::inherit())
    .output()
    .unwrap();
    assert!(output.status.success(), "tests/postgres-image.sh failed");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
