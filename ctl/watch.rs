//! The live view: `top --watch` and `snapshot --watch`.
//!
//! On a terminal: the alternate screen, redrawn every interval, keys read
//! one at a time (no Enter), the terminal put back as it was on every way
//! out — `q`, Ctrl-C, SIGTERM, SIGHUP (the ssh session went), an error, a
//! panic. Plain ANSI sequences and termios: works over ssh, in tmux, on
//! any VT100-like terminal. When stdout is not a terminal: the plain table
//! again every interval, separated by a time line (like `top -b`).

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

/// Renders one frame for a sort key, or says why there is none (the view
/// keeps trying: the daemon may be restarting).
pub type Frame<'a> = Box<dyn FnMut(Option<&str>) -> Result<String, String> + 'a>;

/// What the screen shows; `frame` renders it for a sort key.
pub struct View<'a> {
    /// Sort keys `<` and `>` cycle through (empty: no sorting keys).
    pub sorts: Vec<&'static str>,
    pub sort: usize,
    pub interval: Duration,
    /// Frames to draw before stopping (None: until quit).
    pub iterations: Option<u64>,
    /// Repeat the plain output even on a terminal (json, csv).
    pub plain: bool,
    /// Plain output: a `--- time` line before each (not for JSON, whose
    /// objects follow each other as a stream `jq` reads).
    pub separator: bool,
    pub frame: Frame<'a>,
}

/// Puts the terminal back (mode, screen, cursor) when dropped.
struct Screen {
    saved: Termios,
}

const ENTER: &str = "\x1b[?1049h\x1b[?25l";
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
const HOME_CLEAR: &str = "\x1b[H\x1b[2J";

impl Screen {
    fn enter() -> io::Result<Screen> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).map_err(io::Error::from)?;
        let mut raw = saved.clone();
        // Keys arrive one by one, unechoed; Ctrl-C still sends SIGINT.
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).map_err(io::Error::from)?;
        let mut out = io::stdout();
        out.write_all(ENTER.as_bytes())?;
        out.flush()?;
        Ok(Screen { saved })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = io::stdout();
        let _ = out.write_all(LEAVE.as_bytes());
        let _ = out.flush();
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Runs the view until `q`, a signal or `iterations`.
pub fn run(mut view: View) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let tty = !view.plain && io::stdout().is_terminal() && io::stdin().is_terminal();
    let _screen = if tty { Some(Screen::enter()?) } else { None };
    let mut out = io::stdout();
    let mut drawn = 0u64;
    let mut message = String::new();
    loop {
        let sort = view.sorts.get(view.sort).copied();
        let body = match (view.frame)(sort) {
            Ok(text) => text,
            Err(e) => format!("{e}\n(retrying every {})\n", human(view.interval)),
        };
        let now = crate::timespec::format_local(iomon::now_ms());
        let r = if tty {
            let keys = if view.sorts.is_empty() {
                "q quit".to_string()
            } else {
                format!("q quit, < > sort (by {})", sort.unwrap_or("-"))
            };
            // Output processing stays on: "\n" moves to the next line's start.
            write!(
                out,
                "{HOME_CLEAR}{now}  every {}  {keys}{message}\n{body}",
                human(view.interval),
            )
        } else if view.separator {
            write!(out, "--- {now}\n{body}")
        } else {
            write!(out, "{body}")
        };
        // A closed pipe (| head) ends the view quietly.
        if let Err(e) = r.and_then(|_| out.flush()) {
            return if e.kind() == io::ErrorKind::BrokenPipe {
                Ok(())
            } else {
                Err(e)
            };
        }
        message.clear();
        drawn += 1;
        if view.iterations.is_some_and(|n| drawn >= n) {
            return Ok(());
        }
        // Until the next frame: keys (on a terminal) or just the time.
        let deadline = Instant::now() + view.interval;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !tty {
                std::thread::sleep(left.min(Duration::from_millis(200)));
                continue;
            }
            let ms = left.as_millis().min(200) as u16;
            let stdin = io::stdin();
            let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let mut key = [0u8; 1];
            match io::stdin().lock().read(&mut key) {
                Ok(0) => return Ok(()), // the terminal went away
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let n = view.sorts.len();
            match key[0] {
                b'q' | b'Q' => return Ok(()),
                b'>' | b'.' if n > 0 => {
                    view.sort = (view.sort + 1) % n;
                    break;
                }
                b'<' | b',' if n > 0 => {
                    view.sort = (view.sort + n - 1) % n;
                    break;
                }
                b' ' => break, // redraw now
                _ => message = "  (keys: q < > space)".into(),
            }
        }
    }
}

fn human(d: Duration) -> String {
    iomon::units::format_duration(d)
}
