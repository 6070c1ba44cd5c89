//! The control socket's wire: everything iomond and iomonctl share.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! bincode (fixed-width integers, little-endian). The first request of a
//! connection is [`Request::Hello`] with [`PROTOCOL_VERSION`]; a daemon of
//! another version answers [`ErrorKind::Version`] and closes. `Hello` stays
//! variant 0 with the version as its first field in every version, so that
//! any two versions can read each other's hello.
//!
//! Frames over [`MAX_FRAME`] bytes or that do not decode get an error
//! response, then the connection is closed.

use std::io::{self, Read, Write};

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::drain::Strategy;
pub use crate::drain::TargetStatus;
pub use crate::export::ExportStatus;
use crate::probes::FamilyStatus;
use crate::sample::{FileSample, FilesBy, ProcSample, Sample};
pub use crate::store::{HistoryReport, StoreStatus};
pub use crate::totals::Truncated;

pub const PROTOCOL_VERSION: u32 = 10;
/// Largest frame either side accepts, in bytes (payload, without the length).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest response a client accepts (history replies can be big).
pub const MAX_RESPONSE: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Must be first; `version` must stay the first field.
    Hello {
        version: u32,
        client: String,
    },
    Status,
    Snapshot,
    /// Busiest processes: over the last interval, or since `since_ms`
    /// (wall clock, from the history store).
    Top {
        /// "activity" or a declared rank (`family::ranks`).
        by: String,
        n: u32,
        since_ms: Option<u64>,
        /// Only the processes of this target.
        target: Option<String>,
    },
    History {
        since_ms: u64,
        until_ms: Option<u64>,
        step_ms: Option<u64>,
    },
    Probes,
    GetStrategy,
    SetStrategy(Strategy),
    GetInterval,
    SetInterval {
        ms: u64,
    },
    Reload,
    /// The targets' files since `since_ms` (from the history store), by
    /// missed, evicted or DONTNEED pages.
    Files {
        by: FilesBy,
        n: u32,
        since_ms: u64,
        /// Only this target's files.
        target: Option<String>,
    },
    /// Is the page cache working for BanyanDB? Since `since_ms` (from the
    /// history store), with the top `n` files by misses and by refaults.
    BanyanDb {
        since_ms: u64,
        n: u32,
        target: Option<String>,
    },
}

