//! A throwaway PostgreSQL that accepts TCP clients over TLS only, with a
//! test CA made by the `openssl` command (installed by `infra/`).
//!
//! The server's certificate names `localhost` only, so connecting to
//! `127.0.0.1` is a host-name mismatch for `verify-full`. A second,
//! unrelated CA stands for "the wrong CA". Role [`CERT_USER`] logs in by
//! client certificate; every other role by password ([`PASSWORD`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::pg::{ClusterOptions, PgCluster, SUPERUSER};

/// Password of the superuser over TCP.
pub const PASSWORD: &str = "tls-test-password";
/// A role that authenticates with a client certificate (`cert` in pg_hba).
pub const CERT_USER: &str = "strata_cert";

/// CA, server and client certificates in a temp dir.
pub struct TestPki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().context("running openssl (infra/ installs it)")?;
    if !out.status.success() {
        bail!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl TestPki {
    pub fn generate() -> Result<TestPki> {
        let dir = tempfile::Builder::new().prefix("strata-pki-").tempdir()?;
        let d = dir.path();
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for (name, cn) in [("ca", "strata test CA"), ("other-ca", "some other CA")] {
            let (k, c, subj) = (format!("{name}.key"), format!("{name}.crt"), format!("/CN={cn}"));
            let mut args = vec!["req", "-x509"];
            args.extend(key);
            args.extend(["-keyout", &k, "-out", &c, "-days", "3", "-subj", &subj]);
            openssl(d, &args)?;
        }
        std::fs::write(d.join("server.ext"), "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")?;
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n")?;
        for (name, cn) in [("server", "localhost"), ("client", CERT_USER)] {
            let (k, r, c, subj, ext) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("/CN={cn}"), format!("{name}.ext"));
            let mut args = vec!["req"];
            args.extend(key);
            args.extend(["-keyout", &k, "-out", &r, "-subj", &subj]);
            openssl(d, &args)?;
            openssl(d, &["x509", "-req", "-in", &r, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", &c, "-days", "3", "-extfile", &ext])?;
        }
        Ok(TestPki {
            ca: d.join("ca.crt"),
            other_ca: d.join("other-ca.crt"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.crt"),
            client_key: d.join("client.key"),
            _dir: dir,
        })
    }
}

/// A cluster that takes TCP clients over TLS only.
pub struct TlsCluster {
    pub pg: PgCluster,
    pub pki: TestPki,
}

impl TlsCluster {
    pub async fn start() -> Result<TlsCluster> {
        let hba = format!(
            "local all all trust\n\
             hostssl all {CERT_USER} 127.0.0.1/32 cert\n\
             hostssl replication {CERT_USER} 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl replication all 127.0.0.1/32 scram-sha-256\n"
        );
        Self::start_with("", hba).await
    }

    /// A cluster with TLS on, `conf` added to its settings and `hba` as
    /// its client authentication rules.
    pub async fn start_with(conf: &str, hba: String) -> Result<TlsCluster> {
        let pki = TestPki::generate()?;
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let options = ClusterOptions {
            conf: format!("ssl = on\nssl_cert_file = '../server.crt'\nssl_key_file = '../server.key'\nssl_ca_file = '../ca.crt'\n{conf}"),
            hba: Some(hba),
            files: vec![
                ("server.crt".to_owned(), read(&pki.server_cert)?),
                ("server.key".to_owned(), read(&pki.server_key)?),
                ("ca.crt".to_owned(), read(&pki.ca)?),
            ],
        };
        let pg = tokio::task::spawn_blocking(move || PgCluster::start_with(options)).await??;
        let admin = pg.connect("postgres").await?;
        admin.batch_execute(&format!("ALTER ROLE {SUPERUSER} PASSWORD '{PASSWORD}'; CREATE ROLE {CERT_USER} LOGIN REPLICATION SUPERUSER")).await?;
        Ok(TlsCluster { pg, pki })
    }

    /// URL of database `db` as the superuser at `host` with `params`
    /// (`sslmode=…&sslrootcert=…`).
    pub fn url(&self, host: &str, db: &str, params: &str) -> String {
        format!("postgres://{SUPERUSER}:{PASSWORD}@{host}:{}/{db}?{params}", self.pg.port)
    }

    /// `sslmode={mode}&sslrootcert={the right CA}`.
    pub fn verified(&self, mode: &str) -> String {
        format!("sslmode={mode}&sslrootcert={}", self.pki.ca.display())
    }
}
