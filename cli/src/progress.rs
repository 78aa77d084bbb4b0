//! Progress of the long commands (train, sft, eval, init-model, bench) on stderr, with rate and
//! ETA. On a terminal: an indicatif bar. Otherwise (nohup, SLURM, `tee`, CI logs): one plain line
//! every `--log-every` seconds, with the same fields, so a four-hour run does not log nothing for
//! four hours. Either way the end prints one last line with the totals.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between plain lines (`--log-every`; 0: a line at every step).
static LOG_EVERY_S: AtomicU64 = AtomicU64::new(30);

pub fn set_log_every(secs: u64) {
    LOG_EVERY_S.store(secs, Ordering::Relaxed);
}

/// One task's progress: `len` units (steps, rows, runs) named `unit`.
pub struct Progress {
    what: String,
    unit: &'static str,
    len: u64,
    start: Instant,
    /// The terminal's bar; None where stderr is not a terminal.
    bar: Option<ProgressBar>,
    state: Mutex<State>,
}

struct State {
    pos: u64,
    msg: String,
    /// When the last plain line was printed (the start, before any).
    last_line: Instant,
    finished: bool,
}

impl Progress {
    pub fn new(len: u64, what: &str, unit: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(len);
            // wide_msg cuts the line at the terminal's width (from its end: the message, not the ETA).
            let style = ProgressStyle::with_template("{prefix} {bar:20} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(what.to_string());
            bar
        });
        let start = Instant::now();
        Progress {
            what: what.to_string(),
            unit,
            len,
            start,
            bar,
            state: Mutex::new(State {
                pos: 0,
                msg: String::new(),
                last_line: start,
                finished: false,
            }),
        }
    }

    /// What the line ends with (e.g. the step's reward); shown from the next update on.
    pub fn set_message(&self, msg: impl Into<String>) {
        let mut s = self.lock();
        s.msg = msg.into();
        self.show(&mut s, false);
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        let mut s = self.lock();
        s.pos += n;
        self.show(&mut s, true);
    }

    /// Prints the last line (also done on drop, e.g. when a command fails or is interrupted).
    pub fn finish(self) {}

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the counters half-written: use them as they are.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Redraws the bar, or prints a plain line after a step when one is due.
    fn show(&self, s: &mut State, stepped: bool) {
        let now = Instant::now();
        match &self.bar {
            Some(bar) => {
                bar.set_position(s.pos);
                bar.set_message(self.fields(s, now));
            }
            None if stepped => {
                let every = LOG_EVERY_S.load(Ordering::Relaxed);
                if every == 0 || now.duration_since(s.last_line).as_secs_f64() >= every as f64 {
                    eprintln!("{} {}", self.what, self.fields(s, now));
                    s.last_line = now;
                }
            }
            None => {}
        }
    }

    /// `pos/len unit  elapsed  rate  ETA  message`.
    fn fields(&self, s: &State, now: Instant) -> String {
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let (rate, eta) = match s.pos {
            0 => ("-".to_string(), "-".to_string()),
            pos => {
                let left = self.len.saturating_sub(pos) as f64 * elapsed / pos as f64;
                (rate(pos, elapsed, self.unit), duration(left))
            }
        };
        let line = format!(
            "{}/{} {}  {}  {rate}  ETA {eta}",
            s.pos,
            self.len,
            self.unit,
            duration(elapsed)
        );
        if s.msg.is_empty() {
            line
        } else {
            format!("{line}  {}", s.msg)
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let mut s = self.lock();
        if std::mem::replace(&mut s.finished, true) {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let mut line = format!(
            "{} done: {}/{} {} in {}, {}",
            self.what,
            s.pos,
            self.len,
            self.unit,
            duration(elapsed),
            rate(s.pos, elapsed, self.unit)
        );
        if !s.msg.is_empty() {
            line = format!("{line}  {}", s.msg);
        }
        eprintln!("{line}");
    }
}

/// Units per second, or seconds per unit when a unit takes longer than a second.
fn rate(pos: u64, secs: f64, unit: &str) -> String {
    let per_s = pos as f64 / secs.max(1e-9);
    if pos == 0 {
        format!("0 {unit}/s")
    } else if per_s >= 1.0 {
        format!("{per_s:.1} {unit}/s")
    } else {
        format!("{:.1} s/{unit}", 1.0 / per_s)
    }
}

/// `45s`, `12m05s`, `3h07m`.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_read_as_people_write_them() {
        assert_eq!(rate(30, 10.0, "step"), "3.0 step/s");
        assert_eq!(rate(4, 10.0, "step"), "2.5 s/step");
        assert_eq!(rate(0, 10.0, "row"), "0 row/s");
        assert_eq!(duration(0.4), "0s");
        assert_eq!(duration(59.6), "1m00s");
        assert_eq!(duration(725.0), "12m05s");
        assert_eq!(duration(3.0 * 3600.0 + 7.0 * 60.0 + 20.0), "3h07m");
    }

    #[test]
    fn eta_is_the_rest_at_the_rate_so_far() {
        let p = Progress::new(100, "t", "step");
        let mut s = p.lock();
        s.pos = 25;
        s.msg = "loss 1.0".into();
        let at = p.start + std::time::Duration::from_secs(50);
        let line = p.fields(&s, at);
        println!("{line}");
        assert_eq!(line, "25/100 step  50s  2.0 s/step  ETA 2m30s  loss 1.0");
        s.finished = true;
    }
}
