//! One connection to BanyanDB: the schema made sure of, then batches of
//! data points written, each on a stream of its own (BanyanDB acknowledges
//! a stream's writes only when the client has closed its side: a batch is
//! known stored when every one of its messages came back `STATUS_SUCCEED`).
//! Every call is bounded by the configured timeout: a hung server is an
//! error here, never a wait without end.

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use super::config::{endpoint_uri, read_password, BanyanDbExport, Interval};
use super::pb::{common, database, measure, model};
use super::schema::{MeasureDef, Point, TAGS, TAG_FAMILY};

/// Why a call failed, as the operator needs to hear it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("cannot connect to BanyanDB at {endpoint}: {why}")]
    Connect { endpoint: String, why: String },
    #[error(
        "BanyanDB at {endpoint} refused user {user:?}: {why} (check username and password_file)"
    )]
    Auth {
        endpoint: String,
        user: String,
        why: String,
    },
    #[error(
        "TLS with BanyanDB at {endpoint} failed: {why} (check tls_ca_file and tls_server_name)"
    )]
    Tls { endpoint: String, why: String },
    #[error("BanyanDB at {endpoint} did not answer {what} within {secs}s")]
    Timeout {
        endpoint: String,
        what: &'static str,
        secs: u64,
    },
    #[error("BanyanDB at {endpoint} failed {what}: {why}")]
    Call {
        endpoint: String,
        what: &'static str,
        why: String,
    },
    #[error("measure {group}/{measure} on BanyanDB has fields iomon does not know in this order ({theirs} where iomon has {ours}): delete the measure or write to another group")]
    Conflict {
        group: String,
        measure: String,
        theirs: String,
        ours: String,
    },
    #[error("the password file {0}")]
    Password(String),
}

/// The `username` / `password` metadata of every call.
#[derive(Clone, Default)]
pub struct Auth(Option<(MetadataValue<Ascii>, MetadataValue<Ascii>)>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: Request<()>) -> Result<Request<()>, Status> {
        if let Some((u, p)) = &self.0 {
            r.metadata_mut().insert("username", u.clone());
            r.metadata_mut().insert("password", p.clone());
        }
        Ok(r)
    }
}

type Svc = InterceptedService<Channel, Auth>;

/// What a batch came back as.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub succeeded: u64,
    /// Refused for good (a bug of ours: invalid timestamp, metadata
    /// required, ...), by status, with the first refused message.
    pub refused: BTreeMap<String, (u64, String)>,
    /// The server's revision of these measures is newer than ours.
    pub expired: Vec<usize>,
    /// The server has not applied our revision yet (retry later).
    pub not_applied: bool,
}

pub struct Session {
    pub endpoint: String,
    user: String,
    group: String,
    timeout: Duration,
    groups: database::group_registry_service_client::GroupRegistryServiceClient<Svc>,
    measures: database::measure_registry_service_client::MeasureRegistryServiceClient<Svc>,
    writer: measure::measure_service_client::MeasureServiceClient<Svc>,
    /// Each measure's revision (index as in the definitions); `None`: not
    /// usable (a conflicting schema, logged).
    pub revisions: Vec<Option<i64>>,
    next_id: u64,
}

fn describe(s: &Status) -> String {
    let mut m = format!("{:?}", s.code());
    if !s.message().is_empty() {
        m.push_str(": ");
        m.push_str(s.message());
    }
    if let Some(src) = std::error::Error::source(s) {
        m.push_str(": ");
        m.push_str(&crate::error_chain(src));
    }
    m
}

