//! `hsrate`: handshakes per second through wgd's process pipeline and the
//! single-process bound (issue 12, item 4). See `wgd_tests::hsrate` for
//! what each measures and `scripts/hsrate.sh` for the benchmark that runs
//! them side by side against a live wgd.
//!
//! ```text
//! hsrate client [--seed S] --peers P --handshakes H --server IP:PORT [--window W] [--sources K]
//! hsrate bound  [--seed S] --peers P --handshakes H [--rounds R]
//! ```
//!
//! wgd must be configured with `storm conf --seed S --peers P --stormers P`
//! (every configured peer initiates), and the client's namespace must
//! hold the source addresses (`storm addrs --sources K`; K defaults to
//! P, one address per peer). `client` prints
//! `pipeline_hs_per_s=…` and the counts behind it; `bound` prints
//! `bound_hs_per_s=…` (ss precomputed, the best of R rounds),
//! `bound_no_precompute_hs_per_s=…` (one more X25519 per handshake) and
//! `inproc_hs_per_s=…` (wgd's own handshake core and key store in one
//! thread, no processes: `storm::single_process_bound`).

use std::net::SocketAddrV4;
use std::process::ExitCode;

use wgd_tests::hsrate::{self, RateConfig};
use wgd_tests::storm;

const USAGE: &str = "usage: hsrate client|bound [options] (see the source's header)";

/// `--name value` pairs, each taken once.
struct Args(Vec<String>);

impl Args {
    fn value(&mut self, name: &str) -> Result<Option<String>, String> {
        let Some(i) = self.0.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if i + 1 >= self.0.len() {
            return Err(format!("{name} needs a value"));
        }
        let v = self.0.remove(i + 1);
        self.0.remove(i);
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

    fn done(self) -> Result<(), String> {
        match self.0.first() {
            Some(a) => Err(format!("unknown argument {a:?}")),
            None => Ok(()),
        }
    }
}

fn run() -> Result<(), String> {
    let mut all: Vec<String> = std::env::args().skip(1).collect();
    if all.is_empty() {
        return Err(USAGE.into());
    }
    let cmd = all.remove(0);
    let mut a = Args(all);
    let seed = a.num("--seed", Some(1u64))?;
    let peers = a.num::<u32>("--peers", None)?;
    let handshakes = a.num::<u32>("--handshakes", None)?;
    match cmd.as_str() {
        "client" => {
            let cfg = RateConfig {
                server: a
                    .value("--server")?
                    .ok_or("--server IP:PORT is required")?
                    .parse::<SocketAddrV4>()
                    .map_err(|e| format!("--server: {e}"))?,
                window: a.num("--window", Some(128u32))?,
                sources: a.num("--sources", Some(peers))?,
            };
            a.done()?;
            let mut prepared =
                hsrate::prepare(seed, peers, handshakes).map_err(|e| e.to_string())?;
            let report = hsrate::run_client(&cfg, &mut prepared).map_err(|e| e.to_string())?;
            println!("{}", report.to_line());
            Ok(())
        }
        "bound" => {
            let rounds = a.num("--rounds", Some(3u32))?.clamp(1, 100);
            a.done()?;
            let mut best = [0f64; 3];
            for _ in 0..rounds {
                for (slot, precomputed) in [(0, true), (1, false)] {
                    let mut p =
                        hsrate::prepare(seed, peers, handshakes).map_err(|e| e.to_string())?;
                    let b = hsrate::primitive_bound(seed, peers, &mut p, precomputed)
                        .map_err(|e| e.to_string())?;
                    best[slot] = best[slot].max(b.rate());
                }
                // The stormers of storm's bound are its first `handshakes`
                // peers at most, each answered once.
                let n = handshakes.min(peers);
                let b = storm::single_process_bound(seed, peers, n, false)
                    .map_err(|e| e.to_string())?;
                best[2] = best[2].max(b.rate());
            }
            println!(
                "bound_hs_per_s={:.1} bound_no_precompute_hs_per_s={:.1} inproc_hs_per_s={:.1} \
                 handshakes={handshakes} rounds={rounds}",
                best[0], best[1], best[2]
            );
            Ok(())
        }
        _ => Err(USAGE.into()),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hsrate: {e}");
            ExitCode::FAILURE
        }
    }
}
