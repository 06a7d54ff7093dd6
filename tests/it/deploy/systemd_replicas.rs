//! docs/deploy.md's "systemd on two hosts", for real: two machines booted with systemd as
//! PID 1 (the image of tests/systemd-image.sh), a PostgreSQL server (the image of
//! tests/postgres-image.sh, standing in for the docs' `db.example.internal`, under that
//! name) and the bundled simulator as further containers, all on a Docker network created
//! `--internal` (no route out). On each host the documented `systemd-replica` block runs
//! verbatim (database password credential and the replica-name drop-in), then the package
//! install block `systemd-install`, whose `enable --now` starts the replica.
//!
//! The simulator serves two Spruce organizations (two rate-limit scopes) on the network;
//! convsync accepts plain http on loopback only, so each host forwards its loopback port to
//! it with systemd's own `systemd-socket-proxyd` (test only: a real provider is https).
//!
//! Proven: both services active, the leases split between `mirror-a` and `mirror-b`, the
//! mirror equal to the simulator's conversations; `systemctl stop convsync` on host A
//! releases its lease and host B claims it afterwards (next epoch, both read from the
//! journals) and keeps syncing; after host A is started again and has its share back,
//! `docker kill` of host A (a lost host: nothing released) leaves B to claim A's scope
//! only once the lease expired.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use super::compose_replicas::run_image_script;
use super::systemd::{Machine, StdoutText as _, build_deb, missing_prerequisite, repo, run};
use crate::support::deploy::{
    LEASE_OWNERS, LeaseEvent, SpruceSite, documented_steps, lease_events, lease_owners, psql_args,
    psql_rows, simulate_args, wait_until,
};

/// Where the simulator serves Spruce, on the network and on each host's loopback.
const SPRUCE_PORT: u16 = 18480;
/// The host name of the database server in docs/deploy.md's configuration.
const DB_HOST: &str = "db.example.internal";
const DOC_REPLICA: &str = "systemd-replica";
const DOC_PACKAGE: &str = "systemd-install";

/// Containers and the network of the test, removed when it ends, however it ends.
struct Infra {
    network: String,
    containers: Vec<String>,
}

impl Infra {
    fn network(name: &str) -> Infra {
        let _ = Command::new("docker")
            .args(["network", "rm", name])
            .output();
        run(Command::new("docker").args(["network", "create", "--internal", name]));
        Infra {
            network: name.to_owned(),
            containers: Vec::new(),
        }
    }

    /// `docker run --detach --name NAME --network THIS ARGS…`.
    fn start(&mut self, name: &str, args: &[&str]) {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
        run(Command::new("docker")
            .args([
                "run",
                "--detach",
                "--name",
                name,
                "--network",
                &self.network,
            ])
            .args(args));
        self.containers.push(name.to_owned());
    }
}

