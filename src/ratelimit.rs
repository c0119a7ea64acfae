//! Rate limits for log lines that anyone can cause at will (every open and close of a
//! stream): a few lines a second, then one summary of what was left out, so that no user
//! can fill the disk with the daemon's log.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// At most `burst` lines per `interval`; the first line after a full interval says how many
/// were left out.
pub struct RateLimit {
    burst: u32,
    interval: Duration,
    state: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// Opens and closes of streams, at info level.
pub static OPENS: RateLimit = RateLimit::new(20, Duration::from_secs(10));

impl RateLimit {
    pub const fn new(burst: u32, interval: Duration) -> RateLimit {
        RateLimit {
            burst,
            interval,
            state: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line may be written now at `now`, and how many lines were left out before
    /// it (to be said in a summary).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock();
        if w.start
            .is_none_or(|s| now.duration_since(s) >= self.interval)
        {
            w.start = Some(now);
            w.logged = 0;
        }
        if w.logged < self.burst {
            w.logged += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }

    /// Logs the line `make` builds at info level, when admitted; the line is not even built
    /// otherwise.
    pub fn log(&self, make: impl FnOnce() -> String) {
        self.log_at(log::Level::Info, make)
    }

    /// [`RateLimit::log`] at `level`.
    pub fn log_at(&self, level: log::Level, make: impl FnOnce() -> String) {
        if let Some(left_out) = self.admit(Instant::now()) {
            if left_out > 0 {
                log::log!(
                    target: "streamfs",
                    level,
                    "{left_out} similar lines left out (at most {} per {:?})",
                    self.burst,
                    self.interval
                );
            }
            log::log!(target: "streamfs", level, "{}", make());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_summary() {
        let r = RateLimit::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let got: Vec<Option<u64>> = (0..6).map(|_| r.admit(t0)).collect();
        assert_eq!(got, [Some(0), Some(0), Some(0), None, None, None]);
        // The next interval's first line reports the three left out, once.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(r.admit(t1), Some(3));
        assert_eq!(r.admit(t1), Some(0));
    }
}
