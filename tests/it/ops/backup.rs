//! `convsync backup` and `convsync restore`, run as a user runs them: a backup taken while
//! the daemon is writing is a complete, private database; restoring it and syncing again
//! converges with the provider's truth, and nothing is overwritten or deleted on the way.

use std::time::Duration;

use convsync_sim::{Faults, PlatformSelector};

use crate::support::reliability::{
    Finished, Site, SiteOptions, create_pool, latency, pool, sim_options, small_pages,
};

async fn conversations(path: &std::path::Path) -> i64 {
    let pool = pool(path).await;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM conversations")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// `convsync restore --from from` on `site`.
async fn restore(site: &Site, from: &std::path::Path) -> Finished {
    site.run(&["restore", "--from", from.to_str().unwrap()])
        .await
}

/// The command (`what`) succeeded and its output says each of `says`.
fn assert_done(done: &Finished, what: &str, says: &[&str]) {
    assert!(done.status.success(), "{what} failed:\n{}", done.tail());
    for said in says {
        assert!(done.stdout.contains(said), "{}", done.stdout);
    }
}

/// The command failed and its error output says `why`.
fn assert_refused(done: &Finished, why: &str) {
    assert!(!done.status.success(), "{}", done.stdout);
    assert!(done.stderr.contains(why), "{}", done.stderr);
}

/// The names in `dir` starting with `prefix`.
fn names_in(dir: &std::path::Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Backup during an active sync (pages being written, conversations changing), stop,
/// restore over the live file, sync: the mirror equals the truth and is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_during_a_sync_restores_and_converges() {
    let mut options = sim_options(0xBAC0, 200);
    options.activity_rate = 20.0;
    let site = Site::start(options, small_pages()).await;
    site.sim.set_faults(PlatformSelector::All, latency(10, 30));
    let mut daemon = site.spawn_daemon_mid_sync().await;

    let backup = site.dir.path().join("backups").join("mirror-1.db");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let done = site
        .run(&["backup", "--to", backup.to_str().unwrap()])
        .await;
    assert_done(&done, "backup", &[]);
    assert!(
        daemon.is_running(),
        "the backup stopped the daemon:\n{}",
        daemon.output()
    );
    assert!(
        done.stdout.starts_with("backup written: "),
        "{}",
        done.stdout
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "backup file mode");
    }
    let in_backup = conversations(&backup).await;
    assert!(
        in_backup > 0,
        "the backup holds the conversations written so far"
    );
    let leftovers = names_in(backup.parent().unwrap(), "");
    assert_eq!(leftovers.len(), 1, "only the backup is left: {leftovers:?}");

    // Restoring under the running daemon is refused, naming it, and changes nothing.
    assert_refused(&restore(&site, &backup).await, "daemon is running");

    // The daemon goes on; the provider keeps changing after the backup.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = daemon.sigterm().await;
    assert_eq!(status.code(), Some(0));
    site.sim.pause_activity();
    site.sim
        .set_faults(PlatformSelector::All, Faults::default());

    let restored = restore(&site, &backup).await;
    assert_done(
        &restored,
        "restore",
        &["previous database moved to", "database restored: "],
    );
    assert_eq!(
        conversations(&site.db_path()).await,
        in_backup,
        "the mirror is the backup's copy"
    );
    let aside = names_in(site.dir.path(), "mirror.db.before-restore-");
    assert!(!aside.is_empty(), "the old database was kept");

    tokio::time::sleep(Duration::from_millis(300)).await;
    site.sync_full().await;
    site.assert_converged().await;
}

/// A backup never overwrites a file, and a file that is not a convsync database is refused
/// for restore without touching the mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_refuse_to_destroy_anything() {
    let site = Site::start(sim_options(0xBAC1, 20), SiteOptions::default()).await;
    site.sync_full().await;
    let before = conversations(&site.db_path()).await;

    let taken = site.dir.path().join("taken.db");
    std::fs::write(&taken, b"someone's file").unwrap();
    let done = site.run(&["backup", "--to", taken.to_str().unwrap()]).await;
    assert_refused(&done, "already exists");
    assert_eq!(std::fs::read(&taken).unwrap(), b"someone's file");

    let other = site.dir.path().join("other.db");
    let pool = create_pool(&other).await;
    sqlx::query("CREATE TABLE notes (x TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    for bad in [&taken, &other] {
        assert_refused(
            &restore(&site, bad).await,
            "is not a usable convsync backup",
        );
    }
    assert_eq!(conversations(&site.db_path()).await, before);
    let mut names = names_in(site.dir.path(), "mirror.db.");
    // Companion files only: SQLite's WAL and shared memory, convsync's daemon lock.
    names.retain(|n| !n.ends_with("-wal") && !n.ends_with("-shm") && !n.ends_with(".lock"));
    assert!(names.is_empty(), "{names:?}");
}
