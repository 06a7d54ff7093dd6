//! The documented systemd install, for real: a Debian machine whose PID 1 is systemd
//! (a container booted from an image debootstrapped here, tests/systemd-image.sh) gets the
//! .deb built by deploy/debian/build-deb.sh through the commands of docs/deploy.md's
//! marked section, run verbatim. Then: `Type=notify` start, a sync from the bundled
//! simulator in the same machine (loopback only: the container has no network), `/readyz`
//! healthy, a clean restart, the watchdog restarting a wedged (SIGSTOPped) daemon, a 0600
//! database in /var/lib/convsync, `systemd-analyze security` rated OK, the installed bash
//! completion in real bash, an upgrade to a newer package that keeps database and
//! configuration, a clean stop, `remove` keeping data and `purge` deleting it out loud.
//! Then, on the purged machine, the "Install without the package" section: its build block
//! runs in this checkout on the host (the machine has no Rust), its install block in the
//! machine as one script, verbatim, from a copy of the checkout at the same path; the
//! service is checked the same way (notify start, sync, `/readyz`, 0600 database, clean
//! restart and stop).
//!
//! Needs a Docker engine, debootstrap and cargo-deb (.ci/run installs them). Without them
//! the test is skipped with a message, unless `CI` is set: then it fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::deploy::{checkout_files, documented_steps};

/// Hang guard for waits; never a performance threshold. The watchdog wait covers the
/// unit's WatchdogSec=60s plus RestartSec=10s.
const PATIENCE: Duration = Duration::from_secs(240);
/// Where the simulator serves Spruce inside the machine.
const SPRUCE_PORT: u16 = 18480;
/// The names of docs/deploy.md's marked sections (`<!-- NAME:` … `<!-- end NAME -->`):
/// the package install, and the build and install of "Install without the package".
const DOC_PACKAGE: &str = "systemd-install";
const DOC_BUILD: &str = "systemd-build";
const DOC_MANUAL: &str = "systemd-install-manual";

pub(super) fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `command`; panics with its output unless it succeeds; returns stdout.
pub(super) fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Why the test cannot run on this machine, if it cannot.
pub(super) fn missing_prerequisite() -> Option<String> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works("docker", &["info"]) {
        return Some("no Docker engine".into());
    }
    if !works("debootstrap", &["--version"]) {
        return Some("debootstrap is missing (apt-get install debootstrap)".into());
    }
    if !works("cargo", &["deb", "--version"]) {
        return Some("cargo-deb is missing (cargo install cargo-deb)".into());
    }
    None
}

/// Builds the package with the project's script and copies it into `into` (cargo-deb
/// deletes older builds of the package from its output directory); returns that copy.
pub(super) fn build_deb(skip_build: bool, cargo_deb_args: &[&str], into: &Path) -> PathBuf {
    // One build at a time: cargo-deb writes every build to the same path and deletes the
    // older ones there, so two tests building at once would read each other's half files.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut command = Command::new(repo("deploy/debian/build-deb.sh"));
    command.args(cargo_deb_args);
    if skip_build {
        command.env("CONVSYNC_SKIP_BUILD", "1");
    }
    let stdout = run(&mut command);
    let built = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        built.is_file(),
        "build-deb.sh printed {stdout:?}, not a package"
    );
    let path = into.join(built.file_name().unwrap());
    std::fs::copy(&built, &path).unwrap();
    path
}

/// A booted container with systemd as PID 1.
pub(super) struct Machine {
    pub(super) name: String,
}

impl Machine {
    /// A machine with no network but its own loopback.
    fn boot(image: &str) -> Machine {
        Machine::boot_on(
            image,
            &format!("convsync-systemd-it-{}", std::process::id()),
            "none",
        )
    }

    /// A machine named `name` (also its host name) on the Docker network `network`.
    pub(super) fn boot_on(image: &str, name: &str, network: &str) -> Machine {
        let name = name.to_owned();
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        // The capabilities systemd needs for the unit's sandbox (mount namespaces,
        // credentials on ramfs); `--privileged` would also ask for ones a nested engine
        // may not have. Docker makes every mount private, while a booted host shares `/`
        // (LoadCredential= moves its ramfs into place through that): the entry point
        // restores that before handing over to systemd.
        run(Command::new("docker").args([
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            network,
            "--hostname",
            &name,
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "SYS_PTRACE",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "SYS_NICE",
            "--cap-add",
            "IPC_LOCK",
            "--cap-add",
            "DAC_READ_SEARCH",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--volume",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--env",
            "container=docker",
            image,
            "/bin/sh",
            "-c",
            "mount --make-rshared / && exec /lib/systemd/systemd",
        ]));
        let machine = Machine { name };
        // PID 1 is sh until it has made `/` shared; then systemd boots. `degraded` (some
        // unit of the image failed) is fine as long as convsync's own steps succeed.
        let mut state = String::new();
        machine.wait_until("systemd to finish booting", |m| {
            state = m.exec("systemctl is-system-running", &[]).stdout_text();
            !matches!(state.trim(), "" | "offline" | "initializing" | "starting")
        });
        assert!(
            matches!(state.trim(), "running" | "degraded"),
            "systemd did not boot: {state:?}\n{}",
            machine
                .exec("systemctl --failed --no-pager", &[])
                .stdout_text()
        );
        machine
    }

