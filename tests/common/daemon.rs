//! The daemon under test: start iomond in development mode in its own state
//! directory, talk to it with iomonctl, stop it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::disk_dir;

pub const IOMOND: &str = env!("CARGO_BIN_EXE_iomond");
pub const IOMONCTL: &str = env!("CARGO_BIN_EXE_iomonctl");

pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub metrics: Option<String>,
}

/// Everything a child wrote to its piped stderr (read to its end: call
/// once it has exited).
pub fn stderr_text(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// Waits for `child` to exit, at most `within`; fails the test saying
/// `what` did not stop.
pub fn wait_within(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    pub fn start(name: &str, extra: &[&str], config: Option<&str>) -> Daemon {
        Daemon::start_env(name, extra, config, &[])
    }

    /// `start` with extra environment variables for iomond.
    pub fn start_env(
        name: &str,
        extra: &[&str],
        config: Option<&str>,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        Daemon::start_wrapped(name, extra, config, env, &[], None)
    }

    /// `start_env` with iomond run by `wrapper` (e.g. setpriv and its
    /// options), its state directory owned by `owner` when given.
    pub fn start_wrapped(
        name: &str,
        extra: &[&str],
        config: Option<&str>,
        env: &[(&str, &std::ffi::OsStr)],
        wrapper: &[&str],
        owner: Option<u32>,
    ) -> Daemon {
        let dir = disk_dir(&format!("e2e-{name}")).keep();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid))
                .expect("chown the state directory");
        }
        let socket = dir.join("iomond.sock");
        let mut cmd = match wrapper.split_first() {
            Some((w, args)) => {
                let mut c = Command::new(w);
                c.args(args).arg(IOMOND);
                c
            }
            None => Command::new(IOMOND),
        };
        cmd.arg("--dev").arg("--state-dir").arg(&dir);
        if !extra.contains(&"--interval") {
            cmd.arg("--interval").arg("250ms");
        }
        cmd.args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.envs(env.iter().copied());
        if let Some(c) = config {
            let p = dir.join("iomond.toml");
            std::fs::write(&p, c).unwrap();
            if let Some(uid) = owner {
                std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
            }
            cmd.arg("--config").arg(p);
        }
        let metrics = extra
            .iter()
            .position(|a| *a == "--metrics-listen")
            .map(|i| extra[i + 1].to_string());
        let mut child = cmd.spawn().expect("spawn iomond");
        // As deployed: the unit runs iomond at Nice=-5 (systemd/iomond.service).
        // SAFETY: plain syscall on our own child; root may lower nice.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, child.id(), -5) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Ok(Some(st)) = child.try_wait() {
                let err = stderr_text(&mut child);
                panic!("iomond exited with {st} before listening:\n{err}");
            }
            assert!(
                Instant::now() < deadline,
                "iomond did not create {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            dir,
            socket,
            metrics,
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(IOMONCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run iomonctl")
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "iomonctl {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ctl_ok(&a)).expect("json output")
    }

    pub fn wait_ticks(&self, n: u64) {
        let start = self.json(&["status"])["ticks"].as_u64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.json(&["status"])["ticks"].as_u64().unwrap() < start + n {
            assert!(Instant::now() < deadline, "no ticks");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(self) -> (std::process::ExitStatus, String) {
        let dir = self.dir.clone();
        let r = self.stop_keep();
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    /// SIGTERM, wait, and return the exit status and everything it logged;
    /// the state directory stays.
    pub fn stop_keep(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        let err = stderr_text(&mut self.child);
        // Keep the directory: Drop would remove it.
        self.dir = PathBuf::new();
        (st, err)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn http_get(addr: &str, path: &str, headers: &[&str]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_string(), body.to_string())
}

/// Starts iomond on a state directory that may hold a stale socket from a
/// killed run: waits until it answers, not until the file exists.
pub fn start_answering(name: &str, config: &str) -> Daemon {
    let d = Daemon::start(name, &["--interval", "250ms"], Some(config));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.ctl(&["status"]).status.success() {
        assert!(Instant::now() < deadline, "iomond never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    d
}

/// (start_ms, end_ms) of every point of a history reply.
pub fn intervals(h: &serde_json::Value) -> Vec<(u64, u64)> {
    h["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start_ms"].as_u64().unwrap(),
                p["end_ms"].as_u64().unwrap(),
            )
        })
        .collect()
}
