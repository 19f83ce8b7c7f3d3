//! `wgctl`, wgd's control tool, with wg(8)'s argument syntax so that a wg
//! user is at home: `show`, `showconf`, `set`, `setconf`, `addconf`,
//! `syncconf`, `genkey`, `genpsk`, `pubkey`, plus `reload` (wgd re-reads
//! its configuration file, as on SIGHUP), `addr` (a key's derived IPv6
//! address) and `completions`. With no arguments it runs `show`.
//!
//! It talks to any daemon serving the cross-platform userspace API on
//! `/var/run/wireguard/IFNAME.sock`, and shows more with wgd (the
//! interface public key, the private key's file, drop counters), which it
//! asks with the `wgd_get=1` extension.
//!
//! What it must agree on with wgd (the configuration file format and
//! `showconf`'s writer, the userspace API's text and types, keys) is the
//! `wg-config` crate's; wgctl links no daemon or role code.
//!
//! Modules:
//! - `uapi_client`: the sockets (`wgd_get`/`get`/`set`, listing);
//! - `show`: `show`'s human, script and JSON views;
//! - `conf`: the requests of `setconf`/`addconf`/`syncconf`;
//! - `set`: `set`'s argument grammar;
//! - `keys`: key generation, derivation and key files;
//! - `error`: the one-line error type.
//!
//! Every failure prints exactly one line, `wgctl: ...`, on standard error
//! and exits non-zero (2 for a usage error, 1 otherwise).

#![forbid(unsafe_code)]

mod conf;
mod error;
mod keys;
mod set;
mod show;
mod uapi_client;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

use crate::error::{io_text, Error, Result};
use crate::show::Field;
use crate::uapi_client::Uapi;

#[derive(Debug, Parser)]
#[command(
    name = "wgctl",
    version,
    about = "Configure and inspect wgd (and other userspace WireGuard) interfaces",
    long_about = "Configure and inspect wgd (and other userspace WireGuard) interfaces, \
                  with the argument syntax of wg(8). Without a command, runs `show`.\n\n\
                  Secrets are write-only in wgd: private and preshared keys can be set \
                  but are never shown."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show interfaces: all of them, one, or just their names
    Show {
        /// Print a JSON document instead (one object for an interface, an
        /// array for all)
        #[arg(long)]
        json: bool,
        /// An interface name, `all` (the default) or `interfaces`
        interface: Option<String>,
        /// Print only this, in a script-friendly format
        #[arg(value_enum)]
        field: Option<Field>,
    },
    /// Show the configuration of an interface in wg(8)'s file format
    /// (keys are write-only: a key file is named, a key is not shown)
    Showconf { interface: String },
    /// Change an interface, with wg(8)'s `set` arguments
    #[command(
        override_usage = "wgctl set <INTERFACE> [listen-port <PORT>] [fwmark <MARK>] \
                          [private-key <FILE>] [peer <BASE64-PUBLIC-KEY> [remove] \
                          [preshared-key <FILE>] [endpoint <HOST:PORT>] \
                          [persistent-keepalive <SECONDS|off>] \
                          [allowed-ips [+|-]<IP/CIDR>[,...]] ]..."
    )]
    Set {
        /// The interface to change
        interface: String,
        /// wg(8)'s words: listen-port, fwmark, private-key, peer KEY and its
        /// remove, preshared-key, endpoint, persistent-keepalive, allowed-ips
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Replace an interface's configuration with a file's
    Setconf { interface: String, file: PathBuf },
    /// Add a file's configuration to an interface's
    Addconf { interface: String, file: PathBuf },
    /// Make an interface match a file, changing only what differs
    Syncconf { interface: String, file: PathBuf },
    /// Make wgd read its configuration file again and apply it as
    /// syncconf does (what SIGHUP does); a file with an error is refused,
    /// the error printed, and the running configuration stays
    Reload { interface: String },
    /// Print a new private key
    Genkey,
    /// Print a new preshared key
    Genpsk,
    /// Print the public key of the private key on standard input
    Pubkey,
    /// Print the IPv6 address derived from a public key (fd77::/16)
    Addr {
        /// A base64 public key
        public_key: String,
    },
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.message().is_empty() {
                eprintln!("wgctl: {e}");
            }
            ExitCode::from(e.status)
        }
    }
}

/// Help and version go to standard output as clap prints them; a usage
/// error becomes one line.
fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("wgctl: {first} (see wgctl --help)");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let uapi = Uapi::default();
    match cli.command.unwrap_or(Command::Show {
        json: false,
        interface: None,
        field: None,
    }) {
        Command::Show {
            json,
            interface,
            field,
        } => cmd_show(&uapi, json, interface.as_deref(), field),
        Command::Showconf { interface } => {
            out(&wg_config::config::showconf(&uapi.get(&interface)?))
        }
        Command::Set { interface, args } => {
            let parsed = set::parse(&args)?;
            let ops = parsed.into_ops(&keys::read_key_file, &set::resolve_endpoint)?;
            uapi.set(&interface, &ops)
        }
        Command::Setconf { interface, file } => apply_conf(&uapi, &interface, &file, Mode::Set),
        Command::Addconf { interface, file } => apply_conf(&uapi, &interface, &file, Mode::Add),
        Command::Syncconf { interface, file } => apply_conf(&uapi, &interface, &file, Mode::Sync),
        Command::Reload { interface } => uapi.reload(&interface),
        Command::Genkey => {
            if let Some(w) = keys::world_readable_warning() {
                eprintln!("{w}");
            }
            keys::write_out(&keys::genkey())
        }
        Command::Genpsk => {
            if let Some(w) = keys::world_readable_warning() {
                eprintln!("{w}");
            }
            keys::write_out(&keys::genpsk())
        }
        Command::Pubkey => {
            let text = keys::read_secret_text(std::io::stdin().lock(), "pubkey: standard input")?;
            out(&keys::pubkey(&text)?)
        }
        Command::Addr { public_key } => out(&keys::addr(&public_key)?),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "wgctl", &mut buf);
            out(&String::from_utf8_lossy(&buf))
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Set,
    Add,
    Sync,
}