    /// Runs `script` with bash in the machine, as root, with `env` set.
    pub(super) fn exec(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new("docker");
        command.arg("exec");
        for (key, value) in env {
            command.args(["--env", &format!("{key}={value}")]);
        }
        command
            .args([&self.name, "bash", "-euo", "pipefail", "-c", script])
            .output()
            .unwrap()
    }

    /// Like [`Machine::exec`] without environment; panics unless it succeeds.
    pub(super) fn sh(&self, script: &str) -> String {
        let output = self.exec(script, &[]);
        assert!(
            output.status.success(),
            "in the machine: {script}\nfailed ({}):\n{}\n{}",
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    pub(super) fn write(&self, path: &str, contents: &str) {
        let mut child = Command::new("docker")
            .args([
                "exec",
                "-i",
                &self.name,
                "sh",
                "-c",
                &format!("cat > {path}"),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(contents.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "writing {path}");
    }

    pub(super) fn copy_in(&self, host: &Path, dir: &str) {
        self.sh(&format!("mkdir -p {dir}"));
        run(Command::new("docker").args([
            "cp",
            &host.display().to_string(),
            &format!("{}:{dir}/", self.name),
        ]));
    }

    /// One property of the convsync unit.
    pub(super) fn property(&self, name: &str) -> String {
        self.sh(&format!(
            "systemctl show --property={name} --value convsync"
        ))
        .trim()
        .to_owned()
    }

    /// Waits until `done` holds, polling once a second; panics after [`PATIENCE`].
    pub(super) fn wait_until(&self, what: &str, mut done: impl FnMut(&Machine) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}\n{}",
                self.journal()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    pub(super) fn journal(&self) -> String {
        self.exec(
            "journalctl --no-pager -o short-precise -u convsync -u convsync-simulator | tail -n 60",
            &[],
        )
        .stdout_text()
    }

    /// Conversations of source `clinic` in the mirror, read as docs/deploy.md says.
    fn mirrored_rows(&self) -> u64 {
        let count = self.sh("sqlite3 -readonly /var/lib/convsync/convsync.db \
             \"SELECT count(*) FROM conversations WHERE source = 'clinic'\"");
        count
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a row count: {count:?}"))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- journal of the machine ---\n{}", self.journal());
        }
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

pub(super) trait StdoutText {
    fn stdout_text(&self) -> String;
}

impl StdoutText for Output {
    fn stdout_text(&self) -> String {
        text(&self.stdout)
    }
}

/// The value after `prefix` up to the next `"` or `'` on the first line holding it.
fn quoted_after<'a>(banner: &'a str, prefix: &str) -> &'a str {
    let start = banner
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix} not in the simulator's banner:\n{banner}"))
        + prefix.len();
    let rest = &banner[start..];
    &rest[..rest.find(['"', '\'']).unwrap_or(rest.len())]
}

#[test]
fn documented_debian_install_runs_under_systemd() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but the systemd install test cannot run: {why}");
        }
        eprintln!("SKIPPED deploy::systemd: {why}; set CI=1 to make this a failure");
        return;
    }
    let packages = tempfile::tempdir().unwrap();
    let package = build_deb(false, &[], packages.path());
    let newer = build_deb(true, &["--deb-revision", "2"], packages.path());
    let image = run(&mut Command::new(repo("tests/systemd-image.sh")));
    let machine = Machine::boot(image.trim());
    machine.copy_in(&package, "/root/install");
    machine.copy_in(&newer, "/root/upgrade");

    // The bundled simulator, from the package's own binary, on the machine's loopback.
    machine.sh(&format!(
        "dpkg-deb -x /root/install/convsync_*.deb /opt/simulator
         systemd-run --unit convsync-simulator --property DynamicUser=yes \
           /opt/simulator/usr/bin/convsync simulate --seed 8 --spruce-port {SPRUCE_PORT} \
           --d365-accounts 0 --sinch-accounts 0 --highlevel-locations 0 \
           --conversations 40 --activity-rate 0"
    ));
    let mut banner = String::new();
    machine.wait_until("the simulator's banner", |m| {
        banner = m.sh("journalctl --no-pager -o cat -u convsync-simulator");
        banner.contains("export SIM_SPRUCE_API_TOKEN_0=")
    });
    let organization = quoted_after(&banner, "organization_id = \"");
    let token = quoted_after(&banner, "export SIM_SPRUCE_API_TOKEN_0='");
    machine.write(
        "/root/install/convsync.toml",
        &format!(
            r#"[[sources]]
name = "clinic"
provider = "spruce"
poll_interval = "10s"

[sources.spruce]
base_url = "http://127.0.0.1:{SPRUCE_PORT}/"
organization_id = "{organization}"
api_token = {{ credential = "convsync_spruce-token" }}
track_reply_state = false
"#
        ),
    );

    // docs/deploy.md, verbatim.
    for step in documented_steps(DOC_PACKAGE) {
        eprintln!("$ {step}");
        let output = machine.exec(
            &format!("cd /root/install\n{step}"),
            &[("SPRUCE_TOKEN", token)],
        );
        eprint!("{}{}", text(&output.stdout), text(&output.stderr));
        assert!(
            output.status.success(),
            "documented step failed ({}): {step}\n{}",
            output.status,
            machine.journal()
        );
    }
    let rows = service_started_and_synced(&machine);
    restart_is_clean(&machine);

    // A wedged daemon stops sending WATCHDOG=1; systemd kills and restarts it.
    let wedged = machine.property("MainPID");
    machine.sh(&format!("kill -STOP {wedged}"));
    machine.wait_until("the watchdog restart", |m| {
        let pid = m.property("MainPID");
        pid != wedged && pid != "0" && m.property("SubState") == "running"
    });
    assert_eq!(machine.property("NRestarts"), "1");
    let journal = machine.sh("journalctl --no-pager -o cat -u convsync");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    // Levels filter, as "Where things live" says: the info lines are not warnings.
    let warnings = machine.sh("journalctl -u convsync -p warning --no-pager -o cat");
    assert!(
        journal.contains("convsync stopped") && !warnings.contains("convsync stopped"),
        "{warnings}"
    );

    let security = machine.sh("systemd-analyze security --no-pager convsync.service");
    let verdict = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no verdict in:\n{security}"));
    assert!(
        [" OK", " SAFE", " PERFECT"]
            .iter()
            .any(|v| verdict.contains(v)),
        "{verdict}"
    );

    // The packaged completion, loaded by real bash, completes a subcommand; the pages are there.
    let completed = machine.sh(
        "bash -c 'source /usr/share/bash-completion/completions/convsync; \
         COMP_WORDS=(convsync sy); COMP_CWORD=1; _convsync convsync sy convsync; \
         echo ${COMPREPLY[@]}'",
    );
    assert_eq!(completed.trim(), "sync");
    machine.sh("test -s /usr/share/man/man1/convsync.1.gz && test -s /usr/share/man/man1/convsync-run.1.gz");

    // Upgrade: newer package, same database and configuration, service restarted on it.
    let config = machine.sh("sha256sum /etc/convsync/convsync.toml");
    let before = machine.property("MainPID");
    machine.sh("cd /root/upgrade && apt install ./convsync_*_amd64.deb");
    assert!(
        machine
            .sh("dpkg-query --show --showformat='${Version}' convsync")
            .ends_with("-2"),
        "the newer package is installed"
    );
    assert_eq!(machine.sh("sha256sum /etc/convsync/convsync.toml"), config);
    assert_ne!(
        machine.property("MainPID"),
        before,
        "restarted on the new binary"
    );
    assert_eq!(machine.property("ActiveState"), "active");
    assert!(machine.mirrored_rows() >= rows);
    stop_is_clean(&machine);

    // remove keeps the data; purge deletes it and says what it deletes.
    let removed = machine.sh("apt-get remove --yes convsync 2>&1");
    assert!(removed.contains("kept /etc/convsync"), "{removed}");
    machine.sh("test -s /var/lib/private/convsync/convsync.db && test -s /etc/convsync/convsync.toml && test -s /etc/convsync/credentials/spruce-token");
    let purged = machine.sh("apt-get purge --yes convsync 2>&1");
    for path in ["/var/lib/private/convsync", "/etc/convsync"] {
        assert!(purged.contains(&format!("removing {path}")), "{purged}");
        machine.sh(&format!("! test -e {path}"));
    }
    // Nothing of the package is left for the install by hand to lean on.
    machine.sh(
        "! dpkg-query --show convsync 2>/dev/null && ! test -e /usr/bin/convsync \
         && ! test -e /usr/lib/systemd/system/convsync.service \
         && ! test -e /usr/share/bash-completion/completions/convsync",
    );

    install_without_the_package(&machine, token);
    service_started_and_synced(&machine);
    restart_is_clean(&machine);
    stop_is_clean(&machine);
}