impl Request {
    /// Requests that change the daemon: root or the admin group only.
    pub fn is_mutating(&self) -> bool {
        matches!(
            self,
            Request::SetStrategy(_) | Request::SetInterval { .. } | Request::Reload
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Protocol versions differ.
    Version,
    /// Frame too large, undecodable, or not a hello first.
    BadFrame,
    /// The peer may not do this.
    Denied,
    /// The request was understood but cannot be done (bad argument, no
    /// store, ...).
    Failed,
    /// Too many connections.
    Busy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub started_ms: u64,
    pub now_ms: u64,
    pub interval_ms: u64,
    pub strategy: Strategy,
    /// The running kernel's release.
    pub kernel: String,
    /// The kernel's page size: every count of pages is in these.
    pub page_size_bytes: u64,
    pub families: Vec<FamilyStatus>,
    pub store: Option<StoreStatus>,
    /// The BanyanDB exporter, when `[export.banyandb]` is configured.
    pub export: Option<ExportStatus>,
    pub ticks: u64,
    pub last_tick_ms: Option<u64>,
    pub last_drain_us: u64,
    /// The last tick, part by part: the switch (the grace period after
    /// the flip, waited for off the event loop), reading the maps, the
    /// store, publishing the pages.
    pub tick_parts: crate::drain::TickParts,
    pub socket: String,
    pub http: Vec<String>,
    pub proc_map_capacity: u32,
    pub proc_table_len: u64,
    /// What bounds forced out since start (userspace).
    pub truncated: Truncated,
    /// Per-process events the kernel could not record since start (its
    /// per-process map was full).
    pub proc_dropped: u64,
    pub targets: Vec<TargetStatus>,
    /// Naming BanyanDB's files, the refault memory, the memory cgroups.
    pub banyandb: crate::report::Status,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReport {
    pub started_ms: u64,
    pub ticks: u64,
    /// The last interval (rates: divide by its duration).
    pub last: Option<Sample>,
    /// Everything since the daemon started.
    pub totals: Sample,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilesReport {
    pub start_ms: u64,
    pub end_ms: u64,
    pub by: FilesBy,
    pub files: Vec<FileSample>,
    /// File-intervals the history did not keep (outside an interval's top
    /// files): their pages are missing from these sums.
    pub truncated: u64,
    /// File-intervals whose file could not be named.
    pub unresolved: u64,
    /// Per-file increments and files the kernel could not record (its
    /// per-file map or file set was full).
    pub refused: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopReport {
    pub start_ms: u64,
    pub end_ms: u64,
    pub by: String,
    pub procs: Vec<ProcSample>,
    /// Families measured in the window: the others' columns are n/a.
    pub families: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Hello {
        version: u32,
        daemon: String,
    },
    Status(Box<StatusReport>),
    BanyanDb(Box<crate::report::Report>),
    Snapshot(Box<SnapshotReport>),
    Top(TopReport),
    History(HistoryReport),
    Probes(Vec<FamilyStatus>),
    Strategy {
        current: Strategy,
        previous: Option<Strategy>,
    },
    Interval {
        current_ms: u64,
        previous_ms: Option<u64>,
    },
    Reloaded {
        changes: Vec<String>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    Files(FilesReport),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn codec(limit: usize) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(limit as u64)
}

/// A whole frame: length prefix and payload.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = codec(usize::MAX)
        .serialize(msg)
        .expect("protocol types always serialize");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes one payload (without its length prefix).
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8], limit: usize) -> Result<T, FrameError> {
    if payload.len() > limit {
        return Err(FrameError::TooLarge(payload.len()));
    }
    let opts = codec(limit).reject_trailing_bytes();
    opts.deserialize(payload)
        .map_err(|e| FrameError::Decode(e.to_string()))
}

/// Takes complete frames out of a growing buffer (the daemon's
/// non-blocking side).
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete payload, `None` if more bytes are needed, or an
    /// error as soon as the length prefix announces too much.
    pub fn next_frame(&mut self, limit: usize) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > limit {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let payload = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(payload))
    }
}

/// Reads one frame from a blocking stream (the client's side).
pub fn read_frame<R: Read>(r: &mut R, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e),
    })?;
    Ok(payload)
}

