//! Driving the BanyanDB-shaped workload (`tests/banyand.rs`): a child
//! process named `banyand` with BanyanDB's flags, told what to do line by
//! line, answering what it did to each file.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// What the workload did to one file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Did {
    pub asked: u64,
    pub missed: u64,
    pub calls: u64,
    pub covered: u64,
    pub dropped: u64,
}

impl Did {
    pub fn add(&mut self, o: &Did) {
        self.asked += o.asked;
        self.missed += o.missed;
        self.calls += o.calls;
        self.covered += o.covered;
        self.dropped += o.dropped;
    }
}

/// The workload's binary: `IOMON_BANYAND`, else `banyand` or the newest
/// `banyand-<hash>` beside this test binary (cargo builds it with the
/// tests; `scripts/vm-test` copies it into the guests).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IOMON_BANYAND") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("this test's binary");
    let dir = exe.parent().expect("its directory");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .expect("the test binaries' directory")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            (n == "banyand" || n.starts_with("banyand-")) && !n.contains('.')
        })
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!(
            "the banyand workload is not built beside {}: cargo test --no-run --test banyand",
            exe.display()
        )
    })
}

pub struct Banyand {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

impl Banyand {
    /// Starts it as `banyand standalone ARGS...`, in `cgroup` (a cgroup v2
    /// directory) when given, before it does any I/O.
    pub fn start(args: &[&str], cgroup: Option<&Path>) -> Banyand {
        let mut child = Command::new(binary())
            .arg0("banyand")
            .arg("standalone")
            .args(args)
            .env("IOMON_BANYAND_SERVE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the banyand workload");
        let pid = child.id();
        if let Some(cg) = cgroup {
            std::fs::write(cg.join("cgroup.procs"), pid.to_string())
                .expect("move it into the cgroup");
        }
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut b = Banyand {
            child,
            stdin,
            stdout,
            pid,
        };
        // Wait until it has named itself (its first command's reply).
        b.wait_named();
        b
    }

    fn wait_named(&mut self) {
        for _ in 0..500 {
            let comm =
                std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
            if comm.trim() == "banyand" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("the workload never named itself banyand");
    }

    /// Runs one command; what it did, by file.
    pub fn run(&mut self, line: &str) -> BTreeMap<PathBuf, Did> {
        writeln!(self.stdin, "{line}").expect("the workload's stdin");
        self.stdin.flush().unwrap();
        let mut out = BTreeMap::new();
        loop {
            let mut l = String::new();
            assert!(
                self.stdout.read_line(&mut l).expect("its reply") > 0,
                "the workload exited on {line:?}"
            );
            let l = l.trim_end();
            if l == "ok" {
                return out;
            }
            let Some(rest) = l.strip_prefix("f ") else {
                panic!("the workload: {l}");
            };
            let mut w = rest.split(' ');
            let path = PathBuf::from(w.next().unwrap());
            let mut d = Did::default();
            for kv in w {
                let (k, v) = kv.split_once('=').unwrap();
                let v: u64 = v.parse().unwrap();
                match k {
                    "asked" => d.asked = v,
                    "missed" => d.missed = v,
                    "calls" => d.calls = v,
                    "covered" => d.covered = v,
                    "dropped" => d.dropped = v,
                    _ => panic!("unknown key {k}"),
                }
            }
            out.entry(path).or_insert_with(Did::default).add(&d);
        }
    }
}

impl Drop for Banyand {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}
