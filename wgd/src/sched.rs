//! The transport's CPU priority: `SCHED_RR` while it is busy, normal
//! priority when it is idle or saturated. Used by the parent only, which
//! keeps `CAP_SYS_NICE` for it (see [`crate::privdrop`]).
//!
//! Why: the transport does for the tunnel what the kernel does for every
//! other interface, in softirq context, ahead of any process. At normal
//! priority it waits for a CPU behind the applications whose packets it
//! carries, every packet of the tunnel waits with it, and the late ACKs
//! make TCP senders keep deeper queues in it. On 2 CPUs with iperf3 at
//! both ends (`scripts/bench.sh`) ping through the loaded tunnel took
//! 1.3–2.1 ms at normal priority and 0.3 ms under `SCHED_RR`, at the same
//! throughput.
//!
//! Why only while busy: a real-time task that wakes stays on the CPU it
//! last ran on, which is often asleep, where a normal one is placed by
//! the scheduler next to its waker; an idle ping took 0.32 ms instead of
//! 0.23 ms under `SCHED_RR`. So the parent samples the transport's CPU
//! time (`/proc/PID/schedstat`, its main thread: the workers, when there
//! are any, keep normal priority) every [`SAMPLE`] and raises it when it
//! used at least [`RAISE_SHARE`] of a CPU, lowers it after [`IDLE_SAMPLES`]
//! samples below [`IDLE_SHARE`].
//!
//! Why it cannot take the machine: besides the kernel's real-time
//! throttling (`sched_rt_runtime_us`, 95% of each CPU by default), a
//! transport that used on average [`SATURATED_SHARE`] of a CPU over the
//! last [`SATURATED_SAMPLES`] samples, as under a flood or when
//! compromised and spinning, goes back to
//! normal priority until its load falls below [`RAISE_SHARE`] (the kernel
//! likewise hands softirq work that keeps coming to `ksoftirqd`, a normal
//! thread). Nothing is done on a machine with one CPU, or with
//! `WGD_TRANSPORT_REALTIME=0` in wgd's environment.
//!
//! The transport itself cannot raise its priority: it has no capability
//! and `RLIMIT_RTPRIO` 0 ([`crate::confine::set_role_limits`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

/// How often the transport's CPU time is looked at.
pub const SAMPLE: Duration = Duration::from_millis(100);
/// The share of a CPU over one sample that makes the transport real-time.
pub const RAISE_SHARE: f64 = 0.25;
/// Below this share a sample counts as idle.
pub const IDLE_SHARE: f64 = 0.05;
/// Idle samples in a row that bring it back to normal priority.
pub const IDLE_SAMPLES: u32 = 5;
/// The mean share over [`SATURATED_SAMPLES`] at which the transport
/// counts as saturated (below the 95% the kernel's real-time throttling
/// leaves a spinning real-time task).
pub const SATURATED_SHARE: f64 = 0.9;
/// Samples (2 s) over which saturation is judged.
pub const SATURATED_SAMPLES: usize = 20;
/// The real-time priority: the lowest, below every real-time thread the
/// system already has (interrupt threads run at 50).
pub const PRIORITY: i32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Normal,
    Realtime,
    /// Normal priority after a saturated stretch, until the load falls.
    Saturated,
}

/// The parent's view of one transport process.
pub struct TransportPriority {
    enabled: bool,
    pid: Option<Pid>,
    last: Option<(Instant, u64)>,
    level: Level,
    idle: u32,
    /// The last [`SATURATED_SAMPLES`] shares.
    recent: VecDeque<f64>,
    warned: bool,
}