impl Session {
    /// Connects to `endpoint` (a config entry) and makes sure of the group
    /// and every measure; the revisions come back in `revisions`.
    pub async fn open(
        cfg: &BanyanDbExport,
        endpoint: &str,
        defs: &[MeasureDef],
        interval: &str,
    ) -> Result<Session, ExportError> {
        let tls = cfg.tls_ca_file.is_some();
        let uri = endpoint_uri(endpoint, tls).map_err(|why| ExportError::Connect {
            endpoint: endpoint.into(),
            why,
        })?;
        let timeout = cfg.timeout.0;
        let mut ep = Endpoint::from_shared(uri).map_err(|e| ExportError::Connect {
            endpoint: endpoint.into(),
            why: crate::error_chain(&e),
        })?;
        ep = ep.connect_timeout(timeout).tcp_nodelay(true);
        if let Some(ca) = &cfg.tls_ca_file {
            let pem = std::fs::read(ca).map_err(|e| ExportError::Tls {
                endpoint: endpoint.into(),
                why: format!("cannot read {}: {e}", ca.display()),
            })?;
            let mut t = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(n) = &cfg.tls_server_name {
                t = t.domain_name(n.clone());
            }
            ep = ep.tls_config(t).map_err(|e| ExportError::Tls {
                endpoint: endpoint.into(),
                why: crate::error_chain(&e),
            })?;
        }
        let auth = match (&cfg.username, &cfg.password_file) {
            (Some(u), Some(p)) => {
                let pw = read_password(p).map_err(ExportError::Password)?;
                let bad = |what: &str| ExportError::Auth {
                    endpoint: endpoint.into(),
                    user: u.clone(),
                    why: format!("the {what} is not printable ASCII"),
                };
                Auth(Some((
                    u.parse().map_err(|_| bad("username"))?,
                    pw.parse().map_err(|_| bad("password"))?,
                )))
            }
            _ => Auth(None),
        };
        let channel = match tokio::time::timeout(timeout, ep.connect()).await {
            Err(_) => {
                return Err(ExportError::Timeout {
                    endpoint: endpoint.into(),
                    what: "a connection",
                    secs: timeout.as_secs().max(1),
                })
            }
            Ok(Err(e)) => {
                let why = crate::error_chain(&e);
                return Err(if tls && is_tls(&why) {
                    ExportError::Tls {
                        endpoint: endpoint.into(),
                        why,
                    }
                } else {
                    ExportError::Connect {
                        endpoint: endpoint.into(),
                        why,
                    }
                });
            }
            Ok(Ok(c)) => c,
        };
        let svc = |c: &Channel| InterceptedService::new(c.clone(), auth.clone());
        let mut s = Session {
            endpoint: endpoint.into(),
            user: cfg.username.clone().unwrap_or_default(),
            group: cfg.group.clone(),
            timeout,
            groups: database::group_registry_service_client::GroupRegistryServiceClient::new(svc(
                &channel,
            )),
            measures: database::measure_registry_service_client::MeasureRegistryServiceClient::new(
                svc(&channel),
            ),
            writer: measure::measure_service_client::MeasureServiceClient::new(svc(&channel)),
            revisions: Vec::new(),
            next_id: 1,
        };
        s.ensure_group(cfg).await?;
        for d in defs {
            let rev = match s.ensure_measure(d, interval).await {
                Ok(r) => Some(r),
                Err(e @ ExportError::Conflict { .. }) => {
                    log::error!("export: {e}; not sending it");
                    None
                }
                Err(e) => return Err(e),
            };
            s.revisions.push(rev);
        }
        Ok(s)
    }

