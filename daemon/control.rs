//! The control socket, served from the daemon's mio loop: framing, the
//! hello, authorization and per-connection buffers. What a request means is
//! the event loop's business; this module hands it decoded, authorized
//! requests and writes back what it is given.
//!
//! One struct per connection; interest is READABLE, plus WRITABLE only while
//! output is pending; reads and writes go until `WouldBlock`; an error closes
//! that connection only.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::proto::{self, ErrorKind, FrameBuffer, Request, Response, MAX_FRAME, PROTOCOL_VERSION};

/// Who is on the other end, from SO_PEERCRED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("failed to create the socket directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to set mode/owner of {path}")]
    Perms {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

struct Conn {
    stream: UnixStream,
    input: FrameBuffer,
    output: Vec<u8>,
    greeted: bool,
    /// Close once the output is written.
    closing: bool,
    peer: Option<Peer>,
    last_active: Instant,
    writable_registered: bool,
}

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file this daemon bound (device, inode): what shutdown
    /// removes, and nothing else at that path.
    file: Option<(u64, u64)>,
    conns: HashMap<Token, Conn>,
    token_base: usize,
    next_token: usize,
    max_clients: usize,
    idle_timeout: Duration,
    admin_gid: Option<u32>,
    /// Connections refused because of the cap (for status/metrics).
    pub refused: u64,
    /// Frames that were over the limit or did not decode.
    pub bad_frames: u64,
    client_log: ClientLog,
}

/// Log lines about misbehaving clients: at most [`CLIENT_LOG_BUDGET`] a
/// minute, then one line saying how many were left out (the counters keep
/// them all). A client must not be able to flood the journal, or block
/// the loop on a full log pipe.
#[derive(Debug)]
struct ClientLog {
    window: Instant,
    used: u32,
    dropped: u64,
}

const CLIENT_LOG_BUDGET: u32 = 10;

impl ClientLog {
    fn new() -> ClientLog {
        ClientLog {
            window: Instant::now(),
            used: 0,
            dropped: 0,
        }
    }

