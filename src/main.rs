//! The `convsync` binary: everything lives in the library; see `convsync::cli`.

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    convsync::cli::main()
}

/// glibc's allocator gives a thread that meets contention a new arena (up to eight per
/// core) and keeps the freed pages of every arena: with tokio's workers, sqlx's connection
/// threads and the blocking pool all allocating, a backfill's peak RSS grew with the
/// number of rows it wrote (BENCHMARKS.md). One arena per core keeps it flat at no
/// measurable cost. An operator's own `MALLOC_ARENA_MAX` wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a tunable; this runs before any other thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
