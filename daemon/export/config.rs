//! `[export.banyandb]`: where iomond writes its history, and how much.
//! Absent: no exporter (the default).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::Span;

/// BanyanDB's default gRPC port, added to an endpoint without one.
pub const DEFAULT_PORT: u16 = 17912;

/// What a data point's `scope` tag can be, by kind.
pub const SCOPES: [&str; 4] = ["host", "targets", "rows", "banyandb"];

/// `[export]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banyandb: Option<BanyanDbExport>,
}

/// One endpoint or several (a cluster's liaison nodes, tried in turn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Endpoints {
    One(String),
    Many(Vec<String>),
}

impl Endpoints {
    pub fn list(&self) -> Vec<String> {
        match self {
            Endpoints::One(e) => vec![e.clone()],
            Endpoints::Many(v) => v.clone(),
        }
    }
}

/// `[export.banyandb]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BanyanDbExport {
    /// `host:port` of the liaison's gRPC (17912 when the port is left out).
    pub endpoint: Endpoints,
    /// The group iomon's measures live in (created when missing).
    pub group: String,
    /// The group's retention and segment length (whole hours or days:
    /// BanyanDB's interval units).
    pub ttl: Span,
    pub segment_interval: Span,
    pub shard_num: u32,
    /// PEM CA certificate(s) the server's certificate must chain to; set:
    /// TLS, unset: plain text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the
    /// endpoint's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// Sent as the `username` / `password` metadata of every call when the
    /// server has authentication on. The password is read from a file
    /// (mode 0600, owned by iomond's user), never from this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Families sent (empty: every attached family).
    pub families: Vec<String>,
    /// Scopes sent: `host` (host-wide), `targets` (each target's own),
    /// `rows` (a family's per-key numbers: block devices), `banyandb`
    /// (the targets' files by engine, group and kind).
    pub scopes: Vec<String>,
    /// The `host` tag (default: the machine's hostname).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Samples per write stream (a batch: acknowledged at its end).
    pub batch: usize,
    /// Data points sent per second at most (catching up after an outage).
    pub max_points_per_second: u32,
    /// Once caught up, what is new is sent this often (a stream per
    /// Sample would cost more than the Sample: BENCHMARKS.md, "Export").
    pub send_interval: Span,
    /// How long a call may take before the server is taken as hung.
    pub timeout: Span,
    /// Reconnects back off from 1 s, doubling, to at most this.
    pub retry_max: Span,
}

impl Default for BanyanDbExport {
    fn default() -> Self {
        BanyanDbExport {
            endpoint: Endpoints::One(format!("127.0.0.1:{DEFAULT_PORT}")),
            group: "iomon".into(),
            ttl: Span::secs(7 * 86_400),
            segment_interval: Span::secs(86_400),
            shard_num: 1,
            tls_ca_file: None,
            tls_server_name: None,
            username: None,
            password_file: None,
            families: Vec::new(),
            scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
            host: None,
            batch: 60,
            max_points_per_second: 5000,
            send_interval: Span::secs(5),
            timeout: Span::secs(10),
            retry_max: Span::secs(60),
        }
    }
}

/// BanyanDB's `IntervalRule`: a number of hours or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hours(u32),
    Days(u32),
}

impl Interval {
    /// Whole days as days, else whole hours; `None` for anything else.
    pub fn of(d: Duration) -> Option<Interval> {
        let s = d.as_secs();
        if d.subsec_nanos() != 0 || s == 0 || !s.is_multiple_of(3600) {
            return None;
        }
        let n = |v: u64| u32::try_from(v).ok();
        if s.is_multiple_of(86_400) {
            n(s / 86_400).map(Interval::Days)
        } else {
            n(s / 3600).map(Interval::Hours)
        }
    }
}

impl BanyanDbExport {
    /// Every key checked; the error names the key (under
    /// `export.banyandb.`) and what to write instead.
    pub fn validate(&self, known_families: &[&str]) -> Result<(), (&'static str, String)> {
        let eps = self.endpoint.list();
        if eps.is_empty() {
            return Err(("endpoint", "no endpoint: write host:17912".into()));
        }
        for e in &eps {
            endpoint_uri(e, self.tls_ca_file.is_some()).map_err(|m| ("endpoint", m))?;
        }
        if self.group.is_empty()
            || !self
                .group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err((
                "group",
                format!(
                    "{:?}: a group name is letters, digits, '_' and '-'",
                    self.group
                ),
            ));
        }
        for (key, v) in [
            ("ttl", self.ttl),
            ("segment_interval", self.segment_interval),
        ] {
            if Interval::of(v.0).is_none() {
                return Err((
                    key,
                    format!("{v} is not a whole number of hours or days (BanyanDB's units)"),
                ));
            }
        }
        if self.segment_interval.0 > self.ttl.0 {
            return Err((
                "segment_interval",
                format!(
                    "{} is longer than ttl {}: a segment is at most the retention",
                    self.segment_interval, self.ttl
                ),
            ));
        }
        if self.shard_num == 0 || self.shard_num > 1024 {
            return Err((
                "shard_num",
                format!("{} is outside 1..1024", self.shard_num),
            ));
        }
        if let Some(p) = &self.tls_ca_file {
            std::fs::read(p)
                .map_err(|e| ("tls_ca_file", format!("cannot read {}: {e}", p.display())))?;
        }
        match (&self.username, &self.password_file) {
            (Some(_), None) => {
                return Err((
                    "password_file",
                    "username is set but password_file is not: name the file holding the password"
                        .into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "username",
                    "password_file is set but username is not".into(),
                ))
            }
            (Some(_), Some(p)) => {
                read_password(p).map_err(|m| ("password_file", m))?;
            }
            (None, None) => {}
        }
        for f in &self.families {
            if !known_families.contains(&f.as_str()) {
                return Err((
                    "families",
                    format!(
                        "{f:?} is not a family (known: {})",
                        known_families.join(", ")
                    ),
                ));
            }
        }
        for s in &self.scopes {
            if !SCOPES.contains(&s.as_str()) {
                return Err((
                    "scopes",
                    format!("{s:?} is not a scope (known: {})", SCOPES.join(", ")),
                ));
            }
        }
        if let Some(h) = &self.host {
            if h.is_empty() {
                return Err(("host", "empty: leave it out to use the hostname".into()));
            }
        }
        if !(1..=3600).contains(&self.batch) {
            return Err(("batch", format!("{} is outside 1..3600", self.batch)));
        }
        if self.max_points_per_second == 0 {
            return Err(("max_points_per_second", "must be at least 1".into()));
        }
        if self.send_interval.0 > Duration::from_secs(600) {
            return Err((
                "send_interval",
                format!("{} is over 10m", self.send_interval),
            ));
        }
        if self.retry_max.0 < Duration::from_secs(1) || self.retry_max.0 > Duration::from_secs(3600)
        {
            return Err(("retry_max", format!("{} is outside 1s..1h", self.retry_max)));
        }
        if self.timeout.0 < Duration::from_millis(100) || self.timeout.0 > Duration::from_secs(600)
        {
            return Err(("timeout", format!("{} is outside 100ms..10m", self.timeout)));
        }
        Ok(())
    }

    pub fn sends_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// `host:port` (or `host`) as the URI the channel connects to.
