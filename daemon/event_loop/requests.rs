//! Answers to iomonctl's requests: what each one means, read from (or
//! applied to) the running daemon.

use std::time::Duration;

use super::Daemon;
use crate::abi;
use crate::control::Incoming;
use crate::family;
use crate::proto::{
    ErrorKind, FilesReport, Request, Response, SnapshotReport, StatusReport, TopReport,
};
use crate::sample::{merge_files, top_k, top_over, FilesBy, Sample, TopBy};
use crate::store::Store;
use crate::units::{format_duration, now_ms};

impl Daemon {
    pub(super) fn answer(&mut self, inc: Incoming) {
        let resp = match inc.request {
            Request::Hello { .. } => return,
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Snapshot => Response::Snapshot(Box::new(SnapshotReport {
                started_ms: self.totals.started_ms,
                ticks: self.totals.ticks,
                last: self.totals.last.clone(),
                totals: self.totals.sum.clone(),
            })),
            Request::Probes => Response::Probes(self.probes.status()),
            Request::Top {
                by,
                n,
                since_ms,
                target,
            } => match TopBy::parse(&by) {
                Some(b) => self.top(b, &by, n as usize, since_ms, target.as_deref()),
                None => failed(&format!(
                    "unknown ranking {by:?}; one of: {}",
                    family::ranks().join(", ")
                )),
            },
            Request::History {
                since_ms,
                until_ms,
                step_ms,
            } => match &self.store {
                None => failed("the history store is disabled (store.enabled = false)"),
                Some(st) => {
                    // "Until now" includes Samples stamped ahead of the wall
                    // clock (it was set back).
                    let until = until_ms.unwrap_or_else(|| now_ms() + self.drain.ahead_ms() + 1);
                    match st.range(since_ms, until, step_ms) {
                        Ok(h) => Response::History(h),
                        Err(e) => failed(&e.to_string()),
                    }
                }
            },
            Request::GetStrategy => Response::Strategy {
                current: self.drain.strategy(),
                previous: None,
            },
            Request::SetStrategy(s) => {
                let previous = self.drain.strategy();
                self.drain.set_strategy(s);
                // Run-time changes live in the config, so a reload compares
                // against them.
                self.cfg.daemon.strategy = s.into();
                self.set_at_runtime.strategy = true;
                log::info!(
                    "strategy {} -> {} (by uid {:?})",
                    previous.name(),
                    s.name(),
                    inc.peer.map(|p| p.uid)
                );
                Response::Strategy {
                    current: s,
                    previous: Some(previous),
                }
            }
            Request::GetInterval => Response::Interval {
                current_ms: self.interval.as_millis() as u64,
                previous_ms: None,
            },
            Request::SetInterval { ms } => {
                let d = Duration::from_millis(ms);
                if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&d) {
                    failed(&format!(
                        "interval {} is outside 100ms..1h",
                        format_duration(d)
                    ))
                } else {
                    let previous = self.interval;
                    self.pending_interval = Some(d);
                    self.cfg.daemon.interval = crate::units::Span(d);
                    self.set_at_runtime.interval = true;
                    log::info!(
                        "interval {} -> {} from the next tick (by uid {:?})",
                        format_duration(previous),
                        format_duration(d),
                        inc.peer.map(|p| p.uid)
                    );
                    Response::Interval {
                        current_ms: ms,
                        previous_ms: Some(previous.as_millis() as u64),
                    }
                }
            }
            Request::Reload => match self.reload() {
                Ok(changes) => Response::Reloaded { changes },
                Err(e) => failed(&format!("reload refused, the running config is kept: {e}")),
            },
            Request::Files {
                by,
                n,
                since_ms,
                target,
            } => self.files(by, n as usize, since_ms, target.as_deref()),
            Request::BanyanDb {
                since_ms,
                n,
                target,
            } => self.banyandb(since_ms, n as usize, target.as_deref()),
        };
        self.control.reply(self.poll.registry(), inc.token, &resp);
    }

    fn top(
        &self,
        by: TopBy,
        by_name: &str,
        n: usize,
        since_ms: Option<u64>,
        target: Option<&str>,
    ) -> Response {
        let n = n.clamp(1, 1000);
        // A target's processes: those whose events counted for it.
        let only = |s: &Sample| -> Result<Sample, Response> {
            match target {
                None => Ok(s.clone()),
                Some(t) => s
                    .for_target(t)
                    .ok_or_else(|| self.no_target(t, "in this window")),
            }
        };
        match since_ms {
            None => {
                let last = self.totals.last.clone().unwrap_or_default();
                let last = match only(&last) {
                    Ok(s) => s,
                    Err(r) if self.totals.last.is_some() => return r,
                    Err(_) => last,
                };
                let families = last.measured();
                let mut procs = last.procs;
                top_k(&mut procs, by, n);
                Response::Top(TopReport {
                    start_ms: last.start_ms,
                    end_ms: last.end_ms,
                    by: by_name.to_string(),
                    procs,
                    families,
                })
            }
            Some(since) => {
                let now = now_ms();
                let Some(st) = &self.store else {
                    return failed("top --since needs the history store (store.enabled = false)");
                };
                match st.window(since, now) {
                    Ok(points) => {
                        let (procs, families) = top_over(&points, by, n, target);
                        Response::Top(TopReport {
                            start_ms: since,
                            end_ms: now,
                            by: by_name.to_string(),
                            procs,
                            families,
                        })
                    }
                    Err(e) => failed(&e.to_string()),
                }
            }
        }
    }

    /// The answer to a query for a target there is not.
    fn no_target(&self, t: &str, when: &str) -> Response {
        failed(&format!(
            "no target {t:?} {when}; targets: {}",
            self.drain
                .target_status()
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The targets' files since `since` from the history: each point's
    /// top files, summed per file.
    fn files(&self, by: FilesBy, n: usize, since: u64, target: Option<&str>) -> Response {
        let n = n.clamp(1, 10_000);
        let now = now_ms();
        let Some(st) = &self.store else {
            return failed("files needs the history store (store.enabled = false)");
        };
        let h = match st.range(since, now, None) {
            Ok(h) => h,
            Err(e) => return failed(&e.to_string()),
        };
        let known = |t: &str| self.drain.target_status().iter().any(|s| s.name == t);
        if let Some(t) = target {
            if !known(t) && !h.points.iter().any(|p| p.targets.contains_key(t)) {
                return self.no_target(t, "now or in this window");
            }
        }
        let mut files = Vec::new();
        let (mut truncated, mut unresolved, mut refused) = (0, 0, 0);
        for p in &h.points {
            let mine: Vec<_> = p
                .files
                .iter()
                .filter(|f| target.is_none_or(|t| f.target == t))
                .cloned()
                .collect();
            merge_files(&mut files, &mine);
            truncated += p.files_truncated;
            unresolved += p.files_unresolved;
            refused += p.core(abi::core::FILE_DROPPED) + p.core(abi::core::FILE_SET_DROPPED);
        }
        by.sort(&mut files);
        files.truncate(n);
        Response::Files(FilesReport {
            start_ms: since,
            end_ms: now,
            by,
            files,
            truncated,
            unresolved,
            refused,
        })
    }

    /// Is the page cache working for BanyanDB, since `since`.
    fn banyandb(&self, since: u64, n: usize, target: Option<&str>) -> Response {
        let now = now_ms();
        let Some(st) = &self.store else {
            return failed("banyandb needs the history store (store.enabled = false)");
        };
        let h = match st.range(since, now, None) {
            Ok(h) => h,
            Err(e) => return failed(&e.to_string()),
        };
        if let Some(t) = target {
            let known = self.drain.target_status().iter().any(|s| s.name == t);
            if !known && !h.points.iter().any(|p| p.targets.contains_key(t)) {
                return self.no_target(t, "now or in this window");
            }
        }
        let mut r = crate::report::build(&h.points, since, now, target, n);
        r.refault_window_ms = self.cfg.files.refault_window.0.as_millis() as u64;
        r.naming = Some(self.file_paths.status());
        r.answer = r.words();
        Response::BanyanDb(Box::new(r))
    }

    pub fn status(&self) -> StatusReport {
        let mut warnings = self.warnings.clone();
        if let Some(st) = &self.store {
            if st.write_errors > 0 {
                warnings.push(format!("{} history store write errors", st.write_errors));
            }
        }
        if self.late_ticks > 0 {
            warnings.push(format!(
                "{} ticks ran late by a whole interval",
                self.late_ticks
            ));
        }
        let proc_dropped = self.totals.sum.core(crate::abi::core::PROC_DROPPED);
        if proc_dropped > 0 {
            warnings.push(format!(
                "{proc_dropped} per-process events were not recorded: more processes were active in one interval than the kernel's per-process map holds (daemon.proc_capacity = {}); host-wide numbers are whole",
                self.cfg.daemon.proc_capacity
            ));
        }
        let naming = self.file_paths.status();
        for d in &naming.missing_dirs {
            let hint = if d.starts_with("/tmp/") || d.starts_with("/home/") {
                " (under /tmp or /home a unit with PrivateTmp= or ProtectHome= cannot see it, as the packaged one: give BanyanDB root paths elsewhere)"
            } else {
                ""
            };
            warnings.push(format!(
                "{d} does not exist here: a BanyanDB process's flags or files.data_dirs name it{hint}"
            ));
        }
        if naming.cmdline_unreadable > 0 {
            warnings.push(format!(
                "{} target processes' command lines could not be read: their BanyanDB roots are unknown",
                naming.cmdline_unreadable
            ));
        }
        let refault_dropped = self.totals.sum.core(crate::abi::core::REFAULT_DROPPED);
        if refault_dropped > 0 {
            warnings.push(format!(
                "{refault_dropped} evicted pages were not remembered for refaults: the kernel's map of evicted blocks was full (files.refault_blocks = {})",
                self.cfg.files.refault_blocks
            ));
        }
        let export = self.exporter.as_ref().map(|e| e.status());
        if let Some(e) = export.as_ref().filter(|e| e.state != "connected") {
            if let Some(err) = &e.last_error {
                warnings.push(format!("BanyanDB export: {err}"));
            }
        }
        let ahead = self.drain.ahead_ms();
        if ahead > 2_000 {
            warnings.push(format!(
                "the wall clock was set back: history timestamps run {} ahead of it until it catches up",
                format_duration(Duration::from_millis(ahead))
            ));
        }
        StatusReport {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_ms: self.totals.started_ms,
            now_ms: now_ms(),
            interval_ms: self.interval.as_millis() as u64,
            strategy: self.drain.strategy(),
            kernel: self.probes.kernel_release.clone(),
            page_size_bytes: 1 << self.probes.page_shift,
            families: self.probes.status(),
            store: self.store.as_ref().map(Store::status),
            export,
            ticks: self.totals.ticks,
            last_tick_ms: self.totals.last.as_ref().map(|s| s.end_ms),
            last_drain_us: self.drain.last_duration.as_micros() as u64,
            tick_parts: self.drain.last_parts,
            socket: self.control.path().display().to_string(),
            http: self
                .http
                .as_ref()
                .map(|h| {
                    h.addresses()
                        .iter()
                        .map(|a| format!("http://{a}/metrics"))
                        .collect()
                })
                .unwrap_or_default(),
            proc_map_capacity: self.cfg.daemon.proc_capacity,
            proc_table_len: self.totals.procs_len() as u64,
            truncated: self.totals.truncated,
            proc_dropped,
            targets: self.drain.target_status(),
            banyandb: crate::report::Status {
                naming,
                refault_window_ms: self.cfg.files.refault_window.0.as_millis() as u64,
                evicted_blocks: self.evicted_blocks(),
                evicted_blocks_max: self.cfg.files.refault_blocks as u64,
                memcg: self
                    .totals
                    .last
                    .as_ref()
                    .map(|s| s.memcg.clone())
                    .unwrap_or_default(),
            },
            warnings,
        }
    }
}

fn failed(msg: &str) -> Response {
    Response::Error {
        kind: ErrorKind::Failed,
        message: msg.to_string(),
    }
}

/// The line `--dev` prints per tick.
pub fn tick_line(s: &Sample, t: &crate::drain::TickParts) -> String {
    let mut parts = vec![format!("tick {:.1}s", s.seconds())];
    parts.extend(
        family::ALL
            .iter()
            .filter_map(|f| s.section(f.name()).map(|sec| (f.tick)(sec, s.seconds()))),
    );
    parts.push(format!("procs {}", s.procs_seen));
    parts.push(format!(
        "drain read {}us store {}us publish {}us, loop blocked {}us at most, switch {}us off the loop",
        t.read_us, t.store_us, t.publish_us, t.blocked_us, t.switch_us
    ));
    parts.join(" | ")
}
