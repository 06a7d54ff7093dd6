//! Runs the real `convsync` binary as the measured process: wall time and CPU seconds from
//! the kernel (`wait4`), peak RSS from its `/proc/<pid>/status` `VmHWM`.
//!
//! Not `ru_maxrss`: Linux keeps that figure across `execve`, so a child spawned by a large
//! parent reports the parent's footprint (the bench process holds whole pages in memory
//! for its limits; the first version of this harness reported 88 MiB that way).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// What one convsync process cost.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStats {
    /// From spawn to exit.
    pub wall: Duration,
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Peak resident set size (`VmHWM`, sampled every 10 ms until exit), in MiB.
    pub peak_rss_mib: f64,
    /// Exited with status 0.
    pub success: bool,
}

/// A convsync process started by [`spawn`].
pub struct Running {
    child: Child,
    started: Instant,
}

/// Starts `convsync <args> --config <config>` with its log in `log`.
pub fn spawn(bin: &Path, config: &Path, args: &[&str], log: &Path) -> anyhow::Result<Running> {
    spawn_with_env(bin, config, args, log, &[])
}

/// As [`spawn`], with `env` added to the environment (a replica's name).
pub fn spawn_with_env(
    bin: &Path,
    config: &Path,
    args: &[&str],
    log: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Running> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting convsync")?;
    Ok(Running {
        child,
        started: Instant::now(),
    })
}

impl Running {
    /// Asks the process to stop as an operator would (SIGTERM: the page in flight is
    /// committed, then it exits).
    pub fn terminate(&self) {
        // SAFETY: the pid is our child's and it is not reaped before `wait`.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// The process id (for readings from `/proc` while it runs).
    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Waits for the process (blocking) and returns its kernel-reported usage.
    pub fn wait(self) -> anyhow::Result<ProcessStats> {
        let pid = self.child.id() as libc::pid_t;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak_kib = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak_kib = peak_kib.max(vm_hwm_kib(pid).unwrap_or(0));
                    std::thread::sleep(Duration::from_millis(10));
                }
                peak_kib
            })
        };
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our unreaped child; status and usage point to live locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak_kib = sampler.join().unwrap_or(0);
        anyhow::ensure!(
            reaped == pid,
            "wait4 failed: {}",
            std::io::Error::last_os_error()
        );
        let wall = self.started.elapsed();
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Ok(ProcessStats {
            wall,
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
            peak_rss_mib: peak_kib as f64 / 1024.0,
            success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        })
    }
}

/// The process's peak RSS so far, in KiB (gone once it has exited).
pub fn vm_hwm_kib(pid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `convsync sync --once` to completion.
pub async fn sync_once(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<ProcessStats> {
    let running = spawn(bin, config, &["sync", "--once"], log)?;
    tokio::task::spawn_blocking(move || running.wait()).await?
}
