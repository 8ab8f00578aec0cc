//! A throwaway PostgreSQL cluster built with the machine's `initdb`/`pg_ctl`, for `demo` and the
//! tests. It lives in a temporary directory, listens on a free loopback port, and is stopped
//! and deleted by a watchdog process when this process exits (however it exits): the watchdog
//! waits for EOF on a pipe only this process holds.
//!
//! PostgreSQL refuses to run as root; as root, its commands run as the `postgres` user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

pub struct TempCluster {
    /// `postgres://postgres@127.0.0.1:PORT/` — append a database name.
    pub base_url: String,
    pub dir: PathBuf,
    /// Whether TLS is on (a self-signed certificate; needs `openssl`).
    pub tls: bool,
    _watchdog: Child,
}

pub struct Options {
    pub tls: bool,
    /// Load pg_stat_statements when the module is installed.
    pub stat_statements: bool,
    /// Commits wait for their WAL flush, as on a production server (`fsync`,
    /// `synchronous_commit` and `full_page_writes` on): for benchmarks. Off, a throwaway
    /// cluster skips the flushes (tests, the demo).
    pub durable: bool,
}

/// Finds a PostgreSQL program on PATH or in `/usr/lib/postgresql/*/bin` (newest version).
pub fn pg_bin(name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let p = e.path().join("bin").join(name);
                    p.is_file().then_some((version, p))
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    match candidates.pop() {
        Some((_, p)) => Ok(p),
        None => bail!(
            "{name} not found on PATH or in /usr/lib/postgresql/*/bin: install PostgreSQL \
             (apt-get install -y postgresql) or give a DATABASE_URL"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn as_postgres(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A fresh directory name for a cluster under the temporary directory (not created yet).
pub fn new_dir() -> PathBuf {
    std::env::temp_dir().join(format!("journeyctl-pg-{}", uuid::Uuid::new_v4().simple()))
}

/// Rounds of stop-and-remove the watchdog makes at most, [`WATCHDOG_PAUSE`] apart: five
/// seconds, longer than an orphaned `initdb` or `pg_ctl start` takes to finish or fail.
const WATCHDOG_ROUNDS: u32 = 10;

/// Rounds the watchdog makes at least, even when the directory is gone after the first: a
/// server still starting may write its files again a moment later.
const WATCHDOG_MIN_ROUNDS: u32 = 3;

/// Seconds between the watchdog's rounds (as `sleep` reads them).
const WATCHDOG_PAUSE: &str = "0.5";

/// Starts the watchdog of the cluster in `dir`: once this process is gone (its pipe closes),
/// it stops whatever server runs on `data`, removes `dir`, and repeats that until nothing is
/// left (a `pg_ctl start` or `initdb` orphaned by a kill may still be finishing). It ignores
/// the signals a terminal or a supervisor sends to a whole job (Ctrl-C, `kill -- -PGID`) and
/// lives in its own process group, so it outlives the process it guards however that process
/// ends (SIGKILL included). It is started before the directory exists, so no moment of the
/// cluster's life is unguarded. It runs as this process's user (as root, `pg_ctl` is run as
/// `postgres` inside it), so it may remove what either created.
fn watchdog(dir: &Path, data: &Path, pg_ctl: &Path, root: bool) -> anyhow::Result<Child> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let stop = format!(
        "{}{} -D {} -m immediate stop",
        if root {
            "setpriv --reuid=postgres --regid=postgres --init-groups -- "
        } else {
            ""
        },
        quote(pg_ctl),
        quote(data)
    );
    let (dir, data) = (quote(dir), quote(data));
    let script = format!(
        "trap '' INT TERM HUP QUIT; cat >/dev/null; \
         i=0; while [ $i -lt {WATCHDOG_ROUNDS} ]; do i=$((i+1)); \
           if [ -f {data}/postmaster.pid ]; then {stop} >/dev/null 2>&1; fi; \
           rm -rf {dir} 2>/dev/null; \
           if [ ! -e {dir} ] && [ $i -ge {WATCHDOG_MIN_ROUNDS} ]; then exit 0; fi; \
           sleep {WATCHDOG_PAUSE}; \
         done"
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the cluster watchdog")
}

impl TempCluster {
    pub fn start(opts: Options) -> anyhow::Result<TempCluster> {
        Self::start_in(new_dir(), opts)
    }

    /// [`TempCluster::start`] in `dir` (see [`new_dir`]), e.g. to name it before it starts.
    pub fn start_in(dir: PathBuf, opts: Options) -> anyhow::Result<TempCluster> {
        let root = is_root();
        let data = dir.join("data");
        let pg_ctl = pg_bin("pg_ctl")?;
        let watchdog = watchdog(&dir, &data, &pg_ctl, root)?;
        create_dir(&dir, root)?;
        init_data(&data, root)?;
        let tls = opts.tls && self_signed_certificate(&data, root)?;
        let stat_statements = opts.stat_statements && stat_statements_installed()?;
        let port = free_port()?;
        let server = ServerOptions {
            port,
            socket_dir: &dir,
            tls,
            stat_statements,
            durable: opts.durable,
        };
        let mut start = as_postgres(&pg_ctl, root);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", &PG_CTL_START_TIMEOUT_SECS.to_string()])
            .args(["-o", &server.to_string(), "start"]);
        run(start, "pg_ctl start")?;

        Ok(TempCluster {
            base_url: format!("postgres://postgres@127.0.0.1:{port}/"),
            dir,
            tls,
            _watchdog: watchdog,
        })
    }
}

/// How long `pg_ctl start` waits for the server to accept connections: a cold start on a busy
/// CI machine takes seconds, never a minute.
const PG_CTL_START_TIMEOUT_SECS: u32 = 60;

/// The server's connection limit: the tests run many pools against one cluster at once.
const MAX_CONNECTIONS: u32 = 400;

/// Validity of the self-signed certificate: a cluster lives for one test run or one demo.
const CERTIFICATE_DAYS: u32 = 2;

/// Creates the cluster's directory, owned by `postgres` when we are root.
fn create_dir(dir: &Path, root: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if root {
        let mut c = Command::new("chown");
        c.args(["-R", "postgres:postgres"]).arg(dir);
        run(
            c,
            "chown of the cluster directory (is there a postgres user?)",
        )?;
    }
    Ok(())
}

/// `initdb` with trust authentication and no fsync: the data is thrown away.
fn init_data(data: &Path, root: bool) -> anyhow::Result<()> {
    let mut initdb = as_postgres(&pg_bin("initdb")?, root);
    initdb.arg("-D").arg(data).args([
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run(initdb, "initdb")
}

/// Writes a self-signed certificate for the server; `false` when `openssl` cannot (then the
/// cluster runs without TLS).
fn self_signed_certificate(data: &Path, root: bool) -> anyhow::Result<bool> {
    let mut openssl = Command::new("openssl");
    openssl
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-days", &CERTIFICATE_DAYS.to_string(), "-subj"])
        .arg("/CN=localhost")
        .arg("-keyout")
        .arg(data.join("server.key"))
        .arg("-out")
        .arg(data.join("server.crt"));
    let made = openssl
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !made {
        return Ok(false);
    }
    if root {
        let mut c = Command::new("chown");
        c.arg("postgres:postgres")
            .arg(data.join("server.key"))
            .arg(data.join("server.crt"));
        run(c, "chown of the certificate")?;
    }
    let mut c = Command::new("chmod");
    c.arg("600").arg(data.join("server.key"));
    run(c, "chmod of the key")?;
    Ok(true)
}

/// Whether the pg_stat_statements module is installed with this PostgreSQL.
fn stat_statements_installed() -> anyhow::Result<bool> {
    Ok(Command::new(pg_bin("pg_config")?)
        .arg("--pkglibdir")
        .output()
        .map(|o| {
            Path::new(String::from_utf8_lossy(&o.stdout).trim())
                .join("pg_stat_statements.so")
                .is_file()
        })
        .unwrap_or(false))
}

/// The server's command-line options (`pg_ctl -o`): loopback only, durability off unless
/// asked for.
struct ServerOptions<'a> {
    port: u16,
    /// Where the Unix socket goes: the cluster's own directory.
    socket_dir: &'a Path,
    tls: bool,
    stat_statements: bool,
    durable: bool,
}

impl std::fmt::Display for ServerOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections={MAX_CONNECTIONS} \
             -c ssl={}",
            self.port,
            self.socket_dir.display(),
            if self.tls { "on" } else { "off" }
        )?;
        if !self.durable {
            f.write_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off")?;
        }
        if self.stat_statements {
            f.write_str(
                " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all",
            )?;
        }
        Ok(())
    }
}
