//! A TCP proxy on the host that delays what chosen clients send: a slow link without netem.
//!
//! The kernel the tests run on has no `sch_netem`, so `tc qdisc … netem delay` is not
//! available to make one pod's traffic slow. A [`SlowLink`] listens on an address of the
//! host, connects every client it accepts to one `upstream` (a [`PrivatePostgres`], say) and
//! copies bytes both ways. While a delay is set for a client's IP address
//! ([`SlowLink::set_delay`]), every chunk that client sends is held that long before it is
//! forwarded to the upstream — a one-way latency on the client → upstream direction, in
//! order, pipelined (a chunk read while earlier ones wait is timed from when it was read).
//! The upstream → client direction is never delayed.
//!
//! The delay for a chunk is the one set for the connection's peer address when the chunk is
//! read, so setting or clearing a delay takes effect on connections already open (after the
//! chunks already held, at most one delay's worth). At most 16 chunks of up to 16 KiB are
//! held per connection; past that the proxy stops reading from the client, so memory stays
//! bounded and TCP's flow control slows the client down.
//!
//! An error on one connection (the upstream refusing or not answering within 10 s, a reset)
//! is logged at debug level and closes that connection only. Dropping the [`SlowLink`] stops
//! accepting and closes every connection it holds (their tasks are aborted). It needs a tokio
//! runtime, which must keep running for the proxy to work.
//!
//! ```no_run
//! # async fn example(pg: &locus_e2e::postgres::PrivatePostgres, pod_ip: std::net::IpAddr) -> std::io::Result<()> {
//! use std::net::{SocketAddr, SocketAddrV4};
//! use std::time::Duration;
//! use locus_e2e::postgres::PrivatePostgres;
//! use locus_e2e::slowlink::SlowLink;
//! // Listen on the same address as PostgreSQL (the bridge's), on a free port.
//! let listen = SocketAddr::V4(SocketAddrV4::new(*pg.addr().ip(), 0));
//! let link = SlowLink::start(listen, SocketAddr::V4(pg.addr())).await?;
//! let SocketAddr::V4(proxy) = link.local_addr() else { unreachable!() };
//! let url = PrivatePostgres::url_for(*proxy.ip(), proxy.port()); // give this to the pods
//! link.set_delay(pod_ip, Duration::from_millis(200)); // that pod's queries get slow
//! // ...
//! link.clear_delay(pod_ip);
//! # Ok(())
//! # }
//! ```
//!
//! [`PrivatePostgres`]: crate::postgres::PrivatePostgres

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Most bytes read from a client at once (one chunk).
const CHUNK_BYTES: usize = 16 * 1024;
/// Most chunks held per connection before the proxy stops reading from the client.
const HELD_CHUNKS: usize = 16;
/// How long connecting to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a [`SlowLink`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SlowLinkStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Chunks forwarded from clients to the upstream.
    pub chunks_forwarded: u64,
    /// Chunks held before being forwarded (read while a delay was set for their client).
    pub chunks_delayed: u64,
}

/// State shared by the handle, the accept loop and the connections.
#[derive(Debug, Default)]
struct Shared {
    delays: RwLock<HashMap<IpAddr, Duration>>,
    connections: AtomicU64,
    open: AtomicU64,
    chunks_forwarded: AtomicU64,
    chunks_delayed: AtomicU64,
}

impl Shared {
    fn delay(&self, ip: IpAddr) -> Option<Duration> {
        self.delays
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&ip)
            .copied()
    }
}

