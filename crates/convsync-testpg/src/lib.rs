//! A real PostgreSQL server for convsync's tests and benchmarks, started by the process
//! itself, so that a plain `cargo test` or `cargo bench` needs no database set up beforehand
//! (only Debian's `postgresql` package, which `.ci/install-packages` installs).
//!
//! Once per process the first [`TestPgDb::new`] creates a throw-away cluster in a
//! temporary directory (`initdb`) and starts its postmaster on 127.0.0.1 at a free port and
//! on a unix socket in that directory; every test then gets a database of its own
//! (`test_<n>`), dropped when its handle is. The cluster never outlives the test process,
//! however that process ends:
//! - the postmaster is started from a dedicated thread that lives as long as the process,
//!   with `PR_SET_PDEATHSIG` = SIGQUIT (immediate shutdown) set after the switch of user, so
//!   the kernel stops it when the process is gone, even after a SIGKILL;
//! - a small reaper (`sh`) reads a pipe that only the test process writes to: at its EOF it
//!   waits for the postmaster to leave and removes the directory.
//!
//! A test that restarts PostgreSQL under running daemons takes a cluster of its own instead
//! ([`OwnPgCluster`]): the same set-up and clean-up, a restart that keeps the port, and no
//! effect on the shared cluster the other tests use.
//!
//! A second cluster, started only by the tests that need it ([`TestPgDb::secured`]), serves
//! TLS with a certificate made at its start (a CA of its own, the server's certificate for
//! `localhost` only) and authenticates by group: members of [`TLS_ONLY_GROUP`] over TLS
//! only, members of [`PASSWORD_GROUP`] by password (SCRAM), members of
//! [`CLIENT_CERT_GROUP`] by a client certificate that a client CA of its own signed for
//! their name (`clientcert=verify-full`, issued by [`TestPgDb::issue_client_cert`]),
//! everyone else as on the first.
//! The first cluster stays plain, so the other tests pay for no handshake.
//!
//! `initdb` refuses to run as root (CI runs as root), so under uid 0 the cluster belongs to
//! the `postgres` system user that Debian's package creates, and the directory is chowned
//! to it.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The superuser `initdb` creates; every test connects as it (trust authentication).
const SUPERUSER: &str = "postgres";
/// How long a start-up may take on a loaded machine before the tests give up.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Start-up attempts: the free port found may be taken by someone else before the
/// postmaster binds it.
const START_ATTEMPTS: u32 = 3;

/// On the secured cluster, roles in this group may connect over TLS only (`hostssl`); a
/// plain connection is refused by `pg_hba.conf`.
pub const TLS_ONLY_GROUP: &str = "convsync_tls_only";
/// On the secured cluster, roles in this group log in with their password (SCRAM).
pub const PASSWORD_GROUP: &str = "convsync_password_auth";
/// On the secured cluster, roles in this group connect only with a client certificate
/// issued for their name by the cluster's client CA (`clientcert=verify-full`).
pub const CLIENT_CERT_GROUP: &str = "convsync_client_cert";
/// The only name the secured cluster's certificate is issued for.
pub const CERTIFIED_HOST: &str = "localhost";

/// A database of its own on the test process's PostgreSQL cluster, dropped with the handle.
pub struct TestPgDb {
    /// The database's name (`test_<n>`).
    pub name: String,
    /// `postgres://postgres@127.0.0.1:<port>/test_<n>`.
    pub url: String,
    /// The cluster that holds it.
    cluster: &'static Cluster,
}

impl TestPgDb {
    /// Creates a fresh, empty database, starting the cluster first if this is the process's
    /// first.
    pub async fn new() -> TestPgDb {
        TestPgDb::on(cluster()).await
    }

    /// A fresh database on the secured cluster (TLS, password and TLS-only groups),
    /// started by the first test that asks.
    pub async fn secured() -> TestPgDb {
        TestPgDb::on(secured_cluster()).await
    }