    fn allow(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(60) {
            if self.dropped > 0 {
                log::info!(
                    "control: {} more client errors in the last minute were not logged",
                    self.dropped
                );
            }
            self.window = Instant::now();
            self.used = 0;
            self.dropped = 0;
        }
        if self.used < CLIENT_LOG_BUDGET {
            self.used += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

/// A request that passed framing, hello and authorization.
pub struct Incoming {
    pub token: Token,
    pub request: Request,
    pub peer: Option<Peer>,
}

pub struct ListenOptions<'a> {
    pub path: &'a Path,
    pub group: Option<&'a str>,
    pub admin_group: Option<&'a str>,
    pub max_clients: usize,
    pub idle_timeout: Duration,
}

fn group_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Supplementary groups of a live process, from /proc.
fn proc_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl ControlServer {
    /// Binds the socket (replacing a stale one), mode 0660, group `group`.
    pub fn listen(
        registry: &Registry,
        listener_token: Token,
        token_base: usize,
        opts: &ListenOptions,
    ) -> Result<ControlServer, ControlError> {
        let path = opts.path;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ControlError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // A socket file left by a daemon that died: connect fails, so it is
        // stale. A live daemon answers: refuse to steal its socket.
        if path.exists() {
            ControlServer::refuse_if_answered(path)?;
            let _ = std::fs::remove_file(path);
        }
        let mut listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        let perms = |source| ControlError::Perms {
            path: path.to_path_buf(),
            source,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(perms)?;
        if let Some(g) = opts.group.filter(|g| !g.is_empty()) {
            match group_gid(g) {
                // Under systemd the service's group already owns it (and
                // chown is filtered out there).
                Some(gid) if std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::gid(&m)).ok() == Some(gid) => {}
                Some(gid) => std::os::unix::fs::chown(path, None, Some(gid)).map_err(perms)?,
                None => log::warn!(
                    "socket group {g:?} does not exist: {} is root-only (create the group or set daemon.socket_group)",
                    path.display()
                ),
            }
        }
        registry
            .register(&mut listener, listener_token, Interest::READABLE)
            .map_err(|source| ControlError::Bind {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            file: socket_file(path),
            conns: HashMap::new(),
            token_base,
            next_token: 0,
            max_clients: opts.max_clients,
            idle_timeout: opts.idle_timeout,
            admin_gid: opts
                .admin_group
                .filter(|g| !g.is_empty())
                .and_then(group_gid),
            refused: 0,
            bad_frames: 0,
            client_log: ClientLog::new(),
        })
    }

    /// An error if a daemon answers on `path` (checked again at
    /// [`Self::listen`]; the daemon asks first, before it loads anything).
    pub fn refuse_if_answered(path: &Path) -> Result<(), ControlError> {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError::Bind {
                path: path.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "a daemon is answering on it (stop it, or give this one another --socket)",
                ),
            });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 < self.token_base + (1 << 24)
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn set_limits(&mut self, max_clients: usize, idle_timeout: Duration, admin_group: &str) {
        self.max_clients = max_clients;
        self.idle_timeout = idle_timeout;
        self.admin_gid = Some(admin_group)
            .filter(|g| !g.is_empty())
            .and_then(group_gid);
    }

    fn alloc_token(&mut self) -> Token {
        loop {
            let t = Token(self.token_base + (self.next_token % (1 << 24)));
            self.next_token = self.next_token.wrapping_add(1);
            if !self.conns.contains_key(&t) {
                return t;
            }
        }
    }

    /// Accepts every pending connection.
    pub fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= self.max_clients {
                        self.refused += 1;
                        // Best effort: the socket buffer takes a small frame.
                        let _ = stream.write(&proto::encode(&Response::Error {
                            kind: ErrorKind::Busy,
                            message: format!(
                                "iomond has {} control connections, its limit; try again",
                                self.conns.len()
                            ),
                        }));
                        continue;
                    }
                    let peer = nix::sys::socket::getsockopt(
                        &stream,
                        nix::sys::socket::sockopt::PeerCredentials,
                    )
                    .ok()
                    .map(|c| Peer {
                        pid: c.pid(),
                        uid: c.uid(),
                        gid: c.gid(),
                    });
                    let token = self.alloc_token();
                    if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                        log::warn!("control: failed to register a connection: {e}");
                        continue;
                    }
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            input: FrameBuffer::default(),
                            output: Vec::new(),
                            greeted: false,
                            closing: false,
                            peer,
                            last_active: Instant::now(),
                            writable_registered: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest for the next wakeup.
                    if self.client_log.allow() {
                        log::warn!("control: accept on {} failed: {e}", self.path.display());
                    }
                    return;
                }
            }
        }
    }

    fn is_admin(&self, peer: Option<Peer>) -> bool {
        let Some(p) = peer else { return false };
        if p.uid == 0 {
            return true;
        }
        let Some(admin) = self.admin_gid else {
            return false;
        };
        p.gid == admin || proc_groups(p.pid).contains(&admin)
    }

    /// Handles readiness of a connection; returns the requests it completed.
    /// Pending output is written on every call, so WRITABLE readiness needs
    /// no flag of its own.
    pub fn ready(&mut self, registry: &Registry, token: Token, readable: bool) -> Vec<Incoming> {
        let mut out = Vec::new();
        let mut close = false;
        let admin_ok = self.conns.get(&token).map(|c| self.is_admin(c.peer));
        let Some(conn) = self.conns.get_mut(&token) else {
            return out;
        };
        let admin_ok = admin_ok.unwrap_or(false);
        if readable && !conn.closing {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        close = true;
                        break;
                    }
                    Ok(n) => {
                        conn.last_active = Instant::now();
                        conn.input.extend(&buf[..n]);
                        // Do not buffer more than one frame's worth.
                        if conn.input.len() > MAX_FRAME + 4 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            loop {
                match conn.input.next_frame(MAX_FRAME) {
                    Ok(None) => break,
                    Ok(Some(payload)) => match proto::decode::<Request>(&payload, MAX_FRAME) {
                        Ok(Request::Hello { version, client }) => {
                            if version != PROTOCOL_VERSION {
                                if self.client_log.allow() {
                                    log::info!(
                                        "control: refused {client:?} speaking protocol {version}"
                                    );
                                }
                                queue(conn, &Response::Error {
                                    kind: ErrorKind::Version,
                                    message: format!(
                                        "iomond speaks protocol version {PROTOCOL_VERSION}, the client speaks {version}: use the iomonctl that came with this iomond"
                                    ),
                                });
                                conn.closing = true;
                                break;
                            }
                            conn.greeted = true;
                            queue(
                                conn,
                                &Response::Hello {
                                    version: PROTOCOL_VERSION,
                                    daemon: format!("iomond {}", env!("CARGO_PKG_VERSION")),
                                },
                            );
                        }
                        Ok(_) if !conn.greeted => {
                            self.bad_frames += 1;
                            queue(
                                conn,
                                &Response::Error {
                                    kind: ErrorKind::BadFrame,
                                    message: "the first request must be a hello".into(),
                                },
                            );
                            conn.closing = true;
                            break;
                        }
                        Ok(req) if req.is_mutating() && !admin_ok => {
                            queue(
                                conn,
                                &Response::Error {
                                    kind: ErrorKind::Denied,
                                    message: format!(
                                        "{} needs root or membership of the admin group",
                                        request_name(&req)
                                    ),
                                },
                            );
                        }
                        Ok(request) => out.push(Incoming {
                            token,
                            request,
                            peer: conn.peer,
                        }),
                        Err(e) => {
                            self.bad_frames += 1;
                            refuse_bad_frame(conn, &e, self.client_log.allow());
                            break;
                        }
                    },
                    Err(e) => {
                        self.bad_frames += 1;
                        refuse_bad_frame(conn, &e, self.client_log.allow());
                        break;
                    }
                }
            }
        }
        if close {
            self.close(registry, token);
            return Vec::new();
        }
        self.flush(registry, token);
        out
    }

    /// Queues a response for a connection and writes what it can.
    pub fn reply(&mut self, registry: &Registry, token: Token, resp: &Response) {
        if let Some(conn) = self.conns.get_mut(&token) {
            queue(conn, resp);
        }
        self.flush(registry, token);
    }

    fn flush(&mut self, registry: &Registry, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut failed = false;
        while !conn.output.is_empty() {
            match conn.stream.write(&conn.output) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => {
                    conn.output.drain(..n);
                    conn.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed || (conn.closing && conn.output.is_empty()) {
            self.close(registry, token);
            return;
        }
        let want_write = !conn.output.is_empty();
        if want_write != conn.writable_registered {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if registry
                .reregister(&mut conn.stream, token, interest)
                .is_err()
            {
                self.close(registry, token);
                return;
            }
            conn.writable_registered = want_write;
        }
    }

    fn close(&mut self, registry: &Registry, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = registry.deregister(&mut conn.stream);
        }
    }

    /// Closes connections idle longer than the timeout.
    pub fn sweep(&mut self, registry: &Registry) {
        let timeout = self.idle_timeout;
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_active.elapsed() > timeout)
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.close(registry, t);
        }
    }

    /// Closes everything and removes the socket file, if it is still the
    /// one this daemon bound: removed by hand and bound again by another
    /// iomond, it is that daemon's.
    pub fn shutdown(&mut self, registry: &Registry) {
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for t in tokens {
            self.close(registry, t);
        }
        let _ = registry.deregister(&mut self.listener);
        if self.file.is_some() && socket_file(&self.path) == self.file {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A file's (device, inode), if it exists.
fn socket_file(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Answers a frame that is too large or does not decode, then closes.
fn refuse_bad_frame(conn: &mut Conn, e: &proto::FrameError, log: bool) {
    if log {
        log::info!("control: closing a connection that sent a bad frame: {e}");
    }
    queue(
        conn,
        &Response::Error {
            kind: ErrorKind::BadFrame,
            message: e.to_string(),
        },
    );
    conn.closing = true;
}

fn queue(conn: &mut Conn, resp: &Response) {
    conn.output.extend_from_slice(&proto::encode(resp));
}

fn request_name(r: &Request) -> &'static str {
    match r {
        Request::SetStrategy(_) => "strategy set",
        Request::SetInterval { .. } => "interval set",
        Request::Reload => "reload",
        _ => "this request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_removes_its_own_socket_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let poll = mio::Poll::new().unwrap();
        let opts = ListenOptions {
            path: &path,
            group: None,
            admin_group: None,
            max_clients: 4,
            idle_timeout: Duration::from_secs(1),
        };
        let listen = |base| ControlServer::listen(poll.registry(), Token(base), base + 1, &opts);
        let mut a = listen(0).unwrap();
        // Its file removed by hand, another daemon binds the path.
        std::fs::remove_file(&path).unwrap();
        let mut b = listen(100).unwrap();
        a.shutdown(poll.registry());
        assert!(path.exists(), "the other daemon's socket stays");
        b.shutdown(poll.registry());
        assert!(!path.exists(), "its own goes");
    }

    #[test]
    fn client_errors_are_logged_within_a_budget() {
        let mut l = ClientLog::new();
        let allowed = (0..1000).filter(|_| l.allow()).count();
        assert_eq!(allowed, CLIENT_LOG_BUDGET as usize);
        assert_eq!(l.dropped, 1000 - CLIENT_LOG_BUDGET as u64);
        // A new minute: a new budget.
        l.window = Instant::now() - Duration::from_secs(61);
        assert!(l.allow());
        assert_eq!(l.dropped, 0);
    }
}