/// "Install without the package", as docs/deploy.md writes it: the build block in this
/// checkout (on the host, where Rust is), then the install block in the machine, in a
/// copy of the checkout at the same path holding the built binary at the printed path and
/// the machine's `convsync.toml`.
fn install_without_the_package(machine: &Machine, token: &str) {
    let checkout = repo("");
    let checkout = checkout.to_str().unwrap().trim_end_matches('/');
    let build = documented_steps(DOC_BUILD).join("\n");
    eprintln!("$ {build}");
    let binary = run(Command::new("bash")
        .current_dir(checkout)
        .args(["-euo", "pipefail", "-c"])
        .arg(format!("{build}\nprintf %s \"$binary\"")));
    assert!(
        Path::new(&binary).is_file() && !binary.contains('\''),
        "the build block left no binary at {binary:?}"
    );

    // The checkout's files and the binary.
    let files = checkout_files();
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), files.join("\n")).unwrap();
    let mut tar = Command::new("tar")
        .current_dir(checkout)
        .arg("-c")
        .arg("--files-from")
        .arg(list.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    machine.sh(&format!("mkdir -p '{checkout}'"));
    let unpacked = Command::new("docker")
        .args(["exec", "-i", &machine.name, "tar", "-x", "-C", checkout])
        .stdin(tar.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(tar.wait().unwrap().success() && unpacked.success());
    machine.copy_in(
        Path::new(&binary),
        Path::new(&binary).parent().unwrap().to_str().unwrap(),
    );
    machine.sh(&format!(
        "cp /root/install/convsync.toml '{checkout}/convsync.toml'"
    ));

    let install = documented_steps(DOC_MANUAL).join("\n");
    eprintln!("$ {install}");
    let output = machine.exec(
        &format!("cd '{checkout}'\nbinary='{binary}'\n{install}"),
        &[("SPRUCE_TOKEN", token)],
    );
    eprint!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "the documented install without the package failed ({})\n{}",
        output.status,
        machine.journal()
    );
    assert_eq!(
        machine.property("FragmentPath"),
        "/etc/systemd/system/convsync.service"
    );
}

