//! A stand-in for BanyanDB's liaison, made from iomon's own gRPC
//! definitions, behaving as BanyanDB's source says it does:
//!
//! - `GroupRegistryService/Create`, `MeasureRegistryService/Create`:
//!   `AlreadyExists` when there is one; `Update` replaces the measure and
//!   bumps its revision; `Get` answers with the revision
//!   (`banyand/liaison/grpc/registry.go`).
//! - `MeasureService/Write`: metadata required on a stream's first message
//!   (else `STATUS_METADATA_REQUIRED` and the stream ends); a revision
//!   older than the measure's is answered `STATUS_EXPIRED_SCHEMA` at once;
//!   a timestamp not aligned to the millisecond `STATUS_INVALID_TIMESTAMP`
//!   at once; everything else is stored and answered `STATUS_SUCCEED` only
//!   after the client closed its side (`banyand/liaison/grpc/measure.go`,
//!   `handleWriteCleanup`).
//! - `username` / `password` metadata on every call when auth is on
//!   (`banyand/liaison/grpc/auth.go`): `Unauthenticated` otherwise.
//! - A data point with the same measure, entity, time and version
//!   overwrites (counted).
//!
//! Its state outlives a stop and start on the same port (BanyanDB keeps
//! its data across restarts); `hang` makes it take every call and never
//! answer.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use iomon::export::pb::{common, database, measure, model};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// A stored data point's key: measure, host, scope, time (ms), version.
pub type Key = (String, String, String, i64, i64);

#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub fields: Vec<Option<i64>>,
    pub message_id: u64,
}

#[derive(Default)]
pub struct State {
    pub group: Option<common::Group>,
    /// Create calls that created (not `AlreadyExists`).
    pub groups_created: u32,
    pub measures: BTreeMap<String, (database::Measure, i64)>,
    pub measures_created: u32,
    pub measure_updates: u32,
    pub next_rev: i64,
    pub points: BTreeMap<Key, Stored>,
    /// Writes of a key already stored (overwrites).
    pub overwrites: u64,
    /// Message ids in the order received, per stream.
    pub streams: Vec<Vec<u64>>,
    /// Statuses answered, by name.
    pub answered: BTreeMap<String, u64>,
    pub auth: Option<(String, String)>,
    pub hang: bool,
    /// Answer every write message with this status at once (a server
    /// that finds iomon's data invalid).
    pub refuse: Option<&'static str>,
    pub calls_unauthenticated: u64,
}

impl State {
    fn rev(&mut self) -> i64 {
        self.next_rev += 1;
        self.next_rev
    }

    /// Makes a measure's schema newer than any client's (an operator's
    /// edit): the next write with the old revision is expired.
    pub fn bump(&mut self, name: &str) {
        let r = self.rev();
        if let Some(m) = self.measures.get_mut(name) {
            m.1 = r;
        }
    }

    /// A measure's field names.
    pub fn fields(&self, name: &str) -> Vec<String> {
        self.measures
            .get(name)
            .map(|(m, _)| m.fields.iter().map(|f| f.name.clone()).collect())
            .unwrap_or_default()
    }
}

type Shared = Arc<Mutex<State>>;

fn check(state: &Shared, r: &tonic::metadata::MetadataMap) -> Result<bool, Status> {
    let mut s = state.lock().unwrap();
    if let Some((u, p)) = &s.auth {
        let got = |k: &str| r.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        if got("username").as_deref() != Some(u) || got("password").as_deref() != Some(p) {
            s.calls_unauthenticated += 1;
            return Err(Status::unauthenticated("invalid username or password"));
        }
    }
    Ok(s.hang)
}

async fn hang_if(h: bool) {
    if h {
        std::future::pending::<()>().await;
    }
}

#[derive(Clone)]
struct Svc(Shared);

#[tonic::async_trait]
impl database::group_registry_service_server::GroupRegistryService for Svc {
    async fn create(
        &self,
        r: Request<database::GroupRegistryServiceCreateRequest>,
    ) -> Result<Response<database::GroupRegistryServiceCreateResponse>, Status> {
        hang_if(check(&self.0, r.metadata())?).await;
        let mut s = self.0.lock().unwrap();
        if s.group.is_some() {
            return Err(Status::already_exists("banyandb: resource already exists"));
        }
        s.group = r.into_inner().group;
        s.groups_created += 1;
        let rev = s.rev();
        Ok(Response::new(
            database::GroupRegistryServiceCreateResponse { mod_revision: rev },
        ))
    }

