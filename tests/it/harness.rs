//! Test harness: a real PostgreSQL for every test, and the compiled binary.
//!
//! Without `JOURNEY_TEST_DATABASE_URL`, the first test to ask starts a throwaway cluster with
//! the machine's `initdb`/`pg_ctl` (from PATH or `/usr/lib/postgresql/*/bin`), TLS on with a
//! self-signed certificate, on a free loopback port. A watchdog process holds a pipe from this
//! test process and stops the cluster when the pipe closes, i.e. when the tests exit or die.
//! Each test gets a fresh database cloned from a template that `journeyctl migrate` built once.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use tokio_postgres::NoTls;

pub const BIN: &str = env!("CARGO_BIN_EXE_journeyctl");
const TEMPLATE_DB: &str = "journey_template";

struct Cluster {
    /// URL of the server without database name: `…/`.
    base: String,
    /// Whether the server was started here with TLS on.
    tls: bool,
    _own: Option<Mutex<journeyctl::pgtemp::TempCluster>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static TEMPLATE: OnceLock<()> = OnceLock::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| match std::env::var("JOURNEY_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Cluster {
            base: base_of(url.trim()),
            tls: false,
            _own: None,
        },
        _ => {
            let c = journeyctl::pgtemp::TempCluster::start(journeyctl::pgtemp::Options {
                tls: true,
                stat_statements: true,
                durable: false,
            })
            .unwrap_or_else(|e| panic!("{e:#}"));
            Cluster {
                base: c.base_url.clone(),
                tls: c.tls,
                _own: Some(Mutex::new(c)),
            }
        }
    })
}

/// `postgres://u@h:p/db?x` → `postgres://u@h:p/`
fn base_of(url: &str) -> String {
    let without_query = url.split('?').next().unwrap_or(url);
    match without_query.rfind('/') {
        Some(i) if i > "postgres://".len() => without_query[..=i].to_string(),
        _ => format!("{}/", without_query.trim_end_matches('/')),
    }
}

async fn admin() -> tokio_postgres::Client {
    let url = format!("{}postgres", cluster().base);
    let (client, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to test server: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn ensure_template() {
    TEMPLATE.get_or_init(|| {
        let base = cluster().base.clone();
        // A private runtime on its own thread: tests each have their own runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&format!("{base}postgres"), NoTls)
                    .await
                    .expect("connect to test server");
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {TEMPLATE_DB}"))
                    .await
                    .unwrap();
                client
                    .batch_execute(&format!("CREATE DATABASE {TEMPLATE_DB}"))
                    .await
                    .unwrap();
            });
        })
        .join()
        .unwrap();
        let out = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args([
                "--database-url",
                &format!("{}{TEMPLATE_DB}", cluster().base),
                "migrate",
            ])
            .output()
            .expect("run journeyctl migrate");
        assert!(
            out.status.success(),
            "migrate of the template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A fresh database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh database with the journey schema applied.
    pub async fn migrated() -> TestDb {
        ensure_template();
        Self::create(Some(TEMPLATE_DB)).await
    }

    /// A fresh, empty database (for migration tests).
    pub async fn empty() -> TestDb {
        Self::create(None).await
    }

    async fn create(template: Option<&str>) -> TestDb {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let sql = match template {
            Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
            None => format!("CREATE DATABASE {name}"),
        };
        admin()
            .await
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let url = format!("{}{name}", cluster().base);
        TestDb { name, url }
    }

    /// Whether this server speaks TLS (the throwaway cluster does).
    pub fn server_has_tls(&self) -> bool {
        cluster().tls
    }

    /// A plain connection for arranging rows and asserting on them.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// The program's own pool on this database.
    pub async fn pool(&self) -> journeyctl::db::Db {
        journeyctl::db::connect(&journeyctl::secret::Secret::new(&self.url), 8)
            .await
            .expect("connect pool")
    }

    /// `journeyctl --database-url <this db> …`, with an environment holding nothing but PATH
    /// and what the test adds.
    pub fn cmd(&self) -> Cli {
        let mut c = Cli::new();
        c.arg("--database-url").arg(&self.url);
        c
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get::<_, i64>(0)
    }
}

/// The binary with a clean environment.
pub struct Cli {
    cmd: tokio::process::Command,
}

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Default for Cli {
    fn default() -> Self {
        Self::new()
    }
}

impl Cli {
    pub fn new() -> Cli {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .kill_on_drop(true);
        Cli { cmd }
    }
    pub fn arg(&mut self, a: impl AsRef<std::ffi::OsStr>) -> &mut Cli {
        self.cmd.arg(a);
        self
    }
    pub fn args<I, S>(&mut self, args: I) -> &mut Cli
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }
    pub fn env(&mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> &mut Cli {
        self.cmd.env(k, v);
        self
    }
    pub fn stdin_bytes(&mut self) -> &mut tokio::process::Command {
        &mut self.cmd
    }
    pub async fn run(&mut self) -> CliOutput {
        let out = self
            .cmd
            .stdin(Stdio::null())
            .output()
            .await
            .expect("spawn journeyctl");
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    /// Starts the process without waiting (for overlap and kill tests).
    pub fn spawn(&mut self) -> tokio::process::Child {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn journeyctl")
    }
}