fn apply_conf(uapi: &Uapi, ifname: &str, file: &std::path::Path, mode: Mode) -> Result<()> {
    // Check the name before reading the file, so that a typo in either is
    // reported as such.
    uapi.socket_path(ifname)?;
    let cfg = wg_config::config::parse_file(file).map_err(|e| Error::new(e.to_string()))?;
    let ops = match mode {
        Mode::Set => conf::setconf_ops(cfg, true),
        Mode::Add => conf::setconf_ops(cfg, false),
        Mode::Sync => {
            let current = uapi.get(ifname)?;
            conf::syncconf_ops(cfg, &current)
        }
    };
    if ops.is_empty() {
        return Ok(());
    }
    uapi.set(ifname, &ops)
}

fn cmd_show(uapi: &Uapi, json: bool, target: Option<&str>, field: Option<Field>) -> Result<()> {
    if json && field.is_some() {
        return Err(Error::usage(
            "--json shows everything: give no field with it",
        ));
    }
    match target {
        Some("interfaces") => {
            if field.is_some() {
                return Err(Error::usage("`show interfaces' takes no field"));
            }
            let names = uapi.list()?;
            if json {
                return out(&json_text(&names)?);
            }
            if names.is_empty() {
                return Ok(());
            }
            out(&format!("{}\n", names.join(" ")))
        }
        None | Some("all") => {
            let mut devices = Vec::new();
            let mut failed = false;
            for name in uapi.list()? {
                match uapi.get(&name) {
                    Ok(d) => devices.push((name, d)),
                    // Like wg(8): say so and go on with the others.
                    Err(e) => {
                        eprintln!("wgctl: {e}");
                        failed = true;
                    }
                }
            }
            let text = if json {
                let all: Vec<_> = devices.iter().map(|(n, d)| show::json(n, d)).collect();
                json_text(&all)?
            } else if let Some(f) = field {
                devices
                    .iter()
                    .map(|(n, d)| show::field(n, d, f, true))
                    .collect()
            } else {
                let (color, now) = (use_color(), unix_now());
                devices
                    .iter()
                    .map(|(n, d)| show::pretty(n, d, color, now))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            out(&text)?;
            if failed && devices.is_empty() {
                // Each failure has been reported already.
                return Err(Error::quiet());
            }
            Ok(())
        }
        Some(name) => {
            let dev = uapi.get(name)?;
            let text = if json {
                json_text(&show::json(name, &dev))?
            } else if let Some(f) = field {
                show::field(name, &dev, f, false)
            } else {
                show::pretty(name, &dev, use_color(), unix_now())
            };
            out(&text)
        }
    }
}

fn json_text(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| Error::new(format!("JSON: {e}")))
}

/// Colour as wg(8) does it, only on a terminal, and never with `NO_COLOR`
/// set (https://no-color.org).
fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes to standard output. A reader that went away (`wgctl show | head`)
/// is not an error.
fn out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::new(format!(
            "writing to standard output: {}",
            io_text(&e)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("wgctl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn show_arguments() {
        assert!(parse(&[]).command.is_none());
        match parse(&["show", "wg0", "allowed-ips"]).command {
            Some(Command::Show {
                json: false,
                interface: Some(i),
                field: Some(Field::AllowedIps),
            }) => assert_eq!(i, "wg0"),
            other => panic!("{other:?}"),
        }
        match parse(&["show", "--json"]).command {
            Some(Command::Show {
                json: true,
                interface: None,
                field: None,
            }) => {}
            other => panic!("{other:?}"),
        }
        for f in [
            "public-key",
            "private-key",
            "listen-port",
            "fwmark",
            "peers",
            "preshared-keys",
            "endpoints",
            "allowed-ips",
            "latest-handshakes",
            "persistent-keepalive",
            "transfer",
            "dump",
        ] {
            parse(&["show", "all", f]);
        }
        match parse(&["reload", "wg0"]).command {
            Some(Command::Reload { interface }) => assert_eq!(interface, "wg0"),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["wgctl", "reload"]).is_err());
        assert!(Cli::try_parse_from(["wgctl", "show", "wg0", "bogus"]).is_err());
    }

    #[test]
    fn set_takes_wg_words_including_leading_dashes() {
        let k = proto::keys::PublicKey([1; 32]).to_base64();
        match parse(&["set", "wg0", "peer", &k, "allowed-ips", "-10.0.0.0/8"]).command {
            Some(Command::Set { interface, args }) => {
                assert_eq!(interface, "wg0");
                assert_eq!(args, vec!["peer", &k, "allowed-ips", "-10.0.0.0/8"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
