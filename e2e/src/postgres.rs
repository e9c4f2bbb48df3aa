//! A private PostgreSQL for tests and benchmarks, listening on one address of the host.
//!
//! [`PrivatePostgres::start`] runs `examples/tests/pg.sh start DIR` ([`pg_script`]), which
//! creates a cluster in `DIR/data` serving on a unix socket in `DIR` only (and, when the
//! binaries are missing and we are root, installs the Debian package `postgresql` with
//! `apt-get` first). It then adds `trust` rules to `pg_hba.conf` for TCP clients from the
//! pod range, from `127.0.0.1/32` and from the listen address itself (`/32`, the source
//! address of a proxy on the host that connects to it, see [`crate::slowlink`]), and restarts
//! the server listening on that one address and a free port, plus the unix socket, with
//! `fsync=off`. Dropping the value runs `pg.sh stop DIR` (an immediate shutdown); the
//! directory itself is left to the caller.
//!
//! On the local cluster the listen address is the bridge's (the gateway, where pods reach
//! the API server), so the sample's pods connect with [`PrivatePostgres::url_for_pods`].
//! Everything here blocks (it runs `pg.sh`, `pg_ctl` and `psql`): from async code, call it
//! where blocking a worker for a few seconds is acceptable, or in `spawn_blocking`.
//!
//! ```no_run
//! # fn example(gateway: std::net::Ipv4Addr) -> Result<(), locus_e2e::postgres::PostgresError> {
//! use locus_e2e::postgres::{PrivatePostgres, pg_script};
//! let dir = std::env::temp_dir().join("my-test-pg");
//! let pg = PrivatePostgres::start(&pg_script(), dir, gateway, "10.88.0.0/16")?;
//! let url = pg.url_for_pods(); // "host=<gateway> port=<port> user=postgres dbname=postgres"
//! assert_eq!(pg.query("SELECT 1")?, "1");
//! # Ok(())
//! # }
//! ```

use crate::support::logs::tail;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Seconds `pg_ctl` waits for the server to restart.
const PG_CTL_WAIT_SECS: &str = "30";

/// What went wrong starting, reconfiguring or querying the private PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// A file or process operation failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `pg.sh start` failed (PostgreSQL missing and not installable, `initdb` failed, ...).
    #[error("{script} start failed: {output}")]
    Script {
        /// The script.
        script: PathBuf,
        /// What it printed.
        output: String,
    },
    /// `pg.sh` succeeded but no server binaries can be found afterwards.
    #[error("no PostgreSQL binaries (initdb) found")]
    NoBinaries,
    /// The restart on the listen address failed.
    #[error("pg_ctl restart failed: {output}\n{log}")]
    Restart {
        /// What `pg_ctl` printed.
        output: String,
        /// The last lines of the server's log.
        log: String,
    },
    /// The server does not listen where it was asked to.
    #[error("PostgreSQL listens on {listening:?}, expected {expected} only")]
    Listen {
        /// `SHOW listen_addresses`.
        listening: String,
        /// The address asked for.
        expected: Ipv4Addr,
    },
    /// A query failed.
    #[error("{sql}: {output}")]
    Query {
        /// The query.
        sql: String,
        /// What `psql` printed.
        output: String,
    },
    /// A query's answer is not what was expected.
    #[error("unexpected answer {answer:?} to {sql}")]
    Answer {
        /// The query.
        sql: String,
        /// Its output.
        answer: String,
    },
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> PostgresError {
    let action = action.into();
    move |source| PostgresError::Io { action, source }
}

/// `examples/tests/pg.sh` in this workspace (found from this crate's manifest directory).
pub fn pg_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/tests/pg.sh"
    ))
}

/// A running private PostgreSQL, stopped when dropped.
///
/// The superuser is `postgres`, the database `postgres`, every allowed client is trusted (no
/// password).
#[derive(Debug)]
pub struct PrivatePostgres {
    script: PathBuf,
    dir: PathBuf,
    bin: PathBuf,
    listen: Ipv4Addr,
    port: u16,
    version: String,
}

