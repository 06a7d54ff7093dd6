//! A service user that may not read its configuration or a secret is told "permission
//! denied", with the path and its uid, not that the file does not exist: the layout the
//! old systemd instructions produced (a root-owned 0640 file in a 0750 directory) read by
//! an unprivileged user. As root the test drops to `nobody` with setpriv (util-linux);
//! otherwise it is that user already.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs convsync with `args` as an unprivileged user; returns the output and that uid.
fn run_unprivileged(args: &[&str]) -> (Output, u32) {
    let binary = env!("CARGO_BIN_EXE_convsync");
    if is_root() {
        let output = Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                binary,
            ])
            .args(args)
            .output()
            .expect("setpriv (util-linux) runs");
        (output, NOBODY)
    } else {
        // SAFETY: as above.
        let uid = unsafe { libc::geteuid() };
        (Command::new(binary).args(args).output().unwrap(), uid)
    }
}

/// A directory only its owner may enter, holding a file only its owner may read.
fn locked_layout(dir: &Path, file: &str, text: &str) -> std::path::PathBuf {
    let locked = dir.join("etc-convsync");
    std::fs::create_dir(&locked).unwrap();
    let path = locked.join(file);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mode = if is_root() { 0o750 } else { 0o000 };
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn unlock(path: &Path) {
    let dir = path.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The world can enter the temporary directory, so only the locked layout stands in the way.
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn unreadable_config_is_permission_denied_with_path_and_uid() {
    let dir = open_tempdir();
    let config = locked_layout(dir.path(), "convsync.toml", "[database]\n");
    let (output, uid) = run_unprivileged(&["check-config", "--config", config.to_str().unwrap()]);
    unlock(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
    assert!(stderr.contains(&format!("uid {uid}")), "{stderr}");
    assert!(!stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn unreadable_secret_file_is_permission_denied_with_path_and_uid() {
    let dir = open_tempdir();
    let token = locked_layout(dir.path(), "spruce-token", "spr_not_a_real_token\n");
    let config = dir.path().join("convsync.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[sources]]
name = "clinic"
provider = "spruce"

[sources.spruce]
base_url = "http://127.0.0.1:9/"
organization_id = "org_1"
api_token = {{ file = "{}" }}
"#,
            token.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (output, uid) = run_unprivileged(&["check-config", "--config", config.to_str().unwrap()]);
    unlock(&token);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(stderr.contains(&token.display().to_string()), "{stderr}");
    assert!(stderr.contains(&format!("uid {uid}")), "{stderr}");
    assert!(!stderr.contains("spr_not_a_real_token"), "{stderr}");
}
