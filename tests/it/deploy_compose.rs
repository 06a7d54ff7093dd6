//! deploy/docker/compose.yaml is accepted by the Compose found on the machine: Debian's
//! `docker-compose` 1.29 (the Python one) and/or the `docker compose` plugin. Only the
//! file is validated (`config`); building the image needs registry access, and the
//! container itself is tested by `deploy_container`.
//!
//! Without any Compose the test is skipped with a message, unless `CI` is set.

use std::process::Command;

const COMPOSE_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker/compose.yaml");

/// Each Compose on the machine, as the program and arguments that run it.
fn composes() -> Vec<Vec<&'static str>> {
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
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but neither docker-compose nor `docker compose` is installed"
        );
        eprintln!(
            "SKIPPED compose_file_is_valid_for_every_installed_compose: no Compose installed"
        );
        return;
    }
    for compose in found {
        let output = Command::new(compose[0])
            .args(&compose[1..])
            .args(["-p", "convsync", "-f", COMPOSE_FILE, "config", "-q"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} refuses {COMPOSE_FILE}:\n{}",
            compose.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