    async fn on(cluster: &'static Cluster) -> TestPgDb {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        TestPgDb {
            url: cluster.create_database(&name).await,
            name,
            cluster,
        }
    }

    /// This database's URL for `role` at `host` (`127.0.0.1` or [`CERTIFIED_HOST`]),
    /// without a password.
    pub fn url_as(&self, role: &str, host: &str) -> String {
        format!(
            "postgres://{role}@{host}:{}/{}",
            self.cluster.port, self.name
        )
    }

    /// Creates a login role `role` in `group`, with `password` if given, that owns this
    /// database (so that it may migrate it). Roles are the cluster's: give each a name of
    /// its own.
    pub async fn create_owner(&self, role: &str, group: &str, password: Option<&str>) {
        let mut admin = self.connect().await;
        let password = password.map_or(String::new(), |p| format!(" PASSWORD '{p}'"));
        for statement in [
            format!("CREATE ROLE {role} LOGIN{password} IN ROLE {group}"),
            format!("ALTER DATABASE {} OWNER TO {role}", self.name),
            format!("ALTER SCHEMA public OWNER TO {role}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("cannot create role {role}: {e}"));
        }
        admin.close().await.ok();
    }

    /// The secured cluster's CA certificate (PEM), which signed its server certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.cluster.dir.join(CA_CERT)
    }

    /// A CA certificate (PEM) that signed nothing the server has.
    pub fn unrelated_ca_cert(&self) -> PathBuf {
        self.cluster.dir.join(UNRELATED_CA_CERT)
    }

    /// A client certificate for `role` and its key (PEM files written into `dir`, the key
    /// readable by its owner only), signed by the secured cluster's client CA when
    /// `trusted`, else by a CA made for the occasion that the server does not know.
    pub fn issue_client_cert(&self, role: &str, dir: &Path, trusted: bool) -> ClientCertFiles {
        fn failed<T>(e: rcgen::Error) -> T {
            panic!("cannot issue a client certificate: {e}")
        }
        let stranger;
        let issuer = if trusted {
            self.cluster
                .client_ca
                .as_ref()
                .expect("client certificates come from the secured cluster")
        } else {
            stranger = certificate_authority("stranger test CA").unwrap_or_else(failed);
            &stranger
        };
        let key = rcgen::KeyPair::generate().unwrap_or_else(failed);
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(failed);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, role);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &issuer.issuer)
            .unwrap_or_else(failed);
        let label = if trusted { "client" } else { "stranger" };
        let files = ClientCertFiles {
            cert: dir.join(format!("{role}-{label}.crt")),
            key: dir.join(format!("{role}-{label}.key")),
        };
        fs::write(&files.cert, cert.pem()).expect("writing the client certificate");
        fs::write(&files.key, key.serialize_pem()).expect("writing the client key");
        fs::set_permissions(&files.key, fs::Permissions::from_mode(0o600))
            .expect("restricting the client key");
        files
    }

    /// A connection to this database, for checks that read its catalog.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }
}

/// A client certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct ClientCertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Drop for TestPgDb {
    /// Drops the database (closing whatever the test left connected), so that a long test
    /// run does not fill the disk with copies of `template1`. Synchronous through `psql`:
    /// a test's runtime may already be gone when its handle drops.
    fn drop(&mut self) {
        let cluster = self.cluster;
        let dropped = superuser_sql(
            &cluster.bin,
            &cluster.dir,
            cluster.port,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        if let Err(e) = dropped {
            eprintln!("cannot drop test database {}: {e}", self.name);
        }
    }
}

/// A cluster of one test's own, for a test that restarts PostgreSQL under running
/// daemons; stopped and removed on drop.
pub struct OwnPgCluster {
    cluster: Cluster,
    /// `None` only while a restart is under way.
    postmaster: Mutex<Option<Postmaster>>,
}

impl OwnPgCluster {
    /// Creates and starts a new cluster (blocking, a few seconds: `initdb`).
    pub fn start() -> OwnPgCluster {
        let (cluster, postmaster) = Cluster::start(Flavour::Plain)
            .unwrap_or_else(|e| panic!("cannot start a PostgreSQL of the test's own: {e}"));
        OwnPgCluster {
            cluster,
            postmaster: Mutex::new(Some(postmaster)),
        }
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        self.cluster.create_database(name).await
    }