impl PrivatePostgres {
    /// Starts it with `script` (normally [`pg_script`]) in `dir`, then restarts it listening
    /// on `listen` (a free port) and its unix socket only, with TCP clients allowed from
    /// `pod_cidr`, `127.0.0.1/32` and `listen/32` only.
    ///
    /// `dir` must not hold a cluster already. On an error after the server started, it is
    /// stopped again.
    pub fn start(
        script: &Path,
        dir: PathBuf,
        listen: Ipv4Addr,
        pod_cidr: &str,
    ) -> Result<Self, PostgresError> {
        let out = Command::new("bash")
            .arg(script)
            .arg("start")
            .arg(&dir)
            .output()
            .map_err(io(format!("run {}", script.display())))?;
        if !out.status.success() {
            return Err(PostgresError::Script {
                script: script.to_owned(),
                output: output_text(&out),
            });
        }
        // From here on, dropping `pg` stops the server.
        let mut pg = Self {
            script: script.to_owned(),
            dir,
            bin: PathBuf::new(),
            listen,
            port: 0,
            version: String::new(),
        };
        pg.bin = pg_bin_dir().ok_or(PostgresError::NoBinaries)?;
        pg.port = TcpListener::bind((listen, 0))
            .and_then(|l| l.local_addr())
            .map_err(io(format!("find a free port on {listen}")))?
            .port();
        let hba = pg.dir.join("data/pg_hba.conf");
        let mut rules =
            std::fs::read_to_string(&hba).map_err(io(format!("read {}", hba.display())))?;
        let _ = writeln!(
            rules,
            "# locus-e2e: the pods, and the host (a proxy connects from the listen address)\n\
             host all all {pod_cidr} trust\n\
             host all all 127.0.0.1/32 trust\n\
             host all all {listen}/32 trust"
        );
        std::fs::write(&hba, rules).map_err(io(format!("write {}", hba.display())))?;
        let options = format!(
            "-c listen_addresses='{listen}' -c port={} -c unix_socket_directories='{}' \
             -c fsync=off -c max_connections=200",
            pg.port,
            pg.dir.display()
        );
        let out = as_postgres(&pg.bin.join("pg_ctl"))
            .arg("-D")
            .arg(pg.dir.join("data"))
            .arg("-l")
            .arg(pg.dir.join("server.log"))
            .args(["-w", "-t", PG_CTL_WAIT_SECS, "-o", &options, "restart"])
            .output()
            .map_err(io("run pg_ctl restart"))?;
        if !out.status.success() {
            return Err(PostgresError::Restart {
                output: output_text(&out),
                log: tail(&pg.dir.join("server.log"), 10),
            });
        }
        pg.version = pg.query("SHOW server_version")?;
        let listening = pg.query("SHOW listen_addresses")?;
        if listening != listen.to_string() {
            return Err(PostgresError::Listen {
                listening,
                expected: listen,
            });
        }
        tracing::debug!(
            addr = %pg.addr(),
            version = %pg.version,
            dir = %pg.dir.display(),
            "private PostgreSQL started"
        );
        Ok(pg)
    }

    /// The TCP address it listens on.
    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.listen, self.port)
    }

    /// The server's version (`SHOW server_version`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The directory it was started in (data in `data/`, log in `server.log`, unix socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A libpq key=value connection string for a server (or a proxy) at `host:port`.
    pub fn url_for(host: Ipv4Addr, port: u16) -> String {
        format!("host={host} port={port} user=postgres dbname=postgres")
    }

    /// The connection string pods use to reach it directly: [`Self::url_for`] its
    /// [`addr`](Self::addr).
    pub fn url_for_pods(&self) -> String {
        Self::url_for(self.listen, self.port)
    }

    /// Runs one query over the unix socket; returns its unaligned, tuples-only output,
    /// trimmed.
    pub fn query(&self, sql: &str) -> Result<String, PostgresError> {
        let psql = if self.bin.join("psql").is_file() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(&psql)
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(io(format!("run {}", psql.display())))?;
        if !out.status.success() {
            return Err(PostgresError::Query {
                sql: sql.to_owned(),
                output: output_text(&out),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Rows of the sessions `<prefix>-*` in the sample's table `locus_sessions`, and the
    /// bytes of their states.
    ///
    /// `prefix` must be letters, digits and `-` (as the load generator's prefixes are): it is
    /// put into the query as a literal.
    pub fn sessions(&self, prefix: &str) -> Result<(u64, u64), PostgresError> {
        let key = format!("{prefix}-");
        let sql = format!(
            "SELECT count(*), coalesce(sum(octet_length(state)), 0) FROM locus_sessions \
             WHERE substring(key from 1 for {}) = convert_to('{key}', 'UTF8')",
            key.len()
        );
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(PostgresError::Query {
                sql,
                output: format!("refusing the session prefix {prefix:?}"),
            });
        }
        let text = self.query(&sql)?;
        let parse = |s: Option<&str>| s.and_then(|v| v.trim().parse::<u64>().ok());
        let mut fields = text.split('|');
        match (parse(fields.next()), parse(fields.next())) {
            (Some(rows), Some(bytes)) => Ok((rows, bytes)),
            _ => Err(PostgresError::Answer { sql, answer: text }),
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        tracing::debug!(dir = %self.dir.display(), ?stopped, "private PostgreSQL stopped");
    }
}

/// The directory of PostgreSQL's server binaries (as `pg.sh` finds it: the newest
/// `/usr/lib/postgresql/<version>/bin`, else `initdb` on `PATH`).
fn pg_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| dir.join("initdb").is_file()))
}