pub fn endpoint_uri(e: &str, tls: bool) -> Result<String, String> {
    let e = e.trim();
    if e.is_empty() || e.contains('/') || e.contains(char::is_whitespace) {
        return Err(format!(
            "{e:?} is not host:port (such as banyandb-liaison:17912)"
        ));
    }
    let has_port = if let Some(rest) = e.strip_prefix('[') {
        // [v6]:port or [v6]
        match rest.split_once(']') {
            Some((_, "")) => false,
            Some((_, p)) => {
                let p = p
                    .strip_prefix(':')
                    .ok_or(format!("{e:?}: expected ]:port"))?;
                p.parse::<u16>()
                    .map_err(|_| format!("{e:?}: {p:?} is not a port"))?;
                true
            }
            None => return Err(format!("{e:?}: unclosed [")),
        }
    } else {
        match e.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => {
                p.parse::<u16>()
                    .map_err(|_| format!("{e:?}: {p:?} is not a port"))?;
                true
            }
            Some(_) => return Err(format!("{e:?}: write an IPv6 address as [addr]:port")),
            None => false,
        }
    };
    let scheme = if tls { "https" } else { "http" };
    Ok(if has_port {
        format!("{scheme}://{e}")
    } else {
        format!("{scheme}://{e}:{DEFAULT_PORT}")
    })
}

/// The password file's first line. Refused when others may read it.
pub fn read_password(p: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if md.mode() & 0o077 != 0 {
        return Err(format!(
            "{} may be read by others (mode {:o}): chmod 600 it",
            p.display(),
            md.mode() & 0o777
        ));
    }
    let text =
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let pw = text.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        return Err(format!(
            "{} is empty: its first line is the password",
            p.display()
        ));
    }
    Ok(pw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_whole_hours_or_days() {
        assert_eq!(
            Interval::of(Duration::from_secs(86_400 * 7)),
            Some(Interval::Days(7))
        );
        assert_eq!(
            Interval::of(Duration::from_secs(3600 * 30)),
            Some(Interval::Hours(30))
        );
        assert_eq!(Interval::of(Duration::from_secs(90 * 60)), None);
        assert_eq!(Interval::of(Duration::ZERO), None);
    }

    #[test]
    fn endpoints_become_uris_with_the_default_port() {
        assert_eq!(endpoint_uri("db:17912", false).unwrap(), "http://db:17912");
        assert_eq!(endpoint_uri("db", true).unwrap(), "https://db:17912");
        assert_eq!(endpoint_uri("[::1]:5", false).unwrap(), "http://[::1]:5");
        assert_eq!(endpoint_uri("[::1]", false).unwrap(), "http://[::1]:17912");
        assert!(endpoint_uri("db:x", false).is_err());
        assert!(endpoint_uri("::1", false).is_err());
        assert!(endpoint_uri("http://db", false).is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let ok = BanyanDbExport::default();
        assert_eq!(ok.validate(&["fadvise"]), Ok(()));
        let bad = |f: fn(&mut BanyanDbExport)| {
            let mut c = BanyanDbExport::default();
            f(&mut c);
            c.validate(&["fadvise"]).unwrap_err().0
        };
        assert_eq!(bad(|c| c.ttl = Span(Duration::from_secs(90 * 60))), "ttl");
        assert_eq!(
            bad(|c| c.segment_interval = Span::secs(30 * 86_400)),
            "segment_interval"
        );
        assert_eq!(bad(|c| c.families = vec!["nope".into()]), "families");
        assert_eq!(bad(|c| c.scopes = vec!["nope".into()]), "scopes");
        assert_eq!(bad(|c| c.username = Some("u".into())), "password_file");
        assert_eq!(bad(|c| c.group = "a b".into()), "group");
        assert_eq!(bad(|c| c.endpoint = Endpoints::Many(vec![])), "endpoint");
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, "secret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_password(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password(&p).unwrap(), "secret");
    }
}