/// After `enable --now`: a `Type=notify` unit that returned after READY=1 with our status
/// line, `/readyz` healthy once the simulator's conversations are mirrored, and the
/// database 0600 in the state directory, owned by the dynamic user. Returns the rows.
fn service_started_and_synced(machine: &Machine) -> u64 {
    assert_eq!(machine.property("Type"), "notify");
    let status = machine.sh("systemctl status convsync --no-pager || true");
    assert!(status.contains("active (running)"), "{status}");
    assert!(
        machine.property("StatusText").contains("syncing 1 source"),
        "{status}"
    );
    machine.wait_until("/readyz healthy", |m| {
        m.exec("convsync health --config /etc/convsync/convsync.toml", &[])
            .status
            .success()
    });
    let rows = machine.mirrored_rows();
    assert!(rows > 0, "nothing mirrored");
    // The status command of "Where things live", as root from a shell.
    let status = machine.sh(
        "sudo sh -c 'cd /var/lib/convsync && convsync status --config /etc/convsync/convsync.toml'",
    );
    assert!(status.contains(&format!("rows: {rows} (")), "{status}");

    assert_eq!(
        machine.sh("readlink /var/lib/convsync").trim(),
        "private/convsync"
    );
    let database = machine.sh("stat -c '%a %u' /var/lib/private/convsync/convsync.db");
    let (mode, owner) = database.trim().split_once(' ').unwrap();
    assert_eq!(mode, "600", "{database}");
    assert_ne!(owner, "0", "{database}");
    rows
}

/// A restart stops the running daemon cleanly (it logs its own clean end once more) and
/// starts a new one.
fn restart_is_clean(machine: &Machine) {
    let stopped = |m: &Machine| {
        m.sh("journalctl --no-pager -o cat -u convsync")
            .matches("convsync stopped")
            .count()
    };
    let clean_ends = stopped(machine);
    let before = machine.property("MainPID");
    machine.sh("systemctl restart convsync");
    assert_ne!(machine.property("MainPID"), before);
    assert_eq!(machine.property("ActiveState"), "active");
    machine.wait_until(
        "the clean end of the restarted daemon in the journal",
        |m| stopped(m) > clean_ends,
    );
}

/// A stop is clean: SIGTERM, the page in flight finished, exit 0.
fn stop_is_clean(machine: &Machine) {
    machine.sh("systemctl stop convsync");
    assert_eq!(machine.property("Result"), "success");
    assert_eq!(machine.property("ExecMainStatus"), "0");
}