    async fn get(
        &self,
        r: Request<database::GroupRegistryServiceGetRequest>,
    ) -> Result<Response<database::GroupRegistryServiceGetResponse>, Status> {
        hang_if(check(&self.0, r.metadata())?).await;
        let s = self.0.lock().unwrap();
        match &s.group {
            Some(g) => Ok(Response::new(database::GroupRegistryServiceGetResponse {
                group: Some(g.clone()),
            })),
            None => Err(Status::not_found("no group")),
        }
    }
}

fn name_of(m: &Option<database::Measure>) -> Result<database::Measure, Status> {
    m.clone()
        .filter(|m| m.metadata.is_some())
        .ok_or_else(|| Status::invalid_argument("measure without metadata"))
}

#[tonic::async_trait]
impl database::measure_registry_service_server::MeasureRegistryService for Svc {
    async fn create(
        &self,
        r: Request<database::MeasureRegistryServiceCreateRequest>,
    ) -> Result<Response<database::MeasureRegistryServiceCreateResponse>, Status> {
        hang_if(check(&self.0, r.metadata())?).await;
        let m = name_of(&r.into_inner().measure)?;
        if m.fields
            .iter()
            .any(|f| f.compression_method == database::CompressionMethod::Unspecified as i32)
        {
            return Err(Status::invalid_argument("field without compression_method"));
        }
        let mut s = self.0.lock().unwrap();
        let name = m
            .metadata
            .as_ref()
            .map(|md| md.name.clone())
            .unwrap_or_default();
        if s.group.is_none() {
            return Err(Status::not_found("group not found"));
        }
        if s.measures.contains_key(&name) {
            return Err(Status::already_exists("banyandb: resource already exists"));
        }
        let rev = s.rev();
        s.measures.insert(name, (m, rev));
        s.measures_created += 1;
        Ok(Response::new(
            database::MeasureRegistryServiceCreateResponse { mod_revision: rev },
        ))
    }

    async fn update(
        &self,
        r: Request<database::MeasureRegistryServiceUpdateRequest>,
    ) -> Result<Response<database::MeasureRegistryServiceUpdateResponse>, Status> {
        hang_if(check(&self.0, r.metadata())?).await;
        let m = name_of(&r.into_inner().measure)?;
        let mut s = self.0.lock().unwrap();
        let name = m
            .metadata
            .as_ref()
            .map(|md| md.name.clone())
            .unwrap_or_default();
        if !s.measures.contains_key(&name) {
            return Err(Status::not_found("measure not found"));
        }
        let rev = s.rev();
        s.measures.insert(name, (m, rev));
        s.measure_updates += 1;
        Ok(Response::new(
            database::MeasureRegistryServiceUpdateResponse { mod_revision: rev },
        ))
    }

    async fn get(
        &self,
        r: Request<database::MeasureRegistryServiceGetRequest>,
    ) -> Result<Response<database::MeasureRegistryServiceGetResponse>, Status> {
        hang_if(check(&self.0, r.metadata())?).await;
        let name = r.into_inner().metadata.map(|m| m.name).unwrap_or_default();
        let s = self.0.lock().unwrap();
        match s.measures.get(&name) {
            Some((m, rev)) => {
                let mut m = m.clone();
                if let Some(md) = m.metadata.as_mut() {
                    md.mod_revision = *rev;
                }
                Ok(Response::new(database::MeasureRegistryServiceGetResponse {
                    measure: Some(m),
                }))
            }
            None => Err(Status::not_found("measure not found")),
        }
    }
}

type Replies = Pin<Box<dyn Stream<Item = Result<measure::WriteResponse, Status>> + Send>>;

fn reply(id: u64, status: &str) -> measure::WriteResponse {
    measure::WriteResponse {
        message_id: id,
        status: status.into(),
        metadata: None,
    }
}

fn int(v: &model::FieldValue) -> Option<i64> {
    match &v.value {
        Some(model::field_value::Value::Int(i)) => Some(i.value),
        _ => None,
    }
}