impl Drop for Infra {
    fn drop(&mut self) {
        for container in &self.containers {
            if std::thread::panicking() {
                let logs = Command::new("docker")
                    .args(["logs", "--tail", "40", container])
                    .output();
                if let Ok(logs) = logs {
                    eprintln!(
                        "--- {container} ---\n{}{}",
                        logs.stdout_text(),
                        String::from_utf8_lossy(&logs.stderr)
                    );
                }
            }
            let _ = Command::new("docker")
                .args(["rm", "-f", container])
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

/// One query on the server, as its own user over its socket; `|`-separated rows.
fn psql(server: &str, query: &str) -> Vec<Vec<String>> {
    psql_rows(&run(Command::new("docker")
        .args(["exec", server])
        .args(psql_args(query))))
}

/// Each scope's lease holder (empty when unowned).
fn owners(server: &str) -> BTreeMap<String, String> {
    lease_owners(psql(server, LEASE_OWNERS))
}

/// Whether both replicas hold one scope each; the scope `mirror-a` holds, if so.
fn split(server: &str) -> Option<String> {
    let owners = owners(server);
    let on = |name: &str| {
        owners
            .iter()
            .find(|(_, o)| *o == name)
            .map(|(s, _)| s.clone())
    };
    let a = on("mirror-a")?;
    on("mirror-b")?;
    (owners.len() == 2).then_some(a)
}

/// The lease events of `message` on `scope` in the journal of the host's convsync.
fn journal_events(host: &Machine, message: &str, scope: &str) -> Vec<LeaseEvent> {
    lease_events(
        &host.sh("journalctl --no-pager -o cat -u convsync"),
        message,
        scope,
    )
}

/// The server's clock now.
fn now(server: &str) -> String {
    psql(server, "SELECT clock_timestamp()")[0][0].clone()
}

const CLAIMED: &str = "lease claimed; running its sources";

#[test]
fn documented_replicas_on_two_systemd_hosts_share_and_fail_over() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but the two-host systemd test cannot run: {why}");
        }
        eprintln!("SKIPPED deploy::systemd_replicas: {why}; set CI=1 to make this a failure");
        return;
    }
    let started = Instant::now();
    let packages = tempfile::tempdir().unwrap();
    let package = build_deb(false, &[], packages.path());
    let machine_image = run(&mut Command::new(repo("tests/systemd-image.sh")));
    let postgres_image = run_image_script();
    let simulator = crate::support::deploy::static_binary(&[]);
    // The simulator's world, known to the test: same seed and options as the container's.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let site = runtime.block_on(SpruceSite::start_organizations(
        40,
        2,
        std::net::Ipv4Addr::LOCALHOST.into(),
    ));
    let truth = runtime.block_on(site.visible_ids());

    let id = std::process::id();
    let mut infra = Infra::network(&format!("convsync-it-hosts-{id}"));
    let password = format!("pw-{id}");
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("postgres_password");
    std::fs::write(&password_file, &password).unwrap();
    std::fs::set_permissions(
        &password_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o444),
    )
    .unwrap();
    let server = format!("convsync-it-db-{id}");
    infra.start(
        &server,
        &[
            "--network-alias",
            DB_HOST,
            "--env",
            "POSTGRES_USER=convsync",
            "--env",
            "POSTGRES_DB=mirror",
            "--env",
            "POSTGRES_PASSWORD_FILE=/run/secrets/postgres_password",
            "--volume",
            &format!(
                "{}:/run/secrets/postgres_password:ro",
                password_file.display()
            ),
            &postgres_image,
        ],
    );
    let simulator_name = format!("convsync-it-sim-{id}");
    let simulate = simulate_args(SPRUCE_PORT, 2, "0.0.0.0");
    infra.start(
        &simulator_name,
        &[
            "--user",
            "65534",
            "--volume",
            &format!("{simulator}:/usr/local/bin/convsync-sim:ro"),
            "--entrypoint",
            "/usr/local/bin/convsync-sim",
            &postgres_image,
        ]
        .into_iter()
        .chain(simulate.iter().map(String::as_str))
        .collect::<Vec<_>>(),
    );
    wait_until("the server to accept connections", || {
        Command::new("docker")
            .args([
                "exec",
                &server,
                "pg_isready",
                "--host",
                "127.0.0.1",
                "-U",
                "convsync",
                "-d",
                "mirror",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    });

    // The same configuration on both hosts: the shared server as the docs write it, two
    // organizations, each token a credential.
    let config = format!(
        "[database]\nurl = \"postgres://convsync@{DB_HOST}:5432/mirror\"\n\
         password = {{ credential = \"convsync_db-password\" }}\n\n{}",
        site.sources_text(&format!("http://127.0.0.1:{SPRUCE_PORT}/"), |i| {
            let name = ["spruce-token", "spruce-token-2"][i];
            format!("{{ credential = \"convsync_{name}\" }}")
        })
    );
    let replica_block = documented_steps(DOC_REPLICA).join("\n");
    let hosts: Vec<Machine> = ["mirror-a", "mirror-b"]
        .into_iter()
        .map(|replica| {
            let host = Machine::boot_on(
                machine_image.trim(),
                &format!("convsync-it-{replica}-{id}"),
                &infra.network,
            );
            host.copy_in(&package, "/root/install");
            host.write("/root/install/convsync.toml", &config);
            host.sh(&format!(
                "systemd-run --unit simulator-proxy \
                   --socket-property ListenStream=127.0.0.1:{SPRUCE_PORT} \
                   /lib/systemd/systemd-socket-proxyd {simulator_name}:{SPRUCE_PORT}"
            ));
            let env = [
                ("DB_PASSWORD", password.as_str()),
                ("REPLICA", replica),
                ("SPRUCE_TOKEN", &site.token(0)),
            ];
            // docs/deploy.md, verbatim: the replica block, then the package install (the
            // second organization's token is installed like the first, in between).
            eprintln!("[{replica}] $ {replica_block}");
            let output = host.exec(&format!("cd /root/install\n{replica_block}"), &env);
            assert!(
                output.status.success(),
                "{replica}: the systemd-replica block failed: {}{}",
                output.stdout_text(),
                String::from_utf8_lossy(&output.stderr)
            );
            let second = host.exec(
                "install -m 0600 /dev/stdin /etc/convsync/credentials/spruce-token-2 <<<\"$T\"",
                &[("T", &site.token(1))],
            );
            assert!(second.status.success(), "{replica}: the second token");
            for step in documented_steps(DOC_PACKAGE) {
                eprintln!("[{replica}] $ {step}");
                let output = host.exec(&format!("cd /root/install\n{step}"), &env);
                assert!(
                    output.status.success(),
                    "{replica}: documented step failed ({}): {step}\n{}{}\n{}",
                    output.status,
                    output.stdout_text(),
                    String::from_utf8_lossy(&output.stderr),
                    host.journal()
                );
            }
            host
        })
        .collect();
    let (a, b) = (&hosts[0], &hosts[1]);
    for host in [a, b] {
        assert_eq!(host.property("ActiveState"), "active");
    }
    let mirrored = || -> Vec<String> {
        psql(
            &server,
            "SELECT conversation_id FROM conversations WHERE deleted_at IS NULL \
             ORDER BY conversation_id",
        )
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect()
    };
    wait_until("the mirror to hold the simulator's conversations", || {
        mirrored() == truth
    });
    let mut split_scope = None;
    wait_until("the leases to be split between the hosts", || {
        split_scope = split(&server);
        split_scope.is_some()
    });
    let scope_a = split_scope.unwrap();

    // `systemctl stop` on host A: exit 0 after releasing its lease; B claims it afterwards,
    // under the next epoch, and keeps syncing it.
    let mark = now(&server);
    a.sh("systemctl stop convsync");
    assert_eq!(a.property("Result"), "success");
    assert_eq!(a.property("ExecMainStatus"), "0");
    let released = *journal_events(a, "lease released", &scope_a)
        .last()
        .expect("host A released its lease");
    wait_until("host B to hold every scope after the stop", || {
        owners(&server).values().all(|o| o == "mirror-b")
    });
    let claimed = *journal_events(b, CLAIMED, &scope_a)
        .last()
        .expect("host B claimed A's scope");
    assert_eq!(claimed.epoch, released.epoch + 1);
    assert!(claimed.at >= released.at, "{released:?} {claimed:?}");
    let after_stop = (claimed.at - released.at).as_seconds_f64();
    wait_until("host B to complete a cycle of A's former scope", || {
        psql(
            &server,
            &format!(
                "SELECT count(*) FROM sync_runs r JOIN leases l ON r.source = ANY(l.sources) \
                 WHERE l.scope = '{scope_a}' AND r.replica = 'mirror-b' \
                 AND r.started_at > '{mark}' AND r.finished_at IS NOT NULL \
                 AND r.outcome IN ('caught_up', 'more_to_do')"
            ),
        )[0][0]
            .parse::<u64>()
            .unwrap()
            > 0
    });

    // Host A back: the share is split again. Then host A is lost (SIGKILL of the whole
    // machine): nothing is released, and B can claim A's scope only once the lease has
    // expired, after the expiry A's last renewal set (no earlier than the one read here,
    // before the kill).
    a.sh("systemctl start convsync");
    let mut split_scope = None;
    wait_until("the leases to be split again", || {
        split_scope = split(&server);
        split_scope.is_some()
    });
    let scope_a = split_scope.unwrap();
    let lease = |what: &str| {
        psql(
            &server,
            &format!("SELECT {what} FROM leases WHERE scope = '{scope_a}'"),
        )[0][0]
            .clone()
    };
    let (epoch, expires) = (lease("epoch"), lease("expires_at"));
    let killed = now(&server);
    run(Command::new("docker").args(["kill", &a.name]));
    wait_until("host B to hold every scope after the loss of A", || {
        owners(&server).values().all(|o| o == "mirror-b")
    });
    assert_eq!(
        lease("epoch").parse::<i64>().unwrap(),
        epoch.parse::<i64>().unwrap() + 1
    );
    assert_eq!(
        lease(&format!("acquired_at >= '{expires}'")),
        "t",
        "claimed before the lost host's lease expired"
    );
    let after_kill = lease(&format!(
        "round(extract(epoch FROM acquired_at - '{killed}'::timestamptz), 1)"
    ));
    assert_eq!(b.property("ActiveState"), "active");
    wait_until("the mirror to stay complete", || mirrored() == truth);
    eprintln!(
        "systemd replicas: {} conversations in 2 scopes; after `systemctl stop` on A, B claimed \
         its scope {after_stop:.1} s after the release; after `docker kill` of A, {after_kill} s \
         after the kill; {:.0} s in all",
        truth.len(),
        started.elapsed().as_secs_f64()
    );
}
