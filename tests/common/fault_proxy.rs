//! A fault-injecting TCP proxy for tests: put it between a client (a
//! store's connection pool) and a server (a database), then switch what it
//! does to the traffic while the test runs.
//!
//! ```ignore
//! let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap()).await;
//! let url = format!("postgres://postgres@{}/test", proxy.addr());
//! // ... connect through `url` ...
//! proxy.set_mode(Mode::SilentDrop); // the network goes quiet
//! proxy.set_mode(Mode::Pass);       // and comes back
//! ```
//!
//! Each accepted connection opens its own connection to the target and
//! runs two pumps, one per direction. The mode is read for every chunk
//! read, and a change reaches connections already open:
//!
//! | mode | what happens |
//! | --- | --- |
//! | [`Mode::Pass`] | bytes are forwarded both ways |
//! | [`Mode::Reset`] | every open connection is closed at once with a TCP reset (both sides), and new ones are reset as soon as they are accepted |
//! | [`Mode::SilentDrop`] | sockets stay open, nothing is forwarded: what either side sends is read and thrown away (as a network that drops packets, without the retransmission that would deliver them later); new connections are accepted and get nothing, and reach the target only once the mode changes |
//! | [`Mode::Latency`] | each chunk is forwarded after the given delay |
//! | [`Mode::OneWay`] | half-open: only the given direction is forwarded, what goes the other way is thrown away |
//!
//! Bytes thrown away are gone: a connection that saw a [`Mode::SilentDrop`]
//! or [`Mode::OneWay`] is out of step with its peer and should be closed by
//! the client (a store that kept using it would hang again). Several
//! proxies are independent: give each instance of a cluster its own. The
//! proxy stops, closing every connection, when it is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Which way bytes travel through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client (who connected to the proxy) to the target.
    ToTarget,
    /// From the target back to the client.
    ToClient,
}

/// What the proxy does to the traffic (see the [module documentation](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Reset every connection, open or new.
    Reset,
    /// Keep connections open, forward nothing.
    SilentDrop,
    /// Forward each chunk after this delay.
    Latency(Duration),
    /// Forward this direction only (a half-open connection).
    OneWay(Direction),
}

/// A running proxy; see the [module documentation](self).
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` that forwards to `target`, in
    /// [`Mode::Pass`].
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the proxy binds a free port");
        let addr = listener.local_addr().expect("the proxy's address");
        let (mode, modes) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(listener, target, modes, accepted.clone()));
        Self {
            addr,
            target,
            mode,
            accepted,
            task,
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the mode; connections already open follow at once.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// How many connections the proxy accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("target", &self.target)
            .field("mode", &self.mode())
            .finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which aborts every
        // connection's task and closes their sockets.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    modes: watch::Receiver<Mode>,
    accepted: Arc<AtomicU64>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = listener.accept() => {
                let Ok((client, _)) = incoming else { continue };
                accepted.fetch_add(1, Ordering::Relaxed);
                if *modes.borrow() == Mode::Reset {
                    reset(&client);
                    continue;
                }
                connections.spawn(relay(client, target, modes.clone()));
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Closes `stream` with a TCP reset once it is dropped.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// One proxied connection: two pumps until both directions ended, or one
/// failed, or the mode turned to [`Mode::Reset`].
async fn relay(mut client: TcpStream, target: SocketAddr, mut modes: watch::Receiver<Mode>) {
    // A silent network never reaches the target: the connection is made
    // once the mode lets bytes through, and what the client sends before
    // is thrown away.
    let mut buf = [0u8; 4096];
    loop {
        match *modes.borrow_and_update() {
            Mode::Reset => {
                reset(&client);
                return;
            }
            Mode::SilentDrop => {}
            _ => break,
        }
        tokio::select! {
            changed = modes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client.read(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
    let Ok(server) = TcpStream::connect(target).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let ended = {
        let up = pump(
            &mut client_read,
            &mut server_write,
            Direction::ToTarget,
            modes.clone(),
        );
        let down = pump(
            &mut server_read,
            &mut client_write,
            Direction::ToClient,
            modes,
        );
        tokio::pin!(up, down);
        let (first, up_first) = tokio::select! {
            ended = &mut up => (ended, true),
            ended = &mut down => (ended, false),
        };
        match (first, up_first) {
            // One side closed its half cleanly: the other direction goes on.
            (Ended::Eof, true) => down.await,
            (Ended::Eof, false) => up.await,
            (Ended::Closed, _) => Ended::Closed,
        }
    };
    if ended == Ended::Closed {
        // Reset or broken: both sockets close with a reset, and no FIN
        // goes out first (a dropped write half would send one).
        reset(client_read.as_ref());
        reset(server_read.as_ref());
        client_write.forget();
        server_write.forget();
    }
}

/// How a pump ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// Its source closed cleanly; the close was passed on.
    Eof,
    /// Reset by the mode, or a socket failed: the connection is over.
    Closed,
}

/// Copies `from` to `to` (bytes going `direction`) as the mode says.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    direction: Direction,
    mut modes: watch::Receiver<Mode>,
) -> Ended {
    let mut buf = vec![0u8; 16 * 1024];
    let mut source_closed = false;
    loop {
        let mode = *modes.borrow_and_update();
        if mode == Mode::Reset {
            return Ended::Closed;
        }
        if source_closed {
            // The source closed while its bytes were being thrown away:
            // pass the close on once the mode forwards this way again.
            if forwards(mode, direction) {
                let _ = to.shutdown().await;
                return Ended::Eof;
            }
            if modes.changed().await.is_err() {
                return Ended::Closed;
            }
            continue;
        }
        tokio::select! {
            changed = modes.changed() => {
                if changed.is_err() {
                    return Ended::Closed;
                }
            }
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(n) => n,
                    Err(_) => return Ended::Closed,
                };
                if n == 0 {
                    source_closed = true;
                    continue;
                }
                // The mode when the chunk arrived decides its fate.
                let mode = *modes.borrow();
                match mode {
                    Mode::Reset => continue,
                    Mode::Latency(delay) => tokio::time::sleep(delay).await,
                    _ if !forwards(mode, direction) => continue,
                    _ => {}
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return Ended::Closed;
                }
            }
        }
    }
}

/// Whether `mode` forwards bytes going `direction`.
fn forwards(mode: Mode, direction: Direction) -> bool {
    match mode {
        Mode::Pass | Mode::Latency(_) => true,
        Mode::OneWay(only) => only == direction,
        Mode::Reset | Mode::SilentDrop => false,
    }
}

/// `url` with its host and port replaced by `addr` (the proxy's).
pub fn via(url: &str, addr: SocketAddr) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let end = url[authority..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority + i);
    let host = url[authority..end]
        .rfind('@')
        .map_or(authority, |i| authority + i + 1);
    format!("{}{addr}{}", &url[..host], &url[end..])
}

/// The server address `url` names (host and port, resolved).
pub async fn server_of(url: &str, default_port: u16) -> SocketAddr {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let end = url[authority..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority + i);
    let host_port = &url[authority..end];
    let host_port = host_port.rsplit('@').next().unwrap();
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .expect("the test server's address")
}
