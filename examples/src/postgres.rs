//! PostgreSQL for the sample: the session store's [`Persistence`] and the
//! `--stateless` mode's read-modify-write per request.
//!
//! One table, created at start if missing:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS locus_sessions (
//!     key     bytea  PRIMARY KEY,
//!     epoch   bigint NOT NULL DEFAULT 0,  -- the writer's ownership epoch
//!     version bigint NOT NULL,
//!     state   bytea  NOT NULL             -- the Ledger as JSON
//! );
//! ```
//!
//! (A table made before epochs gets the column with `ALTER TABLE ... ADD
//! COLUMN IF NOT EXISTS`; its rows read as epoch 0.)
//!
//! * [`Postgres::store`] upserts a session, never lowering the stored
//!   (epoch, version) (`... ON CONFLICT (key) DO UPDATE ... WHERE (epoch,
//!   version) <= (new epoch, new version)`), so a write-back repeated after
//!   a timeout is harmless and a late one from a pod that lost the session
//!   (or crashed with it in flight) never replaces its new owner's;
//! * [`Postgres::load`] reads it back with its stamp;
//! * [`Postgres::append`] (stateless mode) runs one transaction: make sure
//!   the row exists, lock it (`SELECT ... FOR UPDATE`), apply the event,
//!   write the next version, commit. Concurrent appends to one session queue
//!   on the row lock, so none is lost.
//!
//! Connections come from a small bounded pool ([`PgConfig::pool_size`]);
//! each connection prepares its statements once. A broken connection is
//! dropped and replaced on the next checkout.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use locus::store::{Persistence, Stamp, Stored, Versioned};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, NoTls, Statement};

use crate::ledger::{Appended, Event, Ledger, LedgerError, LedgerRules};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// A libpq-style connection string or URL
    /// (`postgres://user:password@host:5432/db`, or `host=... user=...`).
    pub url: String,
    /// Most connections open at once (and most concurrent queries). Default 8.
    pub pool_size: usize,
    /// Longest wait for a new connection. Default 5 s.
    pub connect_timeout: Duration,
}

impl PgConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A failed PostgreSQL operation.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A connection could not be opened.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// A connection took longer than the connect timeout.
    #[error("connecting to PostgreSQL took longer than {0:?}")]
    ConnectTimeout(Duration),
    /// A statement failed.
    #[error("PostgreSQL {action} failed: {}", db_message(source))]
    Query {
        /// What was being done (`load`, `store`, `append`, ...).
        action: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A stored state is not a valid ledger, or a ledger could not be encoded.
    #[error("session state codec: {0}")]
    Codec(#[from] serde_json::Error),
    /// A stored version or epoch is negative, or does not fit a `bigint`.
    #[error("session version or epoch {0} is out of range")]
    Version(i128),
}

impl PgError {
    /// A short, stable name for responses and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Connect(_) | Self::ConnectTimeout(_) => "pg_connect",
            Self::Query { .. } => "pg_query",
            Self::Codec(_) => "pg_codec",
            Self::Version(_) => "pg_version",
        }
    }
}

/// The server's own message when there is one: the driver's `Display` says only "db error".
fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(
        || e.to_string(),
        |db| format!("{} ({})", db.message(), db.code().code()),
    )
}

fn query(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    move |source| PgError::Query { action, source }
}

/// Creates the table if missing. Pods of a new service start together: concurrent
/// `CREATE TABLE IF NOT EXISTS` can fail on the catalog's unique index, so creators take a
/// transaction-scoped advisory lock (key: "locus" in ASCII) and run one at a time.
const CREATE_TABLE: &str = "BEGIN;
    SELECT pg_advisory_xact_lock(465725257075);
    CREATE TABLE IF NOT EXISTS locus_sessions (
        key bytea PRIMARY KEY, epoch bigint NOT NULL DEFAULT 0, version bigint NOT NULL,
        state bytea NOT NULL);
    ALTER TABLE locus_sessions ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;
    COMMIT;";
