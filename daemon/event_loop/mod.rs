//! The daemon: one thread, one `mio::Poll`. Sources: signals, the control
//! socket (listener and connections), the HTTP listeners, and the drain's
//! barrier (a thread that only waits for an RCU grace period, so that this
//! one never does: see `drain::barrier`) and the store's writer (its
//! commits wait for the disk: see `store::writer`); the drain tick, the
//! store flush and the systemd watchdog are deadlines on the monotonic clock that set
//! the poll timeout, so a burst of clients or a signal never pushes a tick
//! back. A tick is two steps with the loop serving clients between them:
//! begin (read the host-wide maps, flip the interval maps, ask for the
//! grace period) and, when the barrier wakes the loop, finish (read what
//! programs left, then the totals, the store and the pages).

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

mod export;
mod requests;
mod tick;
mod turns;

use crate::config::Config;
use crate::control::{ControlServer, ListenOptions};
use crate::drain::{upkeep, Barrier, BarrierThread, Begun, Drain, Finishing, Strategy, Upkeep};
use crate::file_paths::FilePaths;
use crate::http::HttpServer;
use crate::probes::{FamilyState, LoadOptions, Probes};
use crate::store::{Store, StoreOptions};
use crate::totals::Totals;
use crate::units::{format_duration, now_ms};
pub use requests::tick_line;

const SIGNALS: Token = Token(0);
const CONTROL: Token = Token(1);
const BARRIER: Token = Token(2);
/// HTTP listeners take tokens HTTP_LISTEN.. HTTP_LISTEN + 15.
pub const HTTP_LISTEN: usize = 16;
const CONTROL_CONNS: usize = 1 << 24;
pub const HTTP_CONNS: usize = 2 << 24;

/// How the daemon was started, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    /// Config file to re-read on SIGHUP / reload (None: defaults only).
    pub config_path: Option<PathBuf>,
    /// Applies command-line overrides to a freshly read config.
    pub overrides: Overrides,
    /// Print one line per tick.
    pub tick_lines: bool,
    /// Notify systemd (READY, STATUS, WATCHDOG, STOPPING).
    pub systemd: bool,
}