fn tag(v: &model::TagValue) -> String {
    match &v.value {
        Some(model::tag_value::Value::Str(s)) => s.value.clone(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl measure::measure_service_server::MeasureService for Svc {
    type WriteStream = Replies;

    async fn write(
        &self,
        r: Request<Streaming<measure::WriteRequest>>,
    ) -> Result<Response<Replies>, Status> {
        let hang = check(&self.0, r.metadata())?;
        let mut inbound = r.into_inner();
        let state = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            let mut ids = Vec::new();
            let mut held: Vec<(Key, Stored)> = Vec::new();
            let mut meta: Option<common::Metadata> = None;
            let mut first = true;
            let send = |id: u64, st: &'static str| {
                *state.lock().unwrap().answered.entry(st.into()).or_insert(0) += 1;
                tx.try_send(Ok(reply(id, st))).ok();
            };
            while let Some(Ok(w)) = inbound.next().await {
                ids.push(w.message_id);
                if w.metadata.is_some() {
                    meta = w.metadata.clone();
                } else if first {
                    send(w.message_id, "STATUS_METADATA_REQUIRED");
                    break;
                }
                first = false;
                let Some(md) = &meta else { continue };
                let Some(dp) = &w.data_point else { continue };
                let refuse = state.lock().unwrap().refuse;
                if let Some(st) = refuse {
                    send(w.message_id, st);
                    continue;
                }
                let rev = state.lock().unwrap().measures.get(&md.name).map(|m| m.1);
                let Some(rev) = rev else {
                    send(w.message_id, "STATUS_NOT_FOUND");
                    continue;
                };
                if md.mod_revision > 0 && md.mod_revision < rev {
                    send(w.message_id, "STATUS_EXPIRED_SCHEMA");
                    continue;
                }
                let ts = dp.timestamp.unwrap_or_default();
                if ts.nanos % 1_000_000 != 0 {
                    send(w.message_id, "STATUS_INVALID_TIMESTAMP");
                    continue;
                }
                let tags = dp
                    .tag_families
                    .first()
                    .map(|f| f.tags.clone())
                    .unwrap_or_default();
                let key = (
                    md.name.clone(),
                    tags.first().map(tag).unwrap_or_default(),
                    tags.get(1).map(tag).unwrap_or_default(),
                    ts.seconds * 1000 + i64::from(ts.nanos / 1_000_000),
                    dp.version,
                );
                held.push((
                    key,
                    Stored {
                        fields: dp.fields.iter().map(int).collect(),
                        message_id: w.message_id,
                    },
                ));
            }
            // The client closed its side: store, then acknowledge.
            {
                let mut s = state.lock().unwrap();
                s.streams.push(ids);
                for (k, v) in &held {
                    if s.points.insert(k.clone(), v.clone()).is_some() {
                        s.overwrites += 1;
                    }
                }
            }
            for (_, v) in held {
                send(v.message_id, "STATUS_SUCCEED");
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// TLS for the server: its certificate and key (PEM).
#[derive(Clone)]
pub struct Tls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

pub struct Server {
    pub state: Shared,
    pub addr: SocketAddr,
    tls: Option<Tls>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts on a free port of 127.0.0.1.
    pub fn start(tls: Option<Tls>) -> Server {
        let mut s = Server {
            state: Arc::default(),
            addr: "127.0.0.1:0".parse().unwrap(),
            tls,
            stop: None,
            thread: None,
        };
        s.run();
        s
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn run(&mut self) {
        let listener = std::net::TcpListener::bind(self.addr).expect("bind the stand-in's port");
        listener.set_nonblocking(true).unwrap();
        self.addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = Svc(self.state.clone());
        let tls = self.tls.clone();
        self.stop = Some(tx);
        self.thread = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
                let mut b = tonic::transport::Server::builder();
                if let Some(t) = tls {
                    b = b
                        .tls_config(tonic::transport::ServerTlsConfig::new().identity(
                            tonic::transport::Identity::from_pem(t.cert, t.key),
                        ))
                        .unwrap();
                }
                let router = b
                    .add_service(
                        database::group_registry_service_server::GroupRegistryServiceServer::new(
                            svc.clone(),
                        ),
                    )
                    .add_service(
                        database::measure_registry_service_server::MeasureRegistryServiceServer::new(
                            svc.clone(),
                        ),
                    )
                    .add_service(measure::measure_service_server::MeasureServiceServer::new(svc));
                tokio::select! {
                    r = router.serve_with_incoming(incoming) => { r.unwrap(); }
                    _ = rx => {}
                }
            });
            // Connections and streams end with the runtime: as abrupt as
            // a killed server.
            rt.shutdown_timeout(std::time::Duration::ZERO);
        }));
    }

    /// Stops: connections reset, state kept.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// Starts again on the same port, with the state it had.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, made
/// with openssl in `dir`: (CA certificate PEM, server identity).
pub fn certificates(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, Tls) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/deps installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let f = |s: &str| format!("{name}-{s}");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
        "-keyout",
        &f("ca.key"),
        "-out",
        &f("ca.pem"),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &f("server.key"),
        "-out",
        &f("server.csr"),
    ]);
    std::fs::write(
        dir.join(f("ext")),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &f("server.csr"),
        "-CA",
        &f("ca.pem"),
        "-CAkey",
        &f("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &f("ext"),
        "-out",
        &f("server.pem"),
    ]);
    (
        dir.join(f("ca.pem")),
        Tls {
            cert: std::fs::read(dir.join(f("server.pem"))).unwrap(),
            key: std::fs::read(dir.join(f("server.key"))).unwrap(),
        },
    )
}