const LOAD: &str = "SELECT epoch, version, state FROM locus_sessions WHERE key = $1";
const UPSERT: &str =
    "INSERT INTO locus_sessions (key, epoch, version, state) VALUES ($1, $2, $3, $4)
    ON CONFLICT (key) DO UPDATE
    SET epoch = EXCLUDED.epoch, version = EXCLUDED.version, state = EXCLUDED.state
    WHERE (locus_sessions.epoch, locus_sessions.version) <= (EXCLUDED.epoch, EXCLUDED.version)";
const ENSURE: &str = "INSERT INTO locus_sessions (key, version, state) VALUES ($1, 0, $2)
    ON CONFLICT (key) DO NOTHING";
const LOCK: &str = "SELECT version, state FROM locus_sessions WHERE key = $1 FOR UPDATE";
const UPDATE: &str = "UPDATE locus_sessions SET version = $2, state = $3 WHERE key = $1";

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    load: Statement,
    upsert: Statement,
    ensure: Statement,
    lock: Statement,
    update: Statement,
}

/// A pool of PostgreSQL connections to the sessions table. Clones share it.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Pool>,
}

struct Pool {
    config: PgConfig,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("Postgres")
            .field("pool_size", &self.inner.config.pool_size)
            .finish_non_exhaustive()
    }
}

/// A connection checked out of the pool; goes back on drop unless broken.
struct Checkout<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
    }
}

impl Checkout<'_> {
    fn conn(&mut self) -> &mut Conn {
        // Set at construction and taken only in `drop`.
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

fn encode(ledger: &Ledger) -> Result<Vec<u8>, PgError> {
    Ok(serde_json::to_vec(ledger)?)
}

fn decode(version: i64, state: &[u8]) -> Result<Versioned<Ledger>, PgError> {
    let version = u64::try_from(version).map_err(|_| PgError::Version(version.into()))?;
    Ok(Versioned::new(version, serde_json::from_slice(state)?))
}

fn to_bigint(version: u64) -> Result<i64, PgError> {
    i64::try_from(version).map_err(|_| PgError::Version(version.into()))
}

/// What [`Postgres::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatelessAppend {
    /// Applied or duplicate.
    pub appended: Appended,
    /// The session's version after the append.
    pub version: u64,
    /// The session after the append.
    pub ledger: Ledger,
}

impl Postgres {
    /// Connects once (so a wrong URL fails here), creates the table if it
    /// does not exist and keeps that connection in the pool.
    pub async fn connect(config: PgConfig) -> Result<Self, PgError> {
        let pool = Pool {
            permits: Semaphore::new(config.pool_size.max(1)),
            idle: Mutex::new(Vec::new()),
            config,
        };
        let first = pool.open(true).await?;
        pool.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(first);
        tracing::info!(
            pool_size = pool.config.pool_size,
            "connected to PostgreSQL, table locus_sessions ready"
        );
        Ok(Self {
            inner: Arc::new(pool),
        })
    }

    /// Loads session `key` with its stored stamp.
    pub async fn load(&self, key: &[u8]) -> Result<Option<Stored<Ledger>>, PgError> {
        let mut checkout = self.inner.checkout().await?;
        let conn = checkout.conn();
        let row = conn
            .client
            .query_opt(&conn.load, &[&key])
            .await
            .map_err(query("load"))?;
        row.map(|row| {
            let epoch: i64 = row.get(0);
            let epoch = u64::try_from(epoch).map_err(|_| PgError::Version(epoch.into()))?;
            let Versioned { version, value, .. } = decode(row.get(1), row.get(2))?;
            Ok(Stored::new(Stamp::new(epoch, version), value))
        })
        .transpose()
    }

    /// Stores `ledger` with `stamp` as session `key`, unless a higher stamp
    /// is already stored.
    pub async fn store(&self, key: &[u8], stamp: Stamp, ledger: &Ledger) -> Result<(), PgError> {
        let state = encode(ledger)?;
        let epoch = to_bigint(stamp.epoch)?;
        let version = to_bigint(stamp.version)?;
        let mut checkout = self.inner.checkout().await?;
        let conn = checkout.conn();
        conn.client
            .execute(&conn.upsert, &[&key, &epoch, &version, &state])
            .await
            .map_err(query("store"))?;
        Ok(())
    }

