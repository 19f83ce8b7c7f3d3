//! `storm`: the handshake reboot-storm tool of issue 10, part 4. See
//! `wgd_tests::storm` for what it does and `scripts/storm.sh` for the
//! benchmark that runs it against wgd and wireguard-go.
//!
//! ```text
//! storm conf   [--seed S] --peers N --stormers M [--port P]     wg(8) file on stdout
//! storm addrs  --sources K [--dev DEV]                          `ip -batch` lines
//! storm client [--seed S] --peers N --stormers M --server IP:PORT
//!              [--sources K] [--port P] [--deadline SECS] [--no-jitter]
//!              [--timeline] [--timeline-ms MS]
//! storm bound  [--seed S] --peers N --stormers M [--scan-timers] [--rounds R]
//! ```
//!
//! `client` prints one line of `key=value` fields (see
//! `Report::to_line`), with `--timeline` also the completions per second on
//! stderr, and exits 0 only if every stormer completed within the
//! whitepaper's retry schedule. `bound` prints `bound_hs_per_s=…` (the best
//! of R rounds, each with a fresh core and key store).

use std::net::SocketAddrV4;
use std::process::ExitCode;
use std::time::Duration;

use wgd_tests::storm::{self, ClientConfig};

const USAGE: &str = "usage: storm conf|addrs|client|bound [options] (see the source's header)";

struct Args {
    rest: Vec<String>,
}

impl Args {
    fn value(&mut self, name: &str) -> Result<Option<String>, String> {
        let Some(i) = self.rest.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if i + 1 >= self.rest.len() {
            return Err(format!("{name} needs a value"));
        }
        let v = self.rest.remove(i + 1);
        self.rest.remove(i);
        Ok(Some(v))
    }

    fn num<T: std::str::FromStr>(&mut self, name: &str, default: Option<T>) -> Result<T, String> {
        match self.value(name)? {
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name}: not a number: {v:?}")),
            None => default.ok_or_else(|| format!("{name} is required")),
        }
    }

    fn flag(&mut self, name: &str) -> bool {
        match self.rest.iter().position(|a| a == name) {
            Some(i) => {
                self.rest.remove(i);
                true
            }
            None => false,
        }
    }

    fn done(self) -> Result<(), String> {
        match self.rest.first() {
            Some(a) => Err(format!("unknown argument {a:?}")),
            None => Ok(()),
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let mut all: Vec<String> = std::env::args().skip(1).collect();
    if all.is_empty() {
        return Err(USAGE.into());
    }
    let cmd = all.remove(0);
    let mut a = Args { rest: all };
    match cmd.as_str() {
        "conf" => {
            let seed = a.num("--seed", Some(1u64))?;
            let peers = a.num::<u32>("--peers", None)?;
            let stormers = a.num::<u32>("--stormers", None)?;
            let port = a.num("--port", Some(51820u16))?;
            a.done()?;
            if stormers > peers || peers > storm::MAX_PEERS {
                return Err("need stormers ≤ peers ≤ 2^20".into());
            }
            print!("{}", storm::setconf_text(seed, peers, stormers, port));
            Ok(ExitCode::SUCCESS)
        }
        "addrs" => {
            let sources = a.num::<u32>("--sources", None)?;
            let dev = a.value("--dev")?.unwrap_or_else(|| "lo".into());
            a.done()?;
            print!("{}", storm::source_addr_batch(sources, &dev));
            Ok(ExitCode::SUCCESS)
        }
        "client" => {
            let stormers = a.num::<u32>("--stormers", None)?;
            let cfg = ClientConfig {
                seed: a.num("--seed", Some(1u64))?,
                peers: a.num("--peers", None)?,
                stormers,
                sources: a.num("--sources", Some(stormers))?,
                server: a
                    .value("--server")?
                    .ok_or("--server IP:PORT is required")?
                    .parse::<SocketAddrV4>()
                    .map_err(|e| format!("--server: {e}"))?,
                local_port: a.num("--port", Some(51821u16))?,
                deadline: Duration::from_secs(a.num("--deadline", Some(120u64))?),
                jitter: !a.flag("--no-jitter"),
            };
            let timeline = a.flag("--timeline");
            let bucket_ms = a.num("--timeline-ms", Some(1000u64))?.max(1);
            a.done()?;
            let report = storm::run_client(&cfg).map_err(|e| e.to_string())?;
            println!("{}", report.to_line());
            if timeline {
                let t = report.timeline_by(Duration::from_millis(bucket_ms));
                let cells: Vec<String> = t
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(k, n)| format!("{:.1}s:{n}", (k as u64 * bucket_ms) as f64 / 1000.0))
                    .collect();
                eprintln!("completions per {bucket_ms} ms: {}", cells.join(" "));
            }
            Ok(if report.all_within_retry_schedule() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        "bound" => {
            let seed = a.num("--seed", Some(1u64))?;
            let peers = a.num::<u32>("--peers", None)?;
            let stormers = a.num::<u32>("--stormers", None)?;
            let rounds = a.num("--rounds", Some(3u32))?.clamp(1, 100);
            let scan = a.flag("--scan-timers");
            a.done()?;
            let mut best: Option<storm::Bound> = None;
            for r in 0..rounds {
                // A fresh seed per round: fresh peers, fresh handshakes.
                let b = storm::single_process_bound(
                    seed.wrapping_add(u64::from(r)),
                    peers,
                    stormers,
                    scan,
                )
                .map_err(|e| e.to_string())?;
                if best.as_ref().is_none_or(|x| b.rate() > x.rate()) {
                    best = Some(b);
                }
            }
            let b = best.ok_or("no round ran")?;
            println!(
                "bound_hs_per_s={:.1} handshakes={} seconds={:.3} scan_timers={scan}",
                b.rate(),
                b.handshakes,
                b.elapsed.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(USAGE.into()),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("storm: {e}");
            ExitCode::FAILURE
        }
    }
}