    /// Stops the server as an operator's restart does (fast shutdown: every connection is
    /// closed, open transactions roll back) and starts it again on the same port; returns
    /// how long it was unreachable. Blocking.
    pub fn restart(&self) -> Duration {
        let mut running = self.postmaster.lock().unwrap();
        let stopped = Instant::now();
        running
            .take()
            .expect("the server is running")
            .stop(libc::SIGINT);
        let cluster = &self.cluster;
        let mut last_error = String::new();
        // The port was ours a moment ago; another process may hold it for a moment.
        for _ in 0..START_ATTEMPTS {
            match start_postmaster(&cluster.bin, &cluster.dir, cluster.port, cluster.user, &[]) {
                Ok(postmaster) => {
                    *running = Some(postmaster);
                    return stopped.elapsed();
                }
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "PostgreSQL did not start again on port {}: {last_error}",
            cluster.port
        )
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.cluster.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for OwnPgCluster {
    /// Stops the server at once; the reaper then removes the directory.
    fn drop(&mut self) {
        let postmaster = self.postmaster.get_mut().map(Option::take);
        if let Ok(Some(postmaster)) = postmaster {
            postmaster.stop(libc::SIGQUIT);
        }
    }
}

/// The test process's cluster, started on first use; every test fails with the same
/// message when it could not start.
fn cluster() -> &'static Cluster {
    // The shared postmaster runs until the process ends: its handle is not kept.
    static CLUSTER: LazyLock<Result<Cluster, String>> =
        LazyLock::new(|| Cluster::start(Flavour::Plain).map(|(cluster, _postmaster)| cluster));
    match &*CLUSTER {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start the test PostgreSQL: {e}"),
    }
}

/// The secured cluster (TLS, authentication by group), started on first use.
fn secured_cluster() -> &'static Cluster {
    static CLUSTER: LazyLock<Result<Cluster, String>> =
        LazyLock::new(|| Cluster::start(Flavour::Secured).map(|(cluster, _postmaster)| cluster));
    match &*CLUSTER {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start the secured test PostgreSQL: {e}"),
    }
}

/// What a cluster serves besides plain trusted connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// Plain TCP, every role trusted.
    Plain,
    /// TLS, with the TLS-only and password groups of `SECURED_HBA`.
    Secured,
}

/// The secured cluster's files in its directory.
const CA_CERT: &str = "ca.pem";
const UNRELATED_CA_CERT: &str = "unrelated-ca.pem";
const CLIENT_CA_CERT: &str = "client-ca.pem";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
const HBA_FILE: &str = "pg_hba.conf";

/// The secured cluster's `pg_hba.conf`: first match wins.
const SECURED_HBA: &str = "\
local   all  all                        trust
hostssl all  +convsync_client_cert  127.0.0.1/32  trust  clientcert=verify-full
host    all  +convsync_client_cert  127.0.0.1/32  reject
hostssl all  +convsync_tls_only  127.0.0.1/32  trust
host    all  +convsync_tls_only  127.0.0.1/32  reject
host    all  +convsync_password_auth  127.0.0.1/32  scram-sha-256
host    all  all                 127.0.0.1/32  trust
";

/// A running throw-away cluster.
struct Cluster {
    /// The directory of `initdb`, `postgres` and `psql`.
    bin: PathBuf,
    /// The temporary directory: the data directory `data/`, the unix socket, the server log.
    dir: PathBuf,
    /// The loopback TCP port.
    port: u16,
    /// Who runs the server (under root).
    user: Option<ServerUser>,
    /// The secured cluster's client CA, which issues the certificates the server accepts.
    client_ca: Option<Authority>,
    /// The reaper's stdin: never written, closed by the kernel when the process ends, which
    /// is the reaper's signal to clean up.
    _reaper_pipe: ChildStdin,
}