/// A running proxy; stopped, with every connection it holds, when dropped.
#[derive(Debug)]
pub struct SlowLink {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl SlowLink {
    /// Listens on `listen` (port 0: a free one, see [`Self::local_addr`]) and proxies every
    /// connection to `upstream`, with no delay set.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        tracing::info!(%local_addr, %upstream, "slow link started");
        Ok(Self {
            local_addr,
            upstream,
            shared,
            accept,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where it connects its clients to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Holds every chunk `client_ip` sends `delay` before forwarding it, from now on, on its
    /// open connections and new ones (replaces an earlier delay for it).
    pub fn set_delay(&self, client_ip: IpAddr, delay: Duration) {
        let client_ip = client_ip.to_canonical();
        self.shared
            .delays
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(client_ip, delay);
        tracing::info!(link = %self.local_addr, client = %client_ip, ?delay, "slow link: delay set");
    }

    /// Forwards what `client_ip` sends without delay again, from now on (chunks already held
    /// still wait out their delay).
    pub fn clear_delay(&self, client_ip: IpAddr) {
        let client_ip = client_ip.to_canonical();
        let old = self
            .shared
            .delays
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&client_ip);
        tracing::info!(link = %self.local_addr, client = %client_ip, ?old, "slow link: delay cleared");
    }

    /// The delay set for `client_ip`, if any.
    pub fn delay(&self, client_ip: IpAddr) -> Option<Duration> {
        self.shared.delay(client_ip.to_canonical())
    }

    /// The counters so far.
    pub fn stats(&self) -> SlowLinkStats {
        let s = &self.shared;
        SlowLinkStats {
            connections: s.connections.load(Ordering::Relaxed),
            open: s.open.load(Ordering::Relaxed),
            chunks_forwarded: s.chunks_forwarded.load(Ordering::Relaxed),
            chunks_delayed: s.chunks_delayed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        // The accept loop owns the connections' `JoinSet`: dropping it aborts them all.
        self.accept.abort();
        tracing::info!(link = %self.local_addr, stats = ?self.stats(), "slow link stopped");
    }
}

/// Accepts clients until aborted; each connection is a task of `connections`, aborted when
/// this future is dropped.
async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(connection(client, peer, upstream, Arc::clone(&shared)));
                }
                Err(error) => {
                    tracing::warn!(%error, "slow link: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Counts a connection as open while it lives (also when its task is aborted).
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: Arc<Shared>) -> Self {
        shared.open.fetch_add(1, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One client's connection, to its end; errors close it and are logged at debug level.
async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
) {
    let open = Open::new(shared);
    match relay(client, peer.ip().to_canonical(), upstream, &open.0).await {
        Ok(()) => tracing::debug!(%peer, %upstream, "slow link: connection closed"),
        Err(error) => {
            tracing::debug!(%peer, %upstream, %error, "slow link: connection failed");
        }
    }
}

/// Connects `client` to `upstream` and copies both ways until both directions ended or one
/// failed.
async fn relay(
    client: TcpStream,
    client_ip: IpAddr,
    upstream: SocketAddr,
    shared: &Shared,
) -> io::Result<()> {
    let server = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {upstream} took over {CONNECT_TIMEOUT:?}"),
            )
        })?
        .map_err(|e| io::Error::new(e.kind(), format!("connecting to {upstream}: {e}")))?;
    // No Nagle on our side: the only latency added is the one asked for.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, server_write) = server.into_split();
    let (held, to_forward) = mpsc::channel(HELD_CHUNKS);
    let back = async move {
        tokio::io::copy(&mut server_read, &mut client_write)
            .await
            .map_err(|e| context(&e, "upstream → client"))?;
        client_write.shutdown().await
    };
    tokio::try_join!(
        read_chunks(client_read, client_ip, held, shared),
        forward_chunks(to_forward, server_write, shared),
        back,
    )?;
    Ok(())
}

/// A chunk and when it may be forwarded.
type Held = (Instant, Vec<u8>);

fn context(error: &io::Error, direction: &str) -> io::Error {
    io::Error::new(error.kind(), format!("{direction}: {error}"))
}

/// Reads chunks from the client and queues each with the time it may be forwarded; returns
/// at the client's end of stream, dropping `held`, which closes the queue.
async fn read_chunks(
    mut from: OwnedReadHalf,
    client_ip: IpAddr,
    held: mpsc::Sender<Held>,
    shared: &Shared,
) -> io::Result<()> {
    let mut buf = vec![0_u8; CHUNK_BYTES];
    loop {
        let n = from
            .read(&mut buf)
            .await
            .map_err(|e| context(&e, "client → upstream"))?;
        if n == 0 {
            return Ok(());
        }
        let mut ready_at = Instant::now();
        if let Some(delay) = shared.delay(client_ip).filter(|d| !d.is_zero()) {
            ready_at += delay;
            shared.chunks_delayed.fetch_add(1, Ordering::Relaxed);
        }
        if held.send((ready_at, buf[..n].to_vec())).await.is_err() {
            // The forwarder is gone: it failed, and its error ends the connection.
            return Ok(());
        }
    }
}

/// Forwards the queued chunks to the upstream, each at its time, in order; shuts down the
/// upstream's write side when the queue closes.
async fn forward_chunks(
    mut held: mpsc::Receiver<Held>,
    mut to: OwnedWriteHalf,
    shared: &Shared,
) -> io::Result<()> {
    while let Some((ready_at, chunk)) = held.recv().await {
        tokio::time::sleep_until(ready_at).await;
        to.write_all(&chunk)
            .await
            .map_err(|e| context(&e, "client → upstream"))?;
        shared.chunks_forwarded.fetch_add(1, Ordering::Relaxed);
    }
    to.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const DELAY: Duration = Duration::from_millis(300);
    /// A round trip on loopback without a delay: generous, the machine is shared.
    const FAST: Duration = Duration::from_millis(250);

    /// An upstream that echoes every connection until its client's end of stream.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    let _ = write.shutdown().await;
                });
            }
        });
        addr
    }

    async fn link_to_echo() -> SlowLink {
        SlowLink::start((Ipv4Addr::LOCALHOST, 0).into(), echo_server().await)
            .await
            .unwrap()
    }

    /// Sends `message` and reads its echo; returns how long that took.
    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Duration {
        let started = Instant::now();
        stream.write_all(message).await.unwrap();
        let mut back = vec![0; message.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, message);
        started.elapsed()
    }

    #[tokio::test]
    async fn passes_bytes_unchanged_both_ways() {
        let link = link_to_echo().await;
        let stream = TcpStream::connect(link.local_addr()).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        // More than the held chunks and the sockets' buffers: flow control must work.
        let sent: Vec<u8> = (0..4_000_000_u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                write.write_all(&sent).await.unwrap();
                write.shutdown().await.unwrap();
            })
        };
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut received))
            .await
            .unwrap()
            .unwrap();
        writer.await.unwrap();
        assert_eq!(received.len(), sent.len());
        assert!(received == sent, "the bytes changed on the way");
        let stats = link.stats();
        assert_eq!(stats.connections, 1);
        assert!(stats.chunks_forwarded >= 1);
        assert_eq!(stats.chunks_delayed, 0);
    }

    #[tokio::test]
    async fn a_delay_for_the_client_applies_to_open_and_new_connections() {
        let link = link_to_echo().await;
        let mut stream = TcpStream::connect(link.local_addr()).await.unwrap();
        let fast = round_trip(&mut stream, b"one").await;
        assert!(fast < FAST, "no delay set, yet a round trip took {fast:?}");

        // A delay for another address changes nothing.
        link.set_delay(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), DELAY);
        let fast = round_trip(&mut stream, b"two").await;
        assert!(
            fast < FAST,
            "delay for another client, yet a round trip took {fast:?}"
        );
        assert_eq!(link.stats().chunks_delayed, 0);

        link.set_delay(LOCALHOST, DELAY);
        assert_eq!(link.delay(LOCALHOST), Some(DELAY));
        let slow = round_trip(&mut stream, b"three").await;
        assert!(slow >= DELAY, "delay set, yet a round trip took {slow:?}");
        assert!(link.stats().chunks_delayed >= 1);
        let mut second = TcpStream::connect(link.local_addr()).await.unwrap();
        let slow = round_trip(&mut second, b"four").await;
        assert!(slow >= DELAY, "new connection: a round trip took {slow:?}");

        link.clear_delay(LOCALHOST);
        assert_eq!(link.delay(LOCALHOST), None);
        let fast = round_trip(&mut stream, b"five").await;
        assert!(fast < FAST, "delay cleared, yet a round trip took {fast:?}");
        let fast = round_trip(&mut second, b"six").await;
        assert!(fast < FAST, "delay cleared, yet a round trip took {fast:?}");
        let stats = link.stats();
        assert_eq!((stats.connections, stats.open), (2, 2));
    }

    #[tokio::test]
    async fn held_chunks_keep_their_order() {
        let link = link_to_echo().await;
        link.set_delay(LOCALHOST, Duration::from_millis(50));
        let mut stream = TcpStream::connect(link.local_addr()).await.unwrap();
        let started = Instant::now();
        let mut expected = Vec::new();
        for i in 0..20_u8 {
            let chunk = [i; 100];
            stream.write_all(&chunk).await.unwrap();
            expected.extend_from_slice(&chunk);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut back = vec![0; expected.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert!(back == expected, "chunks arrived out of order");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(link.stats().chunks_delayed >= 1);
    }

    #[tokio::test]
    async fn dropping_the_link_closes_its_connections() {
        let link = link_to_echo().await;
        let addr = link.local_addr();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        round_trip(&mut stream, b"hello").await;
        assert_eq!(link.stats().open, 1);
        drop(link);
        let mut buf = [0; 8];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "still open: {read:?}");
        // Nothing listens there any more (the port is not reused this fast).
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn an_unreachable_upstream_closes_only_that_connection() {
        // A port nothing listens on: bind, note it, close.
        let dead = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        let link = SlowLink::start((Ipv4Addr::LOCALHOST, 0).into(), dead)
            .await
            .unwrap();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(link.local_addr()).await.unwrap();
            let mut buf = [0; 8];
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .unwrap();
            assert!(matches!(read, Ok(0) | Err(_)), "not closed: {read:?}");
        }
        assert_eq!(link.stats().connections, 2);
    }
}