/// A blocking client: connect, hello, then request/response.
pub struct Client {
    stream: std::os::unix::net::UnixStream,
    pub daemon_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach iomond at {path} (is it running? is --socket right? are you in the socket's group?)")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("lost the connection to iomond")]
    Frame(#[from] FrameError),
    #[error("iomond speaks protocol version {daemon}, this iomonctl speaks {ours}: use the iomonctl that came with the running iomond")]
    Version { daemon: u32, ours: u32 },
    #[error("iomond answered with an unexpected message")]
    Unexpected,
    #[error("iomond refused: {0}")]
    Daemon(String),
}

impl Client {
    pub fn connect(
        path: &std::path::Path,
        timeout: std::time::Duration,
    ) -> Result<Client, ClientError> {
        let connect_err = |source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        };
        let stream = std::os::unix::net::UnixStream::connect(path).map_err(connect_err)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(connect_err)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(connect_err)?;
        let mut c = Client {
            stream,
            daemon_version: String::new(),
        };
        match c.call(&Request::Hello {
            version: PROTOCOL_VERSION,
            client: format!("iomonctl {}", env!("CARGO_PKG_VERSION")),
        })? {
            Response::Hello { version, daemon } if version == PROTOCOL_VERSION => {
                c.daemon_version = daemon;
                Ok(c)
            }
            Response::Hello { version, .. } => Err(ClientError::Version {
                daemon: version,
                ours: PROTOCOL_VERSION,
            }),
            Response::Error {
                kind: ErrorKind::Version,
                message,
            } => Err(ClientError::Daemon(message)),
            Response::Error { message, .. } => Err(ClientError::Daemon(message)),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// Sends a request and waits for its response.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        self.stream
            .write_all(&encode(req))
            .map_err(FrameError::Io)?;
        let payload = read_frame(&mut self.stream, MAX_RESPONSE)?;
        Ok(decode(&payload, MAX_RESPONSE)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_request() -> Vec<Request> {
        vec![
            Request::Hello {
                version: PROTOCOL_VERSION,
                client: "t".into(),
            },
            Request::Status,
            Request::Snapshot,
            Request::Top {
                by: "misses".into(),
                n: 5,
                since_ms: Some(7),
                target: Some("banyand".into()),
            },
            Request::History {
                since_ms: 1,
                until_ms: Some(2),
                step_ms: None,
            },
            Request::Probes,
            Request::GetStrategy,
            Request::SetStrategy(Strategy::Accumulate),
            Request::GetInterval,
            Request::SetInterval { ms: 1000 },
            Request::Reload,
        ]
    }

    #[test]
    fn requests_round_trip() {
        for r in every_request() {
            let frame = encode(&r);
            let mut fb = FrameBuffer::default();
            fb.extend(&frame);
            let payload = fb.next_frame(MAX_FRAME).unwrap().unwrap();
            let back: Request = decode(&payload, MAX_FRAME).unwrap();
            assert_eq!(back, r);
            assert!(fb.is_empty());
        }
    }

    #[test]
    fn responses_round_trip() {
        let rs = vec![
            Response::Hello {
                version: 1,
                daemon: "x".into(),
            },
            Response::Snapshot(Box::new(SnapshotReport {
                started_ms: 1,
                ticks: 2,
                last: Some(Sample::default()),
                totals: Sample::default(),
            })),
            Response::Top(TopReport {
                start_ms: 0,
                end_ms: 1,
                by: "bytes".into(),
                procs: vec![ProcSample::default()],
                families: vec!["fadvise".into()],
            }),
            Response::History(HistoryReport {
                resolution_ms: 1,
                step_ms: 1,
                oldest_ms: None,
                points: vec![],
            }),
            Response::Probes(vec![]),
            Response::Strategy {
                current: Strategy::Drain,
                previous: Some(Strategy::Accumulate),
            },
            Response::Interval {
                current_ms: 1,
                previous_ms: None,
            },
            Response::Reloaded {
                changes: vec!["a".into()],
            },
            Response::Error {
                kind: ErrorKind::Denied,
                message: "no".into(),
            },
        ];
        for r in rs {
            let frame = encode(&r);
            let back: Response = decode(&frame[4..], MAX_RESPONSE).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn hello_version_is_readable_at_a_fixed_place() {
        // variant index 0 (u32), then the version (u32): what another
        // version of the protocol relies on.
        let f = encode(&Request::Hello {
            version: 77,
            client: String::new(),
        });
        assert_eq!(&f[4..8], &0u32.to_le_bytes());
        assert_eq!(&f[8..12], &77u32.to_le_bytes());
    }

    #[test]
    fn oversize_truncated_and_garbage_frames_are_errors() {
        let mut fb = FrameBuffer::default();
        fb.extend(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(matches!(
            fb.next_frame(MAX_FRAME),
            Err(FrameError::TooLarge(_))
        ));

        let mut fb = FrameBuffer::default();
        let f = encode(&Request::Status);
        fb.extend(&f[..f.len() - 1]);
        assert!(
            fb.next_frame(MAX_FRAME).unwrap().is_none(),
            "waits for the rest"
        );

        for garbage in [
            &[0xffu8, 0xff, 0xff, 0xff][..],
            &[1, 0, 0, 0, 9][..],
            &[][..],
            &[0; 3][..],
        ] {
            assert!(decode::<Request>(garbage, MAX_FRAME).is_err());
        }
        // A string length that claims more than the limit must not allocate it.
        let mut evil = 0u32.to_le_bytes().to_vec();
        evil.extend_from_slice(&1u32.to_le_bytes());
        evil.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Request>(&evil, MAX_FRAME).is_err());

        let mut cur = io::Cursor::new(vec![0u8, 0, 0, 10, 1, 2]);
        assert!(matches!(
            read_frame(&mut cur, MAX_FRAME),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn mutating_requests_are_marked() {
        let mutating: Vec<_> = every_request()
            .into_iter()
            .filter(Request::is_mutating)
            .collect();
        assert_eq!(mutating.len(), 3);
    }
}