/// The user that runs the cluster when the tests run as root.
#[derive(Debug, Clone, Copy)]
struct ServerUser {
    uid: u32,
    gid: u32,
}

impl Cluster {
    fn start(flavour: Flavour) -> Result<(Cluster, Postmaster), String> {
        let started = Instant::now();
        let bin = find_bin_dir()?;
        let user = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("convsync-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?
            .keep();
        // From here on the reaper removes the directory, whatever happens next.
        let reaper_pipe = spawn_reaper(&dir)?;
        if let Some(user) = user {
            chown(&dir, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("cannot give {} to the postgres user: {e}", dir.display()))?;
        }
        init_data_dir(&bin, &dir, user)?;
        let (settings, client_ca) = match flavour {
            Flavour::Plain => (Vec::new(), None),
            Flavour::Secured => {
                let (settings, client_ca) = secure(&dir, user)?;
                (settings, Some(client_ca))
            }
        };
        let initialised = started.elapsed();
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match start_postmaster(&bin, &dir, port, user, &settings) {
                Ok(postmaster) => {
                    if flavour == Flavour::Secured {
                        create_groups(&bin, &dir, port)?;
                    }
                    eprintln!(
                        "test PostgreSQL ({flavour:?}, {}) in {} ready on 127.0.0.1:{port} after {} ms \
                         (initdb {} ms)",
                        bin.display(),
                        dir.display(),
                        started.elapsed().as_millis(),
                        initialised.as_millis()
                    );
                    let cluster = Cluster {
                        bin,
                        dir,
                        port,
                        user,
                        client_ca,
                        _reaper_pipe: reaper_pipe,
                    };
                    return Ok((cluster, postmaster));
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Creates database `name` and returns its URL.
    async fn create_database(&self, name: &str) -> String {
        let mut admin = PgConnection::connect(&self.url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        admin.close().await.ok();
        self.url(name)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }
}

/// Debian's newest server binaries (`/usr/lib/postgresql/<version>/bin`), or `initdb` on
/// `PATH` elsewhere.
fn find_bin_dir() -> Result<PathBuf, String> {
    let debian = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = debian {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .ok_or_else(|| {
            "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql/*/bin or on PATH; \
             install Debian's `postgresql` package (.ci/install-packages does)"
                .to_owned()
        })
}

/// `None` when the tests may run the server themselves; the `postgres` system user under
/// root, which `initdb` and `postgres` refuse.
fn server_user() -> Result<Option<ServerUser>, String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, SUPERUSER])
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "running as root, but there is no `{SUPERUSER}` user to run the server as \
                 (Debian's `postgresql` package creates it): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| format!("id {flag} {SUPERUSER}: {e}"))
    };
    Ok(Some(ServerUser {
        uid: id("-u")?,
        gid: id("-g")?,
    }))
}

/// A command that runs as the server's user (when the tests run as root) in `dir`.
fn server_command(program: PathBuf, dir: &Path, user: Option<ServerUser>) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir).env_remove("PGDATA");
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    command
}