    /// Stateless mode: applies `event` to session `key` in one transaction
    /// (row created if missing, then locked). A refused or duplicate event
    /// writes nothing.
    pub async fn append(
        &self,
        key: &[u8],
        event: Event,
        rules: &LedgerRules,
    ) -> Result<Result<StatelessAppend, LedgerError>, PgError> {
        let empty = encode(&Ledger::default())?;
        let mut checkout = self.inner.checkout().await?;
        let conn = checkout.conn();
        let tx = conn.client.transaction().await.map_err(query("begin"))?;
        tx.execute(&conn.ensure, &[&key, &empty])
            .await
            .map_err(query("insert"))?;
        let row = tx
            .query_one(&conn.lock, &[&key])
            .await
            .map_err(query("lock"))?;
        let Versioned {
            version,
            value: mut ledger,
            ..
        } = decode(row.get(0), row.get(1))?;
        let appended = match ledger.append(event, rules) {
            Ok(appended) => appended,
            // Dropping the transaction rolls it back.
            Err(refused) => return Ok(Err(refused)),
        };
        if appended == Appended::Duplicate {
            return Ok(Ok(StatelessAppend {
                appended,
                version,
                ledger,
            }));
        }
        let version = version + 1;
        tx.execute(
            &conn.update,
            &[&key, &to_bigint(version)?, &encode(&ledger)?],
        )
        .await
        .map_err(query("update"))?;
        tx.commit().await.map_err(query("commit"))?;
        Ok(Ok(StatelessAppend {
            appended,
            version,
            ledger,
        }))
    }
}

impl Pool {
    async fn checkout(&self) -> Result<Checkout<'_>, PgError> {
        // The semaphore lives as long as the pool and is never closed.
        let permit = self
            .permits
            .acquire()
            .await
            .unwrap_or_else(|_| unreachable!("the pool's semaphore is never closed"));
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain(|conn| !conn.client.is_closed());
            idle.pop()
        };
        let conn = match reused {
            Some(conn) => conn,
            None => self.open(false).await?,
        };
        Ok(Checkout {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }

    async fn open(&self, create_table: bool) -> Result<Conn, PgError> {
        let timeout = self.config.connect_timeout;
        let (client, connection) =
            tokio::time::timeout(timeout, tokio_postgres::connect(&self.config.url, NoTls))
                .await
                .map_err(|_| PgError::ConnectTimeout(timeout))?
                .map_err(PgError::Connect)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "PostgreSQL connection ended");
            }
        });
        if create_table {
            client
                .batch_execute(CREATE_TABLE)
                .await
                .map_err(query("create table"))?;
        }
        let prepare = |sql| {
            let client = &client;
            async move { client.prepare(sql).await.map_err(query("prepare")) }
        };
        Ok(Conn {
            load: prepare(LOAD).await?,
            upsert: prepare(UPSERT).await?,
            ensure: prepare(ENSURE).await?,
            lock: prepare(LOCK).await?,
            update: prepare(UPDATE).await?,
            client,
        })
    }
}

/// The session store's persistence: PostgreSQL, or nothing.
#[derive(Debug, Clone)]
pub enum LedgerPersistence {
    /// Nothing is stored: an evicted session is gone, a restarted pod starts
    /// empty.
    None,
    /// Sessions are written back to and loaded from PostgreSQL.
    Postgres(Postgres),
}

impl Persistence<Ledger> for LedgerPersistence {
    type Error = PgError;

    async fn load(&self, key: &[u8]) -> Result<Option<Stored<Ledger>>, PgError> {
        match self {
            Self::None => Ok(None),
            Self::Postgres(pg) => pg.load(key).await,
        }
    }

    async fn store(&self, key: &[u8], stamp: Stamp, value: &Ledger) -> Result<(), PgError> {
        match self {
            Self::None => Ok(()),
            Self::Postgres(pg) => pg.store(key, stamp, value).await,
        }
    }

    /// Without PostgreSQL nothing is kept: a drain must not count a record
    /// written here as safe.
    fn durable(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}