/// A command run as the `postgres` user when we are root (the server refuses root).
fn as_postgres(program: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim()
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        assert_eq!(
            PrivatePostgres::url_for(Ipv4Addr::new(10, 88, 0, 1), 5433),
            "host=10.88.0.1 port=5433 user=postgres dbname=postgres"
        );
        assert!(pg_script().ends_with("examples/tests/pg.sh"));
        assert!(pg_script().is_file());
    }

    /// `psql -c sql` over TCP with the connection string `url`: its output, and how long it
    /// took (`psql` runs on a blocking thread, so a proxy on this runtime keeps running).
    async fn psql_tcp(url: String, sql: &'static str) -> (String, std::time::Duration) {
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let out = Command::new("psql")
                .arg(&url)
                .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .output()
                .unwrap();
            assert!(out.status.success(), "{url}: {}", output_text(&out));
            (
                String::from_utf8_lossy(&out.stdout).trim().to_owned(),
                started.elapsed(),
            )
        })
        .await
        .unwrap()
    }

    /// Starts a real server (installing PostgreSQL with apt-get when root and missing), so
    /// it only runs when asked: `cargo test -p locus-e2e --lib -- --ignored postgres`.
    #[tokio::test]
    #[ignore = "starts PostgreSQL with examples/tests/pg.sh"]
    async fn starts_on_one_address_and_answers_directly_and_through_a_slow_link() {
        use std::net::{IpAddr, SocketAddr};
        use std::time::Duration;

        use crate::slowlink::SlowLink;

        let listen = Ipv4Addr::LOCALHOST;
        let dir = std::env::temp_dir().join(format!(
            "locus-e2e-pg-test-{}",
            crate::cluster::random_suffix()
        ));
        let pg = PrivatePostgres::start(&pg_script(), dir.clone(), listen, "10.0.0.0/8").unwrap();
        assert_eq!(pg.addr().ip(), &listen);
        assert!(!pg.version().is_empty());
        assert_eq!(pg.query("SELECT 1 + 1").unwrap(), "2");
        pg.query("CREATE TABLE locus_sessions (key bytea PRIMARY KEY, state bytea NOT NULL)")
            .unwrap();
        pg.query(
            "INSERT INTO locus_sessions VALUES (convert_to('ab-1', 'UTF8'), '\\x0102'), \
             (convert_to('ab-2', 'UTF8'), '\\x03'), (convert_to('abc-1', 'UTF8'), '\\x04')",
        )
        .unwrap();
        assert_eq!(pg.sessions("ab").unwrap(), (2, 3));
        assert!(pg.sessions("a'b").is_err());

        // TCP from the host, directly and through a proxy on the listen address.
        let (answer, _) = psql_tcp(pg.url_for_pods(), "SELECT 7").await;
        assert_eq!(answer, "7");
        let link = SlowLink::start(SocketAddr::from((listen, 0)), SocketAddr::V4(pg.addr()))
            .await
            .unwrap();
        let proxy = link.local_addr();
        let via_proxy = PrivatePostgres::url_for(listen, proxy.port());
        let (answer, fast) = psql_tcp(via_proxy.clone(), "SELECT 8").await;
        assert_eq!(answer, "8");
        link.set_delay(IpAddr::V4(listen), Duration::from_millis(300));
        let (answer, slow) = psql_tcp(via_proxy, "SELECT 9").await;
        assert_eq!(answer, "9");
        // Startup, authentication and the query: several client → server chunks, each held.
        assert!(
            slow >= Duration::from_millis(600),
            "{slow:?} (without delay: {fast:?})"
        );
        assert!(link.stats().chunks_delayed >= 2);
        drop(link);
        drop(pg);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