/// `initdb` without fsync: the cluster is thrown away with the process.
fn init_data_dir(bin: &Path, dir: &Path, user: Option<ServerUser>) -> Result<(), String> {
    let out = server_command(bin.join("initdb"), dir, user)
        .arg("--pgdata")
        .arg(dir.join("data"))
        .args([
            "--username",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Writes the secured cluster's certificates (a CA, the server's for [`CERTIFIED_HOST`],
/// an unrelated CA, the client CA) and `pg_hba.conf` into `dir`, readable by the server;
/// returns the server settings that use them, and the client CA.
fn secure(dir: &Path, user: Option<ServerUser>) -> Result<(Vec<String>, Authority), String> {
    let failed = |e: rcgen::Error| format!("cannot make the test certificates: {e}");
    let ca = certificate_authority("convsync test CA").map_err(failed)?;
    let unrelated = certificate_authority("unrelated test CA").map_err(failed)?;
    let client_ca = certificate_authority("convsync test client CA").map_err(failed)?;
    let server_key = rcgen::KeyPair::generate().map_err(failed)?;
    let server_cert = rcgen::CertificateParams::new(vec![CERTIFIED_HOST.to_owned()])
        .map_err(failed)?
        .signed_by(&server_key, &ca.issuer)
        .map_err(failed)?;
    let files = [
        (CA_CERT, ca.cert.pem(), 0o644),
        (UNRELATED_CA_CERT, unrelated.cert.pem(), 0o644),
        (CLIENT_CA_CERT, client_ca.cert.pem(), 0o644),
        (SERVER_CERT, server_cert.pem(), 0o644),
        // The server refuses a key that others may read.
        (SERVER_KEY, server_key.serialize_pem(), 0o600),
        (HBA_FILE, SECURED_HBA.to_owned(), 0o644),
    ];
    for (name, text, mode) in files {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
        if let Some(user) = user {
            chown(&path, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("cannot give {} to the postgres user: {e}", path.display()))?;
        }
    }
    let path = |name: &str| dir.join(name).display().to_string();
    let settings = vec![
        "ssl=on".to_owned(),
        format!("ssl_cert_file={}", path(SERVER_CERT)),
        format!("ssl_key_file={}", path(SERVER_KEY)),
        // The CA whose client certificates `clientcert=verify-full` accepts.
        format!("ssl_ca_file={}", path(CLIENT_CA_CERT)),
        format!("hba_file={}", path(HBA_FILE)),
    ];
    Ok((settings, client_ca))
}

/// A self-signed CA certificate and what signs with it.
struct Authority {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn certificate_authority(name: &str) -> Result<Authority, rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok(Authority {
        cert,
        issuer: rcgen::Issuer::new(params, key),
    })
}

/// Creates the secured cluster's groups (`pg_hba.conf` names them).
fn create_groups(bin: &Path, dir: &Path, port: u16) -> Result<(), String> {
    superuser_sql(
        bin,
        dir,
        port,
        &format!(
            "CREATE ROLE {TLS_ONLY_GROUP} NOLOGIN; CREATE ROLE {PASSWORD_GROUP} NOLOGIN; \
             CREATE ROLE {CLIENT_CERT_GROUP} NOLOGIN"
        ),
    )
    .map_err(|e| format!("cannot create the groups: {e}"))
}

/// Runs `sql` as the superuser through the cluster's unix socket, synchronously (`psql`).
fn superuser_sql(bin: &Path, dir: &Path, port: u16, sql: &str) -> Result<(), String> {
    let out = Command::new(bin.join("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
        ])
        .arg("-h")
        .arg(dir)
        .args(["-p", &port.to_string(), "-c", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A loopback port free at the moment of asking.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// A running postmaster and the thread that waits for it.
struct Postmaster {
    pid: libc::pid_t,
    /// Ends when the postmaster has exited (and been reaped).
    waiter: std::thread::JoinHandle<()>,
}

impl Postmaster {
    /// Sends `signal` (`SIGINT`: fast shutdown; `SIGQUIT`: immediate) and waits until the
    /// postmaster has exited.
    fn stop(self, signal: libc::c_int) {
        // SAFETY: kill has no memory effects; the pid is not reused before `waiter` reaps it.
        unsafe { libc::kill(self.pid, signal) };
        let _ = self.waiter.join();
    }
}

/// Starts the postmaster from a thread that lives as long as the postmaster (the
/// parent-death signal follows the thread that forked, not the process) and waits until it
/// accepts connections.
fn start_postmaster(
    bin: &Path,
    dir: &Path,
    port: u16,
    user: Option<ServerUser>,
    settings: &[String],
) -> Result<Postmaster, String> {
    let log_path = dir.join("postgres.log");
    // Appended to: a restarted server keeps what the previous one wrote.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot create the server log: {e}"))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot share the server log: {e}"))?;
    let mut command = server_command(bin.join("postgres"), dir, user);
    command
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", &format!("port={port}")])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        // Durability buys nothing in a cluster thrown away with the process.
        .args(["-c", "fsync=off"])
        .args(["-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off"])
        .args(["-c", "shared_buffers=16MB"])
        .args(["-c", "max_connections=200"])
        .args(settings.iter().flat_map(|setting| ["-c", setting.as_str()]))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let test_process = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid). std switches the user before it runs,
    // which matters: a change of credentials clears the parent-death signal.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The test process died between fork and prctl: do not start an orphan.
            if libc::getppid() as u32 != test_process {
                return Err(std::io::Error::other("the test process is gone"));
            }
            Ok(())
        });
    }

    let (started, outcome) = mpsc::channel::<Result<libc::pid_t, String>>();
    let pid_file = dir.join("data").join("postmaster.pid");
    let waiter = std::thread::Builder::new()
        .name(format!("postgres-{port}"))
        .spawn(move || {
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = started.send(Err(format!("cannot start postgres: {e}")));
                    return;
                }
            };
            let ready = wait_until_ready(&mut child, &pid_file);
            let failed = ready.is_err();
            let _ = started.send(ready.map(|()| child.id() as libc::pid_t));
            if failed {
                let _ = child.kill();
            }
            // Holding this thread is what keeps the parent-death signal armed.
            let _ = child.wait();
        })
        .map_err(|e| format!("cannot start the postgres thread: {e}"))?;
    let pid = outcome
        .recv()
        .map_err(|_| "the postgres thread ended without an answer".to_owned())?
        .map_err(|e| {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            format!("{e}\n--- server log ---\n{log}")
        })?;
    Ok(Postmaster { pid, waiter })
}