    /// A failed call as the operator's error.
    fn error(&self, what: &'static str, s: Status) -> ExportError {
        let why = describe(&s);
        match s.code() {
            Code::Unauthenticated | Code::PermissionDenied => ExportError::Auth {
                endpoint: self.endpoint.clone(),
                user: self.user.clone(),
                why,
            },
            _ if is_tls(&why) => ExportError::Tls {
                endpoint: self.endpoint.clone(),
                why,
            },
            _ => ExportError::Call {
                endpoint: self.endpoint.clone(),
                what,
                why,
            },
        }
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        f: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<Result<T, Status>, ExportError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| ExportError::Timeout {
                endpoint: self.endpoint.clone(),
                what,
                secs: self.timeout.as_secs().max(1),
            })
    }

    async fn ensure_group(&mut self, cfg: &BanyanDbExport) -> Result<(), ExportError> {
        let rule = |d: std::time::Duration| {
            let (unit, num) = match Interval::of(d) {
                Some(Interval::Days(n)) => (common::interval_rule::Unit::Day, n),
                Some(Interval::Hours(n)) => (common::interval_rule::Unit::Hour, n),
                // Validated in the config: whole hours or days.
                None => (common::interval_rule::Unit::Day, 1),
            };
            common::IntervalRule {
                unit: unit as i32,
                num,
            }
        };
        let group = common::Group {
            metadata: Some(common::Metadata {
                name: self.group.clone(),
                ..Default::default()
            }),
            catalog: common::Catalog::Measure as i32,
            resource_opts: Some(common::ResourceOpts {
                shard_num: cfg.shard_num,
                segment_interval: Some(rule(cfg.segment_interval.0)),
                ttl: Some(rule(cfg.ttl.0)),
            }),
        };
        let mut c = self.groups.clone();
        let r = self
            .bounded(
                "creating the group",
                c.create(database::GroupRegistryServiceCreateRequest { group: Some(group) }),
            )
            .await?;
        match r {
            Ok(_) => {
                log::info!(
                    "export: created group {} on BanyanDB at {}",
                    self.group,
                    self.endpoint
                );
                Ok(())
            }
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(self.error("creating the group", s)),
        }
    }

    fn measure_of(&self, d: &MeasureDef, interval: &str) -> database::Measure {
        database::Measure {
            metadata: Some(common::Metadata {
                group: self.group.clone(),
                name: d.name.clone(),
                ..Default::default()
            }),
            tag_families: vec![database::TagFamilySpec {
                name: TAG_FAMILY.into(),
                tags: TAGS
                    .iter()
                    .map(|t| database::TagSpec {
                        name: t.to_string(),
                        r#type: database::TagType::String as i32,
                    })
                    .collect(),
            }],
            fields: d
                .fields
                .iter()
                .map(|f| database::FieldSpec {
                    name: f.clone(),
                    field_type: database::FieldType::Int as i32,
                    encoding_method: database::EncodingMethod::Gorilla as i32,
                    compression_method: database::CompressionMethod::Zstd as i32,
                })
                .collect(),
            entity: Some(database::Entity {
                tag_names: TAGS.iter().map(|t| t.to_string()).collect(),
            }),
            interval: interval.into(),
        }
    }

    /// Creates the measure, or takes the one there: the same fields, or
    /// fewer (an older iomon's: updated by appending ours), or more (a
    /// newer iomon's: used as it is). Returns its revision.
    async fn ensure_measure(&mut self, d: &MeasureDef, interval: &str) -> Result<i64, ExportError> {
        let m = self.measure_of(d, interval);
        let mut c = self.measures.clone();
        let r = self
            .bounded(
                "creating a measure",
                c.create(database::MeasureRegistryServiceCreateRequest {
                    measure: Some(m.clone()),
                }),
            )
            .await?;
        match r {
            Ok(resp) => {
                log::info!(
                    "export: created measure {}/{} ({} fields)",
                    self.group,
                    d.name,
                    d.fields.len()
                );
                return Ok(resp.into_inner().mod_revision);
            }
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(self.error("creating a measure", s)),
        }
        let theirs = self.get_measure(&d.name).await?;
        let names: Vec<&str> = theirs.fields.iter().map(|f| f.name.as_str()).collect();
        let ours: Vec<&str> = d.fields.iter().map(String::as_str).collect();
        let rev = theirs.metadata.as_ref().map_or(0, |m| m.mod_revision);
        let common = names.iter().zip(&ours).take_while(|(a, b)| a == b).count();
        if common < names.len().min(ours.len()) {
            return Err(ExportError::Conflict {
                group: self.group.clone(),
                measure: d.name.clone(),
                theirs: names[common].into(),
                ours: ours[common].into(),
            });
        }
        if names.len() >= ours.len() {
            return Ok(rev);
        }
        let mut c = self.measures.clone();
        let r = self
            .bounded(
                "updating a measure",
                c.update(database::MeasureRegistryServiceUpdateRequest { measure: Some(m) }),
            )
            .await?;
        match r {
            Ok(resp) => {
                log::info!(
                    "export: appended {} fields to measure {}/{} ({} now)",
                    ours.len() - names.len(),
                    self.group,
                    d.name,
                    ours.len()
                );
                Ok(resp.into_inner().mod_revision)
            }
            Err(s) => Err(self.error("updating a measure", s)),
        }
    }

    async fn get_measure(&mut self, name: &str) -> Result<database::Measure, ExportError> {
        let mut c = self.measures.clone();
        let r = self
            .bounded(
                "reading a measure",
                c.get(database::MeasureRegistryServiceGetRequest {
                    metadata: Some(common::Metadata {
                        group: self.group.clone(),
                        name: name.into(),
                        ..Default::default()
                    }),
                }),
            )
            .await?;
        match r {
            Ok(resp) => resp.into_inner().measure.ok_or(ExportError::Call {
                endpoint: self.endpoint.clone(),
                what: "reading a measure",
                why: format!("no measure {name} in the answer"),
            }),
            Err(s) => Err(self.error("reading a measure", s)),
        }
    }

    /// Re-reads a measure's revision (after `STATUS_EXPIRED_SCHEMA`).
    pub async fn reread(&mut self, i: usize, d: &MeasureDef) -> Result<(), ExportError> {
        let m = self.get_measure(&d.name).await?;
        let rev = m.metadata.map_or(0, |m| m.mod_revision);
        if let Some(r) = self.revisions.get_mut(i) {
            *r = Some(rev);
        }
        Ok(())
    }

    /// Writes `points` on one stream: every message sent, the sending side
    /// closed, every reply read. The message ids keep increasing across
    /// batches.
    pub async fn write(
        &mut self,
        host: &str,
        defs: &[MeasureDef],
        points: &[Point],
    ) -> Result<Outcome, ExportError> {
        let mut reqs = Vec::with_capacity(points.len());
        let mut sent: BTreeMap<u64, usize> = BTreeMap::new();
        for p in points {
            let Some(Some(rev)) = self.revisions.get(p.measure) else {
                continue;
            };
            let id = self.next_id;
            self.next_id += 1;
            sent.insert(id, p.measure);
            reqs.push(measure::WriteRequest {
                // On every message: a stream may switch measures at any
                // message, and the first must carry it.
                metadata: Some(common::Metadata {
                    group: self.group.clone(),
                    name: defs[p.measure].name.clone(),
                    mod_revision: *rev,
                    ..Default::default()
                }),
                data_point: Some(data_point(host, p)),
                message_id: id,
            });
        }
        if reqs.is_empty() {
            return Ok(Outcome::default());
        }
        let n = reqs.len();
        let mut c = self.writer.clone();
        let resp = self
            .bounded("a write stream", c.write(tokio_stream::iter(reqs)))
            .await?
            .map_err(|s| self.error("writing", s))?;
        let mut inbound = resp.into_inner();
        let mut out = Outcome::default();
        let mut answered = 0usize;
        loop {
            let next = self.bounded("a write's replies", inbound.message()).await?;
            match next {
                Ok(Some(r)) => {
                    let Some(m) = sent.remove(&r.message_id) else {
                        continue;
                    };
                    answered += 1;
                    match r.status.as_str() {
                        "STATUS_SUCCEED" => out.succeeded += 1,
                        "STATUS_EXPIRED_SCHEMA" | "STATUS_NOT_FOUND" => {
                            if !out.expired.contains(&m) {
                                out.expired.push(m);
                            }
                        }
                        "STATUS_SCHEMA_NOT_APPLIED" => out.not_applied = true,
                        other => {
                            let e = out.refused.entry(other.to_string()).or_insert((
                                0,
                                format!("message {} to {}", r.message_id, defs[m].name),
                            ));
                            e.0 += 1;
                        }
                    }
                }
                Ok(None) => break,
                Err(s) => return Err(self.error("reading write replies", s)),
            }
        }
        if answered < n {
            return Err(ExportError::Call {
                endpoint: self.endpoint.clone(),
                what: "writing",
                why: format!(
                    "the stream ended with {} of {n} messages unanswered",
                    n - answered
                ),
            });
        }
        Ok(out)
    }
}

fn is_tls(why: &str) -> bool {
    let w = why.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "unknownissuer",
        "invalid peer",
    ]
    .iter()
    .any(|k| w.contains(k))
}

fn data_point(host: &str, p: &Point) -> measure::DataPointValue {
    let ms = p.ts_ms;
    let tag = |s: &str| model::TagValue {
        value: Some(model::tag_value::Value::Str(model::Str { value: s.into() })),
    };
    measure::DataPointValue {
        timestamp: Some(prost_types::Timestamp {
            seconds: (ms / 1000) as i64,
            nanos: ((ms % 1000) * 1_000_000) as i32,
        }),
        tag_families: vec![model::TagFamilyForWrite {
            tags: vec![tag(host), tag(&p.scope)],
        }],
        fields: p
            .values
            .iter()
            .map(|v| model::FieldValue {
                value: Some(match v {
                    Some(v) => model::field_value::Value::Int(model::Int { value: *v }),
                    None => model::field_value::Value::Null(0),
                }),
            })
            .collect(),
        // Same entity, time and version overwrite: a batch sent again
        // after a lost acknowledgement stores nothing twice.
        version: 1,
    }
}