impl TransportPriority {
    /// Enabled unless `WGD_TRANSPORT_REALTIME` says 0/no/off/false or the
    /// machine has a single CPU.
    pub fn from_env() -> Self {
        let off = std::env::var("WGD_TRANSPORT_REALTIME").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "0" | "no" | "off" | "false"
            )
        });
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if !off && cpus < 2 {
            tracing::info!("one CPU: the transport stays at normal priority");
        }
        Self::new(!off && cpus >= 2)
    }

    fn new(enabled: bool) -> Self {
        TransportPriority {
            enabled,
            pid: None,
            last: None,
            level: Level::Normal,
            idle: 0,
            recent: VecDeque::with_capacity(SATURATED_SAMPLES),
            warned: false,
        }
    }

    /// How long the parent may sleep before the next [`Self::tick`].
    pub fn interval(&self) -> Option<Duration> {
        self.enabled.then_some(SAMPLE)
    }

    /// Looks at the transport `pid` (a new pid is a new transport, which
    /// starts at normal priority) and raises or lowers it. Does nothing
    /// before [`SAMPLE`] has passed since the last look.
    pub fn tick(&mut self, pid: Pid, now: Instant) {
        if !self.enabled {
            return;
        }
        if self.pid != Some(pid) {
            *self = TransportPriority {
                pid: Some(pid),
                warned: self.warned,
                ..Self::new(true)
            };
        }
        let Some(cpu) = cpu_ns(pid) else {
            return;
        };
        let Some((then, before)) = self.last else {
            self.last = Some((now, cpu));
            return;
        };
        let wall = now.saturating_duration_since(then);
        if wall < SAMPLE {
            return;
        }
        self.last = Some((now, cpu));
        let share = cpu.saturating_sub(before) as f64 / wall.as_nanos().max(1) as f64;
        let next = self.next_level(share);
        if next != self.level {
            let realtime = next == Level::Realtime;
            match set_policy(pid, realtime) {
                Ok(()) => {
                    tracing::debug!(
                        share = format!("{share:.2}"),
                        "transport {}",
                        match next {
                            Level::Realtime => "busy: SCHED_RR",
                            Level::Normal => "idle: normal priority",
                            Level::Saturated => "saturated: normal priority until its load falls",
                        }
                    );
                    self.level = next;
                }
                Err(e) => {
                    if !self.warned {
                        tracing::warn!(
                            "cannot change the transport's scheduling ({e}; needs CAP_SYS_NICE, and no RestrictRealtime= in a service unit): it stays at normal priority"
                        );
                        self.warned = true;
                    }
                    self.enabled = false;
                }
            }
        }
    }

    /// The level after a sample in which the transport used `share` of a
    /// CPU.
    fn next_level(&mut self, share: f64) -> Level {
        self.idle = if share < IDLE_SHARE { self.idle + 1 } else { 0 };
        if self.recent.len() == SATURATED_SAMPLES {
            self.recent.pop_front();
        }
        self.recent.push_back(share);
        let saturated = self.recent.len() == SATURATED_SAMPLES
            && self.recent.iter().sum::<f64>() / SATURATED_SAMPLES as f64 >= SATURATED_SHARE;
        match self.level {
            Level::Normal if share >= RAISE_SHARE => Level::Realtime,
            Level::Realtime if saturated => Level::Saturated,
            Level::Realtime if self.idle >= IDLE_SAMPLES => Level::Normal,
            Level::Saturated if share < RAISE_SHARE => Level::Normal,
            l => l,
        }
    }
}

/// Time the main thread of `pid` has run, in ns (the first field of
/// `/proc/PID/schedstat`).
fn cpu_ns(pid: Pid) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// `SCHED_RR` at [`PRIORITY`] or `SCHED_OTHER` for the main thread of
/// `pid`.
fn set_policy(pid: Pid, realtime: bool) -> std::io::Result<()> {
    let (policy, priority) = if realtime {
        (libc::SCHED_RR, PRIORITY)
    } else {
        (libc::SCHED_OTHER, 0)
    };
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param that outlives the call.
    let r = unsafe { libc::sched_setscheduler(pid.as_raw(), policy, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(shares: &[f64]) -> Vec<Level> {
        let mut t = TransportPriority::new(true);
        shares
            .iter()
            .map(|&s| {
                t.level = t.next_level(s);
                t.level
            })
            .collect()
    }

    #[test]
    fn busy_raises_idle_lowers_after_a_while() {
        use Level::*;
        let l = levels(&[0.01, 0.3, 0.6, 0.01, 0.01, 0.01, 0.01, 0.01, 0.2]);
        assert_eq!(
            l,
            [Normal, Realtime, Realtime, Realtime, Realtime, Realtime, Realtime, Normal, Normal]
        );
    }

    #[test]
    fn a_short_pause_keeps_it_real_time() {
        let l = levels(&[0.5, 0.01, 0.01, 0.5, 0.01, 0.01, 0.01, 0.01]);
        assert!(l.iter().all(|&l| l == Level::Realtime), "{l:?}");
    }

    #[test]
    fn saturation_lowers_it_until_the_load_falls() {
        // As under real-time throttling: a dip every tenth sample.
        let mut shares: Vec<f64> = (1..=SATURATED_SAMPLES + 1)
            .map(|i| if i % 10 == 0 { 0.5 } else { 1.0 })
            .collect();
        shares.extend([0.9, 0.5, 0.1, 0.5]);
        let l = levels(&shares);
        // The first busy sample raises it and counts towards the mean.
        let n = SATURATED_SAMPLES - 1;
        assert!(l[..n].iter().all(|&l| l == Level::Realtime), "{l:?}");
        assert_eq!(
            levels(&[0.75; 40]),
            [Level::Realtime; 40],
            "a busy transport stays raised"
        );
        assert_eq!(
            &l[n..],
            [
                Level::Saturated,
                Level::Saturated,
                Level::Saturated,
                Level::Saturated,
                Level::Normal,
                Level::Realtime
            ]
        );
    }
}