/// Waits until the postmaster says "ready" in its pid file (what `pg_ctl -w` reads).
fn wait_until_ready(child: &mut Child, pid_file: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("postgres exited during start-up ({status})"));
        }
        let ready = fs::read_to_string(pid_file)
            .map(|text| text.lines().nth(7).map(str::trim) == Some("ready"))
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("postgres not ready after {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the process that removes `dir` once the test process is gone: it blocks reading a
/// pipe whose only writer is this process (the pipe is close-on-exec here, so no other
/// child inherits it), then gives the postmaster up to ten seconds to leave its pid file.
fn spawn_reaper(dir: &Path) -> Result<ChildStdin, String> {
    const SCRIPT: &str = r#"
cat >/dev/null
i=0
while [ -e "$1/data/postmaster.pid" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
rm -rf -- "$1"
"#;
    let mut reaper = Command::new("sh")
        .args(["-c", SCRIPT, "convsync-pg-reaper"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the cluster's reaper: {e}"))?;
    Ok(reaper.stdin.take().expect("piped stdin"))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    use sqlx::Connection as _;
    use sqlx::postgres::PgConnection;

    use super::{OwnPgCluster, TestPgDb, cluster};

    /// Set in the child process of [`the_cluster_dies_with_a_killed_test_process`].
    const CHILD_ROLE: &str = "CONVSYNC_TEST_PG_CHILD";
    /// The line the child prints once its cluster is up.
    const DIR_LINE: &str = "convsync-test-pg-dir=";

    /// Each test gets an empty database of its own, reachable on loopback only.
    #[tokio::test]
    async fn each_test_gets_its_own_database_on_loopback() {
        let first = TestPgDb::new().await;
        let second = TestPgDb::new().await;
        assert_ne!(first.name, second.name);
        assert!(first.url.starts_with("postgres://postgres@127.0.0.1:"));

        let mut one = first.connect().await;
        sqlx::query("CREATE TABLE only_here (x int)")
            .execute(&mut one)
            .await
            .unwrap();
        let mut other = second.connect().await;
        let tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                .fetch_one(&mut other)
                .await
                .unwrap();
        assert_eq!(tables, 0);
        let listen: String = sqlx::query_scalar("SHOW listen_addresses")
            .fetch_one(&mut other)
            .await
            .unwrap();
        assert_eq!(listen, "127.0.0.1");
        let socket_dir: String = sqlx::query_scalar("SHOW unix_socket_directories")
            .fetch_one(&mut other)
            .await
            .unwrap();
        assert_eq!(std::path::Path::new(&socket_dir), cluster().dir);
    }

    /// A test's own cluster restarts on the same port with its data: a connection opened
    /// before the restart is gone, a new one finds the rows; the shared cluster is another
    /// server, untouched.
    #[tokio::test]
    async fn an_own_cluster_restarts_on_the_same_port_with_its_data() {
        let shared = TestPgDb::new().await;
        let own = tokio::task::spawn_blocking(OwnPgCluster::start)
            .await
            .unwrap();
        let url = own.create_database("kept").await;
        assert_ne!(url, shared.url);
        let mut before = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
            .execute(&mut before)
            .await
            .unwrap();
        let shared_started: String = sqlx::query_scalar("SELECT pg_postmaster_start_time()::text")
            .fetch_one(&mut shared.connect().await)
            .await
            .unwrap();

        let own = std::sync::Arc::new(own);
        let restarting = own.clone();
        tokio::task::spawn_blocking(move || restarting.restart())
            .await
            .unwrap();

        assert!(
            sqlx::query("SELECT 1").execute(&mut before).await.is_err(),
            "the connection from before the restart is closed"
        );
        let mut after = PgConnection::connect(&url).await.unwrap();
        let x: i32 = sqlx::query_scalar("SELECT x FROM kept")
            .fetch_one(&mut after)
            .await
            .unwrap();
        assert_eq!(x, 7);
        let still: String = sqlx::query_scalar("SELECT pg_postmaster_start_time()::text")
            .fetch_one(&mut shared.connect().await)
            .await
            .unwrap();
        assert_eq!(
            still, shared_started,
            "the shared cluster was not restarted"
        );
        assert!(
            own.log().contains("database system is ready"),
            "{}",
            own.log()
        );
    }

    /// A test process killed with SIGKILL leaves no server and no directory behind: the
    /// postmaster gets its parent-death signal, the reaper removes the directory.
    #[tokio::test]
    async fn the_cluster_dies_with_a_killed_test_process() {
        let this_test = format!(
            "{}::the_cluster_dies_with_a_killed_test_process",
            module_path!().split_once("::").unwrap().1
        );
        if std::env::var_os(CHILD_ROLE).is_some() {
            // The child: start the cluster, say where it is, and wait to be killed.
            let _db = TestPgDb::new().await;
            println!("{DIR_LINE}{}", cluster().dir.display());
            tokio::time::sleep(Duration::from_secs(600)).await;
            return;
        }

        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([&this_test, "--exact", "--nocapture"])
            .env(CHILD_ROLE, "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let dir = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix(DIR_LINE).map(std::path::PathBuf::from))
            .expect("the child reports its cluster");
        let postmaster: u32 = std::fs::read_to_string(dir.join("data/postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let mut server = children_of(postmaster);
        server.push(postmaster);
        assert!(server.iter().all(|pid| alive(*pid)), "{server:?}");

        child.kill().unwrap();
        child.wait().unwrap();

        let deadline = Instant::now() + Duration::from_secs(30);
        while (server.iter().any(|pid| alive(*pid)) || dir.exists()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: Vec<u32> = server.into_iter().filter(|pid| alive(*pid)).collect();
        assert!(left.is_empty(), "server processes left running: {left:?}");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    /// Whether `pid` runs (a zombie does not: it only waits for its parent to reap it).
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| process_state(&stat) != Some('Z'))
            .unwrap_or(false)
    }

    /// The processes whose parent is `parent`.
    fn children_of(parent: u32) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let after_name = &stat[stat.rfind(')')? + 2..];
                        after_name.split(' ').nth(1)?.parse::<u32>().ok()
                    })
                    == Some(parent)
            })
            .collect()
    }

    /// The state letter of a `/proc/<pid>/stat` line (after the command name, which may
    /// hold spaces and parentheses).
    fn process_state(stat: &str) -> Option<char> {
        stat[stat.rfind(')')? + 2..].chars().next()
    }
}