/// Command-line options that win over the file (None: not given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub interval: Option<Duration>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub metrics_listen: Vec<String>,
    pub log_level: Option<String>,
    /// Probe families switched on or off, by name.
    pub enable: Vec<&'static str>,
    pub disable: Vec<&'static str>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(i) = self.interval {
            cfg.daemon.interval = crate::units::Span(i);
        }
        if let Some(d) = &self.state_dir {
            cfg.daemon.state_dir.clone_from(d);
        }
        if let Some(s) = &self.socket {
            cfg.daemon.socket.clone_from(s);
        }
        if let Some(g) = &self.socket_group {
            cfg.daemon.socket_group.clone_from(g);
        }
        if !self.metrics_listen.is_empty() {
            cfg.metrics.listen.clone_from(&self.metrics_listen);
        }
        if let Some(l) = &self.log_level {
            cfg.daemon.log_level.clone_from(l);
        }
        for (ids, on) in [(&self.enable, true), (&self.disable, false)] {
            for id in ids {
                cfg.probes.set(id, on);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no probe family could be attached:\n{0}")]
    NothingAttached(String),
    #[error(transparent)]
    Probe(#[from] crate::probes::ProbeError),
    #[error(transparent)]
    Drain(#[from] crate::drain::DrainError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("failed to set up the event loop")]
    Poll(#[source] io::Error),
    #[error("failed to serve metrics: {0}")]
    Http(String),
}

/// Names that always get a per-name series: metrics.targets, and the names
/// of targets that match by name.
fn pinned_names(cfg: &Config) -> Vec<String> {
    let mut v = cfg.metrics.targets.clone();
    for c in cfg.targets.comms() {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v
}

pub fn store_options(cfg: &Config) -> StoreOptions {
    StoreOptions {
        retention_raw: cfg.store.retention_raw.0,
        retention_1m: cfg.store.retention_1m.0,
        retention_1h: cfg.store.retention_1h.0,
        max_bytes: cfg.store.max_size.0,
        top_k: cfg.daemon.top_k,
        raw_resolution_ms: cfg.daemon.interval.0.as_millis() as u64,
    }
}

/// Every family that is wanted but did not attach, one line each.
pub fn describe_unavailable(probes: &Probes) -> String {
    probes
        .status()
        .iter()
        .filter_map(|s| match &s.state {
            FamilyState::Unavailable(why) | FamilyState::Failed(why) => {
                Some(format!("  {}: {why}", s.family))
            }
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub struct Daemon {
    cfg: Config,
    startup: Startup,
    poll: Poll,
    signals: Signals,
    probes: Probes,
    drain: Drain,
    /// Waits for grace periods off this thread; `None` if it could not be
    /// started (then a tick waits here, as before).
    barrier: Option<BarrierThread>,
    /// A tick begun, waiting for its grace period, and how long beginning
    /// it held the loop.
    begun: Option<Begun>,
    /// A tick past its grace period, read a bounded part per loop turn.
    finishing: Option<Finishing>,
    begin_blocked: Duration,
    /// How long each loop turn kept clients waiting.
    turns: turns::Turns,
    missed: crate::probes::missed::MissedWatch,
    file_paths: FilePaths,
    /// The memory cgroups' own counters and the host's.
    memcg: crate::banyandb::memcg::Reader,
    totals: Totals,
    store: Option<Store>,
    exporter: Option<crate::export::Exporter>,
    /// Counts the BPF maps' entries and prunes them, off the loop.
    upkeep: Option<Upkeep>,
    control: ControlServer,
    http: Option<HttpServer>,
    interval: Duration,
    pending_interval: Option<Duration>,
    /// What `iomonctl interval set` / `strategy set` changed since the
    /// config was last read: a reload reverts it, and says so.
    pub(crate) set_at_runtime: SetAtRuntime,
    next_tick: Instant,
    next_flush: Instant,
    next_watchdog: Option<(Instant, Duration)>,
    last_tick: Option<Instant>,
    /// Ticks whose deadline had already passed when the loop got to them.
    pub late_ticks: u64,
    /// How late the last tick ran after its deadline.
    pub last_lag: Duration,
    warnings: Vec<String>,
    stopping: bool,
}

/// The barrier thread, waking the loop through `BARRIER`.
fn start_barrier(poll: &Poll, drain: &Drain) -> io::Result<BarrierThread> {
    let waker = mio::Waker::new(poll.registry(), BARRIER)?;
    let maps = drain.maps();
    let barrier = Barrier::new(&maps.barrier, &maps.barrier_inner).map_err(io::Error::other)?;
    BarrierThread::spawn(
        barrier,
        Box::new(move || {
            // A wake that fails leaves the tick to the next poll timeout.
            let _ = waker.wake();
        }),
    )
}

/// A warning at start: logged, and kept for `iomonctl status`.
fn warn_at_start(warnings: &mut Vec<String>, w: String) {
    log::warn!("{w}");
    warnings.push(w);
}

fn notify(on: bool, states: &[sd_notify::NotifyState]) {
    if on {
        let _ = sd_notify::notify(false, states);
    }
}

impl Daemon {
    pub fn start(cfg: Config, startup: Startup) -> Result<Daemon, StartError> {
        // What another iomond holds (its socket, its store's lock) is
        // refused before anything is loaded: a second instance fails at
        // once, without attaching probes it would only detach again.
        ControlServer::refuse_if_answered(&cfg.daemon.socket)?;
        let mut warnings = Vec::new();
        let store = if cfg.store.enabled {
            let dir = cfg.daemon.state_dir.join("history");
            let st = Store::open(&dir, store_options(&cfg))?;
            if let Some(p) = &st.moved_aside {
                warnings.push(format!(
                    "the history store could not be opened and was moved to {}",
                    p.display()
                ));
            }
            Some(st)
        } else {
            None
        };
        let mut probes = Probes::load(&LoadOptions {
            enabled: cfg.probes.enabled(),
            proc_capacity: cfg.daemon.proc_capacity,
            refault_window_ns: cfg.files.refault_window.0.as_nanos() as u64,
            refault_blocks: cfg.files.refault_blocks,
            ..Default::default()
        })?;
        for s in probes.status() {
            match &s.state {
                FamilyState::Attached => log::info!(
                    "probe family {} attached (route {})",
                    s.family,
                    s.route.as_deref().unwrap_or("?")
                ),
                FamilyState::Disabled => {
                    log::info!("probe family {} disabled in the config", s.family)
                }
                FamilyState::Unavailable(why) => {
                    log::info!(
                        "probe family {} unavailable on this kernel: {why}",
                        s.family
                    );
                }
                FamilyState::Failed(why) => {
                    log::warn!("probe family {} failed: {why}", s.family);
                    warnings.push(format!("probe family {} failed: {why}", s.family));
                }
            }
        }
        // Programs on demand whose sign is already there.
        for (level, line) in probes.attach_wanted_at_start() {
            log::log!(level, "{line}");
        }
        if probes.hz.is_none() {
            warn_at_start(&mut warnings, "the kernel's HZ could not be told (no /boot/config, /proc/config.gz or /proc/timer_list): writeback dirty age is not measured".to_string());
        }
        if !probes.any_attached() {
            return Err(StartError::NothingAttached(describe_unavailable(&probes)));
        }
        let mut drain = Drain::new(
            probes.maps()?,
            probes.attached_families(),
            cfg.daemon.proc_capacity,
            cfg.daemon.strategy.into(),
        )?
        .with_unmeasured(probes.unmeasured_hists())
        .with_refault_window(cfg.files.refault_window.0.as_nanos() as u64);
        drain.apply_targets_now(cfg.targets.matchers())?;
        for t in drain.target_status() {
            match &t.inactive {
                None => log::info!("target {} ({}) counted", t.name, t.matches),
                Some(why) => log::info!(
                    "target {} ({}) not counted yet: {why}; looked up again every tick",
                    t.name,
                    t.matches
                ),
            }
        }

        // Samples never go back past what is stored (a restart with the
        // wall clock behind the store's newest Sample).
        if let Some(newest) = store.as_ref().and_then(|st| st.status().newest_ms) {
            drain.not_before(newest + 1);
        }

        // The BanyanDB layout the config names (checked when it was read).
        let layout = match &cfg.files.banyandb_layout {
            Some(p) => std::fs::read_to_string(p)
                .ok()
                .and_then(|t| crate::banyandb::Layout::parse(&t).ok()),
            None => None,
        };
        let poll = Poll::new().map_err(StartError::Poll)?;
        let barrier = match start_barrier(&poll, &drain) {
            Ok(b) => Some(b),
            Err(e) => {
                warn_at_start(&mut warnings, format!(
                    "could not start the drain's barrier thread ({e}): each tick waits for the kernel on the event loop"
                ));
                None
            }
        };
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(StartError::Poll)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(StartError::Poll)?;
        let control = ControlServer::listen(
            poll.registry(),
            CONTROL,
            CONTROL_CONNS,
            &ListenOptions {
                path: &cfg.daemon.socket,
                group: Some(&cfg.daemon.socket_group),
                admin_group: Some(&cfg.daemon.admin_group),
                max_clients: cfg.daemon.max_clients,
                idle_timeout: cfg.daemon.client_idle_timeout.0,
            },
        )?;
        log::info!(
            "control socket listening on {}",
            cfg.daemon.socket.display()
        );
        let http = if cfg.metrics.listen.is_empty() {
            None
        } else {
            let h = HttpServer::listen(
                poll.registry(),
                &cfg.metrics.listen,
                HTTP_LISTEN,
                HTTP_CONNS,
            )
            .map_err(|e| StartError::Http(format!("{e:#}")))?;
            for a in h.addresses() {
                log::info!("serving metrics on http://{a}/metrics");
            }
            Some(h)
        };
        // The maps are counted for the gauges only where they are served.
        let counted = http
            .as_ref()
            .map(|_| crate::http::counted_maps(drain.maps()));
        let upkeep = match Upkeep::spawn(counted.as_deref(), drain.prune(), upkeep::EVERY) {
            Ok(u) => {
                drain.pruned_elsewhere();
                Some(u)
            }
            Err(e) => {
                warn_at_start(&mut warnings, format!(
                    "could not start the thread that keeps the BPF maps ({e}): the ticks prune them, holding requests meanwhile, and iomon_bpf_map_entries leaves out all but procs, target_files and evicted_blocks"
                ));
                None
            }
        };

        let now = Instant::now();
        let interval = cfg.daemon.interval.0;
        let mut watchdog_usec = 0u64;
        let next_watchdog = (startup.systemd
            && sd_notify::watchdog_enabled(false, &mut watchdog_usec))
        .then(|| {
            let period = Duration::from_micros(watchdog_usec) / 2;
            (now + period, period)
        });
        let started_ms = now_ms();
        let exporter = store.as_ref().and_then(|_| export::start(&cfg));
        let mut d = Daemon {
            totals: Totals::new(
                started_ms,
                cfg.daemon.proc_table_max,
                cfg.daemon.proc_idle_ttl.0.as_millis() as u64,
            )
            .with_series(&pinned_names(&cfg), cfg.metrics.max_series),
            next_flush: now + cfg.store.flush_interval.0,
            file_paths: {
                let mut fp = FilePaths::new(cfg.files.data_dirs.clone());
                if let Some(l) = &layout {
                    fp.set_layout(l.clone());
                }
                fp
            },
            memcg: crate::banyandb::memcg::Reader::new(
                crate::probes::targets::cgroup2_mount(),
                crate::banyandb::memcg::cgroup1_memory_mount(),
                std::path::PathBuf::from("/proc/vmstat"),
            ),
            cfg,
            startup,
            poll,
            signals,
            probes,
            drain,
            barrier,
            begun: None,
            finishing: None,
            begin_blocked: Duration::ZERO,
            turns: turns::Turns::default(),
            missed: Default::default(),
            store,
            exporter,
            upkeep,
            control,
            http,
            interval,
            pending_interval: None,
            set_at_runtime: SetAtRuntime::default(),
            next_tick: now + interval,
            next_watchdog,
            last_tick: None,
            late_ticks: 0,
            last_lag: Duration::ZERO,
            warnings,
            stopping: false,
        };
        d.publish();
        notify(
            d.startup.systemd,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&d.status_line()),
            ],
        );
        Ok(d)
    }

    /// A tick happened: the HTTP pages are rendered again when asked for.
    fn publish(&mut self) {
        if let Some(h) = &mut self.http {
            h.ticked(self.last_tick, self.interval);
        }
    }

    /// Renders the pages requests wait for (once per tick and page).
    fn render_wanted(&mut self) {
        let Some(h) = &self.http else { return };
        let wanted = h.wanted();
        if wanted.is_empty() {
            return;
        }
        let t = Instant::now();
        let counted = self.upkeep.as_ref().map(Upkeep::last).unwrap_or_default();
        let procs_seen = self.totals.last.as_ref().map_or(0, |s| s.procs_seen);
        let files_seen = self
            .totals
            .last
            .as_ref()
            .map_or(0, |s| s.files.len() as u64 + s.files_truncated);
        let view = crate::http::View {
            totals: &self.totals,
            probes: self.probes.status(),
            store: self.store.as_ref().map(Store::status),
            export: self.exporter.as_ref().map(|e| e.status()),
            drain_seconds: self.drain.last_duration.as_secs_f64(),
            drain_lag_seconds: self.last_lag.as_secs_f64(),
            loop_turns: self.turns.buckets(),
            page_size_bytes: 1 << self.probes.page_shift,
            last_tick: self.last_tick,
            interval: self.interval,
            maps: crate::http::map_gauges(
                self.drain.maps(),
                procs_seen,
                files_seen,
                self.evicted_blocks(),
                counted.maps,
            ),
            open_fds: counted.open_fds,
        };
        if let Some(h) = &mut self.http {
            h.render(&view, &wanted);
        }
        self.drain.last_parts.publish_us += t.elapsed().as_micros() as u64;
    }

    /// Evicted blocks left at the last expiry: the upkeep thread's, or
    /// the drain's where it prunes in its ticks.
    fn evicted_blocks(&self) -> u64 {
        self.upkeep
            .as_ref()
            .and_then(Upkeep::evicted_blocks)
            .unwrap_or(self.drain.evicted_blocks)
    }

    fn status_line(&self) -> String {
        let fams: Vec<String> = self
            .probes
            .status()
            .iter()
            .map(|s| {
                let st = match s.state {
                    FamilyState::Attached => "on",
                    FamilyState::Disabled => "off",
                    FamilyState::Unavailable(_) => "unavailable",
                    FamilyState::Failed(_) => "failed",
                };
                format!("{} {st}", s.family)
            })
            .collect();
        format!(
            "{}; every {}; {} ticks",
            fams.join(", "),
            format_duration(self.interval),
            self.totals.ticks
        )
    }

    /// Begins a tick if one is due (and none is waiting for its grace
    /// period).
    fn tick_if_due(&mut self) {
        let now = Instant::now();
        if now >= self.next_tick && self.begun.is_none() && self.finishing.is_none() {
            self.last_lag = now - self.next_tick;
            self.begin_tick();
            self.schedule_next_tick(now);
        }
    }

    /// Runs until SIGTERM/SIGINT. Returns after a final drain and flush.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stopping {
            let now = Instant::now();
            // A tick waiting for its grace period is finished first; the
            // next one cannot begin before.
            let mut deadline = if self.finishing.is_some() {
                now
            } else if self.begun.is_some() {
                self.next_flush
            } else {
                self.next_tick.min(self.next_flush)
            };
            if let Some((w, _)) = self.next_watchdog {
                deadline = deadline.min(w);
            }
            if self.file_paths.walking() {
                deadline = now;
            }
            if let Some(h) = &self.http {
                if let Some(t) = h.next_deadline() {
                    deadline = deadline.min(t);
                }
                if h.has_ready() || !h.wanted().is_empty() {
                    deadline = now;
                }
            }
            let timeout = deadline.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let busy_from = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.on_signals(),
                    // Finished after the events (one long step a turn).
                    BARRIER => {}
                    CONTROL => self.control.accept(self.poll.registry()),
                    t if self.control.owns(t) => {
                        let incoming = self.control.ready(
                            self.poll.registry(),
                            t,
                            ev.is_readable() || ev.is_read_closed(),
                        );
                        for inc in incoming {
                            self.answer(inc);
                        }
                    }
                    t => {
                        if let Some(h) = &mut self.http {
                            h.on_event(self.poll.registry(), t);
                        }
                    }
                }
                // A flood of requests must not hold the drain up: the tick
                // goes first as soon as it is due.
                self.tick_if_due();
            }
            // At most one long step per loop turn (finishing a tick,
            // rendering pages, flushing the store), each after the clients
            // that were waiting: a request never waits behind two of them.
            // (A lost barrier wake-up costs at most one turn.)
            let mut long = self.finish_tick_if_ready();
            if !long && self.http.as_ref().is_some_and(|h| !h.wanted().is_empty()) {
                self.render_wanted();
                long = true;
            }
            if !long && self.file_paths.walking() {
                // A pass naming files goes on a bounded step a turn.
                self.file_paths.walk_step();
                long = true;
            }
            if let Some(h) = &mut self.http {
                h.poll_ready(self.poll.registry(), self.next_tick);
            }
            self.tick_if_due();
            let now = Instant::now();
            if let Some(st) = &mut self.store {
                st.poll_flush();
            }
            if !long && now >= self.next_flush {
                // The commit (an fsync or two) runs on the store's thread.
                if let Some(st) = &mut self.store {
                    st.flush_in_background(now_ms());
                }
                self.next_flush = now + self.cfg.store.flush_interval.0;
                self.control.sweep(self.poll.registry());
            }
            if let Some((w, period)) = self.next_watchdog {
                if now >= w {
                    notify(true, &[sd_notify::NotifyState::Watchdog]);
                    self.next_watchdog = Some((now + period, period));
                }
            }
            self.turns.observe(busy_from.elapsed());
        }
        notify(self.startup.systemd, &[sd_notify::NotifyState::Stopping]);
        log::info!("stopping: final drain");
        if let Some(b) = self.begun.take() {
            let waited = self.wait_barrier();
            self.finishing = Some(self.drain.finish_begin(b, waited));
        }
        if let Some(mut f) = self.finishing.take() {
            while !self.drain.finish_step(&mut f, Duration::MAX) {}
            let t = Instant::now();
            let sample = self.drain.finish_end(f);
            self.complete_tick(sample, t);
        }
        self.tick();
        if let Some(st) = &mut self.store {
            st.flush(now_ms());
        }
        self.control.shutdown(self.poll.registry());
        self.drain_http(Duration::from_secs(3));
        Ok(())
    }

    /// Graceful HTTP shutdown: no new connections, responses in progress
    /// finished, keep-alive connections closed; whatever is left after
    /// `limit` is dropped.
    fn drain_http(&mut self, limit: Duration) {
        let Some(h) = &mut self.http else { return };
        h.begin_shutdown(self.poll.registry());
        let deadline = Instant::now() + limit;
        let mut events = Events::with_capacity(256);
        loop {
            let Some(h) = &mut self.http else { return };
            if h.connections() == 0 || Instant::now() >= deadline {
                break;
            }
            let wait = if h.has_ready() {
                Duration::ZERO
            } else {
                Duration::from_millis(20)
            };
            if self.poll.poll(&mut events, Some(wait)).is_err() {
                break;
            }
            for ev in events.iter() {
                if !self.control.owns(ev.token()) && ev.token() != SIGNALS && ev.token() != CONTROL
                {
                    h.on_event(self.poll.registry(), ev.token());
                }
            }
            // A response still waiting for its page gets it.
            self.render_wanted();
            let Some(h) = &mut self.http else { return };
            // No more ticks: only the shutdown deadline bounds it.
            h.poll_ready(self.poll.registry(), deadline);
        }
        let Some(h) = &mut self.http else { return };
        if h.connections() > 0 {
            log::info!(
                "http: {} connections still open at shutdown, closed",
                h.connections()
            );
        }
        h.shutdown(self.poll.registry());
    }

    fn schedule_next_tick(&mut self, now: Instant) {
        if let Some(i) = self.pending_interval.take() {
            self.interval = i;
            if let Some(st) = &mut self.store {
                st.set_raw_resolution(i.as_millis() as u64);
            }
            self.next_tick = now + i;
            return;
        }
        self.next_tick += self.interval;
        if self.next_tick <= now {
            // The loop was held up past whole intervals: keep the phase,
            // skip what was missed (the next Sample covers it all).
            self.late_ticks += 1;
            while self.next_tick <= now {
                self.next_tick += self.interval;
            }
        }
    }

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGTERM | SIGINT => {
                    log::info!(
                        "received {}, shutting down",
                        if sig == SIGTERM { "SIGTERM" } else { "SIGINT" }
                    );
                    self.stopping = true;
                }
                SIGHUP => {
                    notify(self.startup.systemd, &[sd_notify::NotifyState::Reloading]);
                    match self.reload() {
                        Ok(changes) if changes.is_empty() => log::info!("reload: nothing changed"),
                        Ok(changes) => log::info!("reload: {}", changes.join("; ")),
                        Err(e) => log::error!("reload refused, keeping the running config: {e}"),
                    }
                    notify(self.startup.systemd, &[sd_notify::NotifyState::Ready]);
                }
                _ => {}
            }
        }
    }

    /// Re-reads the config file and applies what can change at run time.
    pub fn reload(&mut self) -> Result<Vec<String>, String> {
        let mut cfg = match &self.startup.config_path {
            Some(p) => Config::load(p).map_err(|e| crate::error_chain(&e))?,
            None => Config::default(),
        };
        self.startup.overrides.apply(&mut cfg);
        cfg.validate().map_err(|e| e.to_string())?;
        let old = std::mem::replace(&mut self.cfg, cfg);
        let new = &self.cfg;
        let mut changes = Vec::new();
        let runtime = std::mem::take(&mut self.set_at_runtime);
        let reverts = |set: bool, cmd: &str| {
            if set {
                format!(" (reverts `iomonctl {cmd} set`: the config file's value)")
            } else {
                String::new()
            }
        };
        if new.daemon.interval != old.daemon.interval {
            self.pending_interval = Some(new.daemon.interval.0);
            changes.push(format!(
                "interval {} -> {}{}",
                old.daemon.interval,
                new.daemon.interval,
                reverts(runtime.interval, "interval")
            ));
        }
        if new.daemon.strategy != old.daemon.strategy {
            self.drain.set_strategy(new.daemon.strategy.into());
            changes.push(format!(
                "strategy {} -> {}{}",
                Strategy::from(old.daemon.strategy).name(),
                Strategy::from(new.daemon.strategy).name(),
                reverts(runtime.strategy, "strategy")
            ));
        }
        if new.store != old.store || new.daemon.top_k != old.daemon.top_k {
            if let Some(st) = &mut self.store {
                st.set_options(store_options(new));
            }
            changes.push("store options".into());
        }
        changes.extend(self.reload_exporter(&old));
        let new = &self.cfg;
        if new.targets != old.targets {
            self.drain.set_targets(new.targets.matchers());
            changes.push("targets: from the next tick".into());
        }
        if new.files != old.files {
            self.file_paths.set_dirs(new.files.data_dirs.clone());
            changes.push("files".into());
        }
        if new.targets != old.targets || new.metrics != old.metrics {
            self.totals
                .set_series(&pinned_names(new), new.metrics.max_series);
        }
        if new.daemon.log_level != old.daemon.log_level {
            log::set_max_level(crate::config::level_filter(&new.daemon.log_level));
            changes.push(format!("log level -> {}", new.daemon.log_level));
        }
        self.control.set_limits(
            new.daemon.max_clients,
            new.daemon.client_idle_timeout.0,
            &new.daemon.admin_group,
        );
        for (what, changed) in [
            ("probe families", new.probes != old.probes),
            ("socket", new.daemon.socket != old.daemon.socket),
            (
                "state directory",
                new.daemon.state_dir != old.daemon.state_dir,
            ),
            (
                "metrics listen addresses",
                new.metrics.listen != old.metrics.listen,
            ),
            (
                "per-process map capacity",
                new.daemon.proc_capacity != old.daemon.proc_capacity,
            ),
        ] {
            if changed {
                changes.push(format!("{what} changed: takes effect at the next restart"));
            }
        }
        Ok(changes)
    }
}

/// Run-time changes (`iomonctl interval set`, `strategy set`) not in the
/// config file.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SetAtRuntime {
    pub interval: bool,
    pub strategy: bool,
}
