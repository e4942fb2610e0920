//! Throwaway PostgreSQL clusters.
//!
//! One cluster per test process (`PgCluster::shared`), a fresh database per
//! test (`fresh_database`, named by uuid). Started with `wal_level=logical`
//! and room for replication slots, listening on 127.0.0.1 and a Unix socket
//! in the cluster's temp dir. As root, every PostgreSQL command runs as the
//! `postgres` OS user through `runuser`, and the temp dir is handed to it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

use crate::process::{free_port, is_root, reap_after_exit, sh_quote};

/// Superuser of every throwaway cluster (trust authentication, loopback only).
pub const SUPERUSER: &str = "strata";

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

fn pg_bin() -> PathBuf {
    std::env::var_os("STRATA_PG_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

impl PgCluster {
    /// The cluster of this test process, started on first use.
    pub fn shared() -> &'static PgCluster {
        static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| PgCluster::start().expect("starting a throwaway PostgreSQL cluster"))
    }

    /// Starts a new cluster; it is stopped and removed when this process exits.
    pub fn start() -> Result<PgCluster> {
        Self::start_with(ClusterOptions::default())
    }

    /// [`PgCluster::start`] with extra settings, files and client
    /// authentication rules.
    pub fn start_with(options: ClusterOptions) -> Result<PgCluster> {
        let bin = pg_bin();
        if !bin.join("initdb").exists() {
            bail!("{} has no initdb: run infra/test (it installs PostgreSQL 15)", bin.display());
        }
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("strata-pg-").tempdir()?.keep();
        let data = dir.join("data");
        let cluster = PgCluster { dir: dir.clone(), bin, port: free_port(), as_postgres };
        for (name, contents) in &options.files {
            std::fs::write(dir.join(name), contents).with_context(|| format!("writing {name}"))?;
            // PostgreSQL refuses a key file others can read.
            std::fs::set_permissions(dir.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        }
        if as_postgres {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status()?;
            if !status.success() {
                bail!("chown of {} to postgres failed", dir.display());
            }
        }
        reap_after_exit(&format!(
            "{} -D {} -m immediate stop >/dev/null 2>&1; rm -rf {}",
            cluster.pg_command_prefix("pg_ctl"),
            sh_quote(&data.display().to_string()),
            sh_quote(&dir.display().to_string())
        ));
        cluster.run("initdb", &["-D", path_str(&data)?, "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"])?;
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nwal_level = logical\n\
             max_replication_slots = 20\nmax_wal_senders = 20\nfsync = off\n\
             full_page_writes = off\nmax_connections = 200\nshared_buffers = 128MB\n",
            cluster.port,
            dir.display()
        ) + &options.conf;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .context("writing postgresql.conf")?;
        if let Some(hba) = &options.hba {
            std::fs::write(data.join("pg_hba.conf"), hba).context("writing pg_hba.conf")?;
        }
        cluster.run("pg_ctl", &["-D", path_str(&data)?, "-l", path_str(&dir.join("server.log"))?, "-w", "-t", "60", "start"])?;
        Ok(cluster)
    }

    /// A hot standby of this cluster: `pg_basebackup -R` (streaming
    /// replication from this server, as the superuser) into a new
    /// directory, started on a free port. Read-only; stopped and removed
    /// when this process exits.
    pub fn start_standby(&self) -> Result<PgCluster> {
        let dir = tempfile::Builder::new().prefix("strata-pg-standby-").tempdir()?.keep();
        let data = dir.join("data");
        let standby = PgCluster { dir: dir.clone(), bin: self.bin.clone(), port: free_port(), as_postgres: self.as_postgres };
        if self.as_postgres {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status()?;
            if !status.success() {
                bail!("chown of {} to postgres failed", dir.display());
            }
        }
        reap_after_exit(&format!(
            "{} -D {} -m immediate stop >/dev/null 2>&1; rm -rf {}",
            standby.pg_command_prefix("pg_ctl"),
            sh_quote(&data.display().to_string()),
            sh_quote(&dir.display().to_string())
        ));
        let port = self.port.to_string();
        standby.run(
            "pg_basebackup",
            &["-D", path_str(&data)?, "-R", "-X", "stream", "-h", path_str(&self.dir)?, "-p", &port, "-U", SUPERUSER, "--no-sync", "--checkpoint=fast"],
        )?;
        // The copied postgresql.conf names the primary's port and socket
        // directory; later lines win.
        let conf = format!("port = {}\nunix_socket_directories = '{}'\nhot_standby = on\n", standby.port, dir.display());
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
            .context("writing the standby's postgresql.conf")?;
        standby.run("pg_ctl", &["-D", path_str(&data)?, "-l", path_str(&dir.join("server.log"))?, "-w", "-t", "60", "start"])?;
        Ok(standby)
    }

    fn pg_command_prefix(&self, tool: &str) -> String {
        let exe = sh_quote(&self.bin.join(tool).display().to_string());
        if self.as_postgres { format!("runuser -u postgres -- {exe}") } else { exe }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).current_dir(&self.dir).output().with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            bail!("{tool} {} failed: {}\n{}\nserver log:\n{log}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Restarts the server (fast shutdown: clients are disconnected, as in a
    /// failover or a maintenance restart).
    pub fn restart(&self) -> Result<()> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        self.run("pg_ctl", &["-D", path_str(&data)?, "-l", path_str(&log)?, "-m", "fast", "-w", "-t", "60", "restart"])
    }

    /// Stops the server (a destination going down).
    pub fn stop(&self) -> Result<()> {
        let data = self.dir.join("data");
        self.run("pg_ctl", &["-D", path_str(&data)?, "-m", "fast", "-w", "stop"])
    }

    /// Stops the server with an immediate shutdown: no checkpoint, clients
    /// cut off, crash recovery on the next start (a crashed server).
    pub fn stop_immediate(&self) -> Result<()> {
        let data = self.dir.join("data");
        self.run("pg_ctl", &["-D", path_str(&data)?, "-m", "immediate", "-w", "stop"])
    }

    /// Starts a stopped server again.
    pub fn start_again(&self) -> Result<()> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        self.run("pg_ctl", &["-D", path_str(&data)?, "-l", path_str(&log)?, "-w", "-t", "60", "start"])
    }

    /// Connection URL of database `db` as the superuser, over TCP.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The Unix socket directory (for libpq clients that prefer it).
    /// The path of one of the server's programs (`pg_recvlogical`, …).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a database named by a fresh uuid and returns its URL.
    pub async fn fresh_database(&self) -> Result<String> {
        Ok(self.url(&self.create_database().await?))
    }

    /// Creates a database named by a fresh uuid and returns its name.
    pub async fn create_database(&self) -> Result<String> {
        let name = format!("db_{}", uuid::Uuid::new_v4().simple());
        let client = self.connect("postgres").await?;
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.with_context(|| format!("creating database {name}"))?;
        Ok(name)
    }

    /// A superuser client on database `db` over the Unix socket (trusted in
    /// every cluster); its connection task runs in the background.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        connect(&format!("host={} port={} user={SUPERUSER} dbname={db}", self.dir.display(), self.port)).await
    }
}

/// Connects to `url` (TLS as its `sslmode` says) and spawns the connection task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, _task) = strata_common::pgconn::connect(url, "test").await.with_context(|| format!("connecting to {url}"))?;
    Ok(client)
}

/// What [`PgCluster::start_with`] adds to a default cluster.
#[derive(Debug, Default, Clone)]
pub struct ClusterOptions {
    /// Lines appended to `postgresql.conf`.
    pub conf: String,
    /// `pg_hba.conf` in place of initdb's (trust for every local client).
    pub hba: Option<String>,
    /// Files written into the cluster's directory (mode 0600, owned by the
    /// server's user) before it starts: certificates and keys.
    pub files: Vec<(String, Vec<u8>)>,
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}
