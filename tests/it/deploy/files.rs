//! The deploy/ artifacts themselves: the systemd unit passes systemd's own checks, and the
//! Dockerfile keeps the shape that lets the offline build reuse its runtime stage.

use std::path::Path;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The runtime stage of deploy/docker/Dockerfile: from the marker to the end.
fn runtime_stage() -> String {
    let dockerfile = std::fs::read_to_string(repo("deploy/docker/Dockerfile")).unwrap();
    let start = dockerfile
        .find("\n# ---- runtime stage")
        .expect("the runtime stage marker build-offline.sh cuts at");
    dockerfile[start + 1..].to_owned()
}

/// `systemd-analyze verify` finds nothing in convsync.service and `systemd-analyze
/// security` rates it OK or better (skipped without systemd-analyze unless CI is set).
#[test]
fn systemd_unit_passes_verify_and_security() {
    let available = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !available {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but systemd-analyze is missing: apt-get install systemd"
        );
        eprintln!(
            "SKIPPED systemd_unit_passes_verify_and_security: systemd-analyze is not installed"
        );
        return;
    }
    let output = std::process::Command::new(repo("deploy/systemd/check.sh"))
        .arg(env!("CARGO_BIN_EXE_convsync"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Overall exposure level"), "{stdout}");
}

/// The unit declares what the service relies on: readiness and watchdog notifications,
/// graceful SIGTERM, the state directory for the database and credentials for secrets.
#[test]
fn systemd_unit_declares_notify_watchdog_state_and_credentials() {
    let unit = std::fs::read_to_string(repo("deploy/systemd/convsync.service")).unwrap();
    for line in [
        "Type=notify",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
        "StateDirectory=convsync",
        "DynamicUser=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l.trim() == line), "missing {line}");
    }
    assert!(unit.lines().any(|l| l.starts_with("WatchdogSec=")));
    assert!(unit.lines().any(|l| l.starts_with("LoadCredential=")));
}

/// The runtime stage is last, pulls nothing, needs no shell (the image is `scratch`), runs
/// as the unprivileged user, and carries the health check, stop signal and volume.
#[test]
fn dockerfile_runtime_stage_is_self_contained() {
    let stage = runtime_stage();
    let instructions: Vec<&str> = stage
        .lines()
        .map(str::trim_start)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with('#')
                && l.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        })
        .collect();
    let froms: Vec<&&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms,
        [&"FROM scratch AS runtime"],
        "one stage, from scratch"
    );
    assert!(
        instructions.iter().all(|l| !l.starts_with("RUN ")),
        "scratch has no shell to RUN in"
    );
    for copy in instructions.iter().filter(|l| l.starts_with("COPY ")) {
        assert!(
            copy.contains("--from=rootfs "),
            "the offline build supplies only the rootfs stage: {copy}"
        );
    }
    for expected in [
        "USER 10001:10001",
        "STOPSIGNAL SIGTERM",
        "VOLUME [\"/var/lib/convsync\"]",
        "ENTRYPOINT [\"/usr/local/bin/convsync\"]",
    ] {
        assert!(instructions.contains(&expected), "missing {expected}");
    }
    assert!(stage.contains("CMD [\"/usr/local/bin/convsync\", \"health\"]"));
    assert!(instructions.iter().any(|l| l.starts_with("HEALTHCHECK ")));
}

/// Both builds assemble the image files with the same script.
#[test]
fn both_image_builds_share_rootfs_script() {
    let dockerfile = std::fs::read_to_string(repo("deploy/docker/Dockerfile")).unwrap();
    let offline = std::fs::read_to_string(repo("deploy/docker/build-offline.sh")).unwrap();
    assert!(dockerfile.contains("deploy/docker/rootfs.sh /rootfs"));
    assert!(offline.contains("\"$here/rootfs.sh\""));
    assert!(
        offline.contains("'^# ---- runtime stage'"),
        "the offline build cuts at the Dockerfile's marker"
    );
}

/// The image's `org.opencontainers.image.source` comes from a real address or is left
/// off: Cargo.toml's `repository` first, else an https `origin` (without the user name or
/// token a clone URL may carry), never an ssh remote or a placeholder.
#[test]
fn image_source_label_is_a_real_address_or_absent() {
    let source_of = |manifest: &str, origin: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), manifest).unwrap();
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .output()
                .unwrap()
                .status;
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "--quiet"]);
        if let Some(url) = origin {
            git(&["remote", "add", "origin", url]);
        }
        let output = std::process::Command::new(repo("deploy/docker/oci-source.sh"))
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let with_key = "[package]\nname = \"x\"\nrepository = \"https://git.example.org/convsync\"\n\n[dependencies]\n";
    let without_key = "[package]\nname = \"x\"\n\n[dependencies]\nrepository = \"no\"\n";
    let https = Some("https://git.example.org/fork.git");
    assert_eq!(
        source_of(with_key, https),
        "https://git.example.org/convsync\n"
    );
    assert_eq!(
        source_of(without_key, https),
        "https://git.example.org/fork.git\n"
    );
    assert_eq!(
        source_of(
            without_key,
            Some("https://ci:s3cret-token@git.example.org/fork.git")
        ),
        "https://git.example.org/fork.git\n"
    );
    assert_eq!(
        source_of(without_key, Some("git@git.example.org:fork.git")),
        ""
    );
    assert_eq!(source_of(without_key, None), "");
}
