//! `wgd IFNAME`: a privilege-separated WireGuard daemon.
//!
//! The same binary is the parent (what an operator starts) and each of
//! its three children (`wgd --role NAME ...`, started only by the parent;
//! see `roles.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Bring up a WireGuard interface on a tun device, with the private key
/// held by a separate, unprivileged process.
#[derive(Parser, Debug)]
#[command(
    name = "wgd",
    version,
    about,
    after_help = "Signals: SIGHUP reloads the configuration file (as `wg syncconf` applies \
                  a file; `wgctl reload IFNAME` does the same and reports errors); SIGTERM \
                  and SIGINT stop wgd and delete the interface."
)]
struct Cli {
    /// Stay in the foreground (also: WG_PROCESS_FOREGROUND=1).
    #[arg(short, long)]
    foreground: bool,
    /// Read this wg(8)-format configuration file at start, and again on
    /// SIGHUP or `wgctl reload`.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// User for the transport role (default _wgd-net).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// User for the handshake role (default _wgd-hs).
    #[arg(long, value_name = "NAME")]
    handshake_user: Option<String>,
    /// User for the crypto role (default _wgd-crypto). The three users
    /// must have three different uids.
    #[arg(long, value_name = "NAME")]
    crypto_user: Option<String>,
    /// If the users are missing, run transport as nobody (and handshake
    /// and crypto as spare uids) instead of refusing to start.
    #[arg(long)]
    allow_nobody: bool,
    /// The interface to create.
    ifname: String,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--role") {
        let role = args.get(2).map(String::as_str).unwrap_or("");
        return wgd::roles::child_main(role, args.get(3..).unwrap_or(&[]));
    }
    let cli = Cli::parse();
    let foreground =
        cli.foreground || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
    wgd::parent::run(wgd::parent::Options {
        ifname: cli.ifname,
        foreground,
        config: cli.config,
        user: cli.user,
        handshake_user: cli.handshake_user,
        crypto_user: cli.crypto_user,
        allow_nobody: cli.allow_nobody,
    })
}
