//! Several `convsync run` replicas sharing one PostgreSQL mirror of a simulated world: the
//! configuration every replica reads (the same file; only `CONVSYNC_REPLICAS__NAME`
//! differs), the replica processes with the signals an operator or a crash sends them, and
//! the proof read back from `sync_runs` and `leases` that no two replicas ever ran one
//! rate-limit scope at the same time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use convsync::sim_config::{SecretPlacement, SourceTuning, convsync_sources};
use convsync_sim::SimHandle;
use sqlx::PgPool;

use super::reliability::{BINARY, PATIENCE};

/// The configuration file the replicas share, with its secrets beside it.
pub struct ReplicaConfig {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ReplicaConfig {
    /// Every account of `sim` as a source (HighLevel through rotating OAuth refresh tokens),
    /// the mirror at `database_url`, `[replicas]` as given (e.g. `lease_ttl = "5s"`), every
    /// other setting at its default but the sources' schedule.
    pub fn write(
        sim: &SimHandle,
        database_url: &str,
        replicas: &str,
        tuning: &SourceTuning,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let generated = convsync_sources(
            sim,
            &SecretPlacement::Files(dir.path().join("secrets")),
            tuning,
        );
        generated.write_secret_files().unwrap();
        let text = format!(
            "[database]\nurl = \"{database_url}\"\n\n[replicas]\n{replicas}\n\n\
             [health]\nlisten = \"127.0.0.1:0\"\n\n{}",
            generated.toml
        );
        let path = dir.path().join("convsync.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        ReplicaConfig { dir, path }
    }

    /// Starts replica `name` (`convsync run`, its output in `logs/<name>-<n>.log`).
    pub fn spawn(&self, name: &str) -> Replica {
        let starts = std::fs::read_dir(self.dir.path().join("logs"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(name))
            })
            .count();
        let log = self
            .dir
            .path()
            .join("logs")
            .join(format!("{name}-{starts}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(BINARY)
            .args(["run", "--config"])
            .arg(&self.path)
            .env("CONVSYNC_REPLICAS__NAME", name)
            .env("RUST_LOG", "info")
            .env_remove("CONVSYNC_CONFIG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("convsync run starts");
        Replica {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The last `lines` lines of every replica log that mention a warning or an error.
    pub fn notable_log_lines(&self, lines: usize) -> String {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        let mut notable = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            notable.extend(
                text.lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .map(|l| format!("{name}: {l}")),
            );
        }
        notable[notable.len().saturating_sub(lines)..].join("\n")
    }
}

/// A running `convsync run` replica.
pub struct Replica {
    pub name: String,
    child: tokio::process::Child,
    pub log: PathBuf,
}

impl Replica {
    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().expect("the replica is running") as libc::pid_t;
        // SAFETY: kill has no memory effects; the pid is our unreaped child's.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal})");
    }

    /// Kills it with SIGKILL (no chance to release its leases) and reaps it.
    pub async fn sigkill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Freezes it (SIGSTOP): it holds its leases and connections but does nothing.
    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen replica run again (SIGCONT).
    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Stops it as an operator does (SIGTERM) and waits for the exit.
    pub async fn sigterm(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop after SIGTERM", self.name))
            .unwrap()
    }

    /// Waits up to `limit` for it to exit on its own; its exit status.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit on its own:\n{}", self.name, self.output()))
            .unwrap()
    }

    /// Whether it is still running (a crash shows up here).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }
}

/// One run of one scope's source, as `sync_runs` recorded it: who ran it under which
/// fencing token, and from its start to its last committed write.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScopeRun {
    pub scope: String,
    pub source: String,
    pub replica: String,
    pub epoch: i64,
    pub started_at: DateTime<Utc>,
    pub last_commit_at: DateTime<Utc>,
}

/// Every run that committed something under a lease, with the scope its source belongs to
/// (from `leases.sources`).
pub async fn scope_runs(pool: &PgPool) -> Vec<ScopeRun> {
    sqlx::query_as(
        "SELECT l.scope, r.source, r.replica, r.epoch::bigint AS epoch,
                r.started_at::timestamptz AS started_at,
                r.last_commit_at::timestamptz AS last_commit_at
         FROM sync_runs r JOIN leases l ON r.source = ANY (l.sources)
         WHERE r.last_commit_at IS NOT NULL AND r.epoch IS NOT NULL AND r.replica IS NOT NULL
         ORDER BY l.scope, r.started_at",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("reading sync_runs and leases: {e}"))
}

/// The time one epoch of one scope's lease was worked: its runs' first start to their last
/// commit.
#[derive(Debug, Clone, Copy)]
struct EpochSpan<'a> {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    replica: &'a str,
}

/// Every place where two holders of one scope's lease worked at the same time: per scope,
/// the span of each epoch (its runs' first start to their last commit) must end before the
/// next epoch's span starts, and epochs must follow each other in time. Runs of one epoch
/// belong to one holder, which runs a scope's sources one after another or side by side.
pub fn overlaps(runs: &[ScopeRun]) -> Vec<String> {
    let mut spans: BTreeMap<(&str, i64), EpochSpan<'_>> = BTreeMap::new();
    for run in runs {
        let span = spans
            .entry((run.scope.as_str(), run.epoch))
            .or_insert(EpochSpan {
                start: run.started_at,
                end: run.last_commit_at,
                replica: run.replica.as_str(),
            });
        span.start = span.start.min(run.started_at);
        span.end = span.end.max(run.last_commit_at);
    }
    let mut problems = Vec::new();
    let mut previous: Option<((&str, i64), EpochSpan<'_>)> = None;
    for (&(scope, epoch), &span) in &spans {
        if let Some(((p_scope, p_epoch), p)) = previous
            && p_scope == scope
            && span.start < p.end
        {
            problems.push(format!(
                "{scope}: epoch {epoch} ({}) started at {} before epoch {p_epoch} ({}, from \
                 {}) last committed at {}",
                span.replica, span.start, p.replica, p.start, p.end
            ));
        }
        previous = Some(((scope, epoch), span));
    }
    problems
}

/// Waits up to `limit` for `check` to return no problems; returns the last problems.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let problems = check().await;
        if problems.is_empty() || tokio::time::Instant::now() >= deadline {
            return problems;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::{ScopeRun, overlaps};

    fn run(scope: &str, epoch: i64, from: i64, to: i64) -> ScopeRun {
        let at = |s: i64| DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(s);
        ScopeRun {
            scope: scope.into(),
            source: format!("{scope}-source"),
            replica: format!("replica-{epoch}"),
            epoch,
            started_at: at(from),
            last_commit_at: at(to),
        }
    }

    /// Epochs that follow each other, and runs of one epoch side by side, are no overlap.
    #[test]
    fn successive_epochs_do_not_overlap() {
        let runs = [
            run("a", 1, 0, 10),
            run("a", 1, 5, 12),
            run("a", 2, 12, 20),
            run("b", 7, 0, 30),
            run("b", 8, 31, 40),
        ];
        assert_eq!(overlaps(&runs), Vec::<String>::new());
    }

    /// A new epoch that starts before the previous one's last commit is an overlap, and so
    /// is a lower epoch working after a higher one (epoch order must be time order).
    #[test]
    fn a_commit_after_the_next_epoch_started_is_an_overlap() {
        let late_commit = [run("a", 1, 0, 15), run("a", 2, 12, 20)];
        assert_eq!(
            overlaps(&late_commit).len(),
            1,
            "{:?}",
            overlaps(&late_commit)
        );
        let out_of_order = [run("a", 3, 0, 10), run("a", 4, 30, 40), run("a", 2, 50, 60)];
        // Epoch 2's span precedes 3's in epoch order but not in time.
        assert_eq!(overlaps(&out_of_order).len(), 1);
    }
}
