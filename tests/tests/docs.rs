//! The documentation and the service files, checked against the code:
//!
//! - `man_pages_lint_clean`: `mandoc -T lint -W warning` reports nothing
//!   for `man/wgd.8`, `man/wgctl.8` and `man/wgd.conf.5`;
//! - `wgd_page_*`: wgd(8) documents every long flag `wgd --help` prints,
//!   the synopsis, the `useradd` commands wgd itself prints, and what the
//!   operator must know (capabilities, chroot, environment, write-only
//!   secrets, memory locking);
//! - `wgctl_page_*`: wgctl(8) documents every subcommand, and every long
//!   flag and subcommand a built `wgctl --help` prints;
//! - `wgd_conf_page_*`: wgd.conf(5) documents every key the parser in
//!   `wg-config/src/config/parser.rs` accepts, its DIAGNOSTICS example is what wgd
//!   prints, and its AutoAddress examples match the derivation;
//! - `systemd_*` / `sysusers_*`: the unit and the sysusers.d file, with
//!   `systemd-analyze verify` and `systemd-sysusers --dry-run` where
//!   installed, and by parsing always;
//! - `rc_script_*`: the SysV init script passes `sh -n` (and shellcheck
//!   where installed).
//!
//! mandoc is required (`.ci/install-deps` installs it): without it the
//! man page tests fail rather than pass unchecked. wgctl may not be built
//! yet; its page is then checked against the subcommand list alone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha224};
use wgd_tests::proc::{describe, run_command};

const TIMEOUT: Duration = Duration::from_secs(60);
const PAGES: [&str; 3] = ["man/wgd.8", "man/wgctl.8", "man/wgd.conf.5"];
const UNIT: &str = "dist/systemd/wgd@.service";
const SYSUSERS: &str = "dist/sysusers.d/wgd.conf";
const RC_SCRIPT: &str = "dist/rc.d/wgd";
const RC_DEFAULTS: &str = "dist/default/wgd";
/// The subcommands wgctl(8) must document, in wg(8)'s syntax.
const WGCTL_SUBCOMMANDS: [&str; 12] = [
    "show",
    "showconf",
    "set",
    "setconf",
    "addconf",
    "syncconf",
    "reload",
    "genkey",
    "genpsk",
    "pubkey",
    "addr",
    "completions",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

fn file(rel: &str) -> PathBuf {
    root().join(rel)
}

fn read(rel: &str) -> String {
    let path = file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The program's path if `name` is on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn mandoc() -> PathBuf {
    which("mandoc").unwrap_or_else(|| {
        panic!(
            "mandoc is not installed, so the man pages cannot be checked: \
             run `bash .ci/install-deps` as root (it installs the Debian package mandoc)"
        )
    })
}

fn run(cmd: Command) -> Output {
    let desc = describe(&cmd);
    run_command(cmd, TIMEOUT).unwrap_or_else(|e| panic!("running `{desc}`: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The page rendered as plain text on one very wide terminal (so that no
/// line is broken inside a flag), with mandoc's overstrike bold and
/// underline removed.
fn render(rel: &str) -> String {
    let mut cmd = Command::new(mandoc());
    cmd.args(["-T", "ascii", "-O", "width=1000"]).arg(file(rel));
    let out = run(cmd);
    assert!(
        out.status.success(),
        "mandoc could not render {rel}: {}",
        text(&out.stderr)
    );
    let raw = text(&out.stdout);
    let chars: Vec<char> = raw.chars().collect();
    let mut plain = String::with_capacity(raw.len());
    let mut i = 0;
    while i < chars.len() {
        if chars.get(i + 1) == Some(&'\u{8}') {
            i += 2;
            continue;
        }
        plain.push(chars[i]);
        i += 1;
    }
    plain
}

/// Whitespace runs (and `\` line continuations of literal displays)
/// collapsed to one space.
fn squash(s: &str) -> String {
    s.replace("\\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The body of section `name` of a rendered page: the lines after its
/// heading up to the next heading (a line starting in column 0).
fn section(rendered: &str, name: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in rendered.lines() {
        let heading = !line.is_empty() && !line.starts_with(' ');
        if heading {
            inside = line.trim() == name;
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(!out.is_empty(), "no {name} section found");
    out
}

/// Every `--long-flag` in `s`.
fn long_flags(s: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i + 2 < bytes.len() {
        let starts = bytes[i] == b'-'
            && bytes[i + 1] == b'-'
            && bytes[i + 2].is_ascii_alphabetic()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-'));
        if starts {
            let mut j = i + 2;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'-') {
                j += 1;
            }
            flags.insert(s[i..j].trim_end_matches('-').to_string());
            i = j;
        } else {
            i += 1;
        }
    }
    flags
}

/// True if `word` occurs in `s` not as part of a longer flag or word.
fn mentions_word(s: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    s.match_indices(word).any(|(i, _)| {
        let before = s[..i].chars().next_back();
        let after = s[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

fn wgd_binary() -> PathBuf {
    wgd_tests::wgd::binary().unwrap_or_else(|e| panic!("{e}"))
}

fn wgd_help() -> String {
    let mut cmd = Command::new(wgd_binary());
    cmd.arg("--help");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "wgd --help failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn man_pages_lint_clean() {
    let mandoc = mandoc();
    let mut problems = Vec::new();
    for page in PAGES {
        let mut cmd = Command::new(&mandoc);
        cmd.args(["-T", "lint", "-W", "warning"]).arg(file(page));
        let out = run(cmd);
        // Notes about the local manual database are about this machine,
        // not about the page.
        let report: Vec<String> = text(&out.stdout)
            .lines()
            .chain(text(&out.stderr).lines())
            .filter(|l| !l.trim().is_empty() && !l.contains("mandoc.db"))
            .map(str::to_string)
            .collect();
        if !out.status.success() || !report.is_empty() {
            problems.push(format!("{page} ({}):\n{}", out.status, report.join("\n")));
        }
    }
    assert!(
        problems.is_empty(),
        "mandoc -T lint -W warning:\n{}",
        problems.join("\n")
    );
}

#[test]
fn man_pages_cross_reference_each_other() {
    for (page, wants) in [
        (
            "man/wgd.8",
            &["wgctl(8)", "wgd.conf(5)", "wg(8)", "wg-quick(8)"][..],
        ),
        ("man/wgctl.8", &["wgd(8)", "wgd.conf(5)", "wg(8)"][..]),
        ("man/wgd.conf.5", &["wgd(8)", "wgctl(8)", "wg(8)"][..]),
    ] {
        let rendered = render(page);
        let see_also = section(&rendered, "SEE ALSO");
        for want in wants {
            assert!(
                see_also.contains(want),
                "{page}: SEE ALSO lacks {want}:\n{see_also}"
            );
        }
    }
}

#[test]
fn wgd_page_documents_every_flag() {
    let help = wgd_help();
    let flags = long_flags(&help);
    for expected in [
        "--foreground",
        "--config",
        "--user",
        "--handshake-user",
        "--crypto-user",
        "--allow-nobody",
    ] {
        assert!(
            flags.contains(expected),
            "wgd --help no longer prints {expected}; found {flags:?}:\n{help}"
        );
    }
    let rendered = render("man/wgd.8");
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| !mentions_word(&rendered, f))
        .collect();
    assert!(
        missing.is_empty(),
        "wgd.8 does not document {missing:?}, which `wgd --help` prints"
    );
}

#[test]
fn wgd_page_synopsis() {
    let synopsis = squash(&section(&render("man/wgd.8"), "SYNOPSIS"));
    assert_eq!(
        synopsis,
        "wgd [-f] [-c file] [--user name] [--handshake-user name] [--crypto-user name] [--allow-nobody] ifname"
    );
}

/// The page's `useradd` commands are the ones wgd prints when its users
/// are missing (which it reports before touching anything).
#[test]
fn wgd_page_useradd_commands_match_wgd() {
    let missing = "wgd-docs-no-such-user";
    let missing_hs = "wgd-docs-no-such-hs";
    let missing_crypto = "wgd-docs-no-such-crypto";
    let mut cmd = Command::new(wgd_binary());
    cmd.args([
        "-f",
        "--user",
        missing,
        "--handshake-user",
        missing_hs,
        "--crypto-user",
        missing_crypto,
    ])
    .arg("wgdocs0")
    .env_remove("WG_PROCESS_FOREGROUND");
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "wgd started with users that do not exist:\n{stderr}"
    );
    let hint = |name: &str| -> String {
        stderr
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("useradd ") && l.ends_with(name))
            .unwrap_or_else(|| panic!("wgd printed no useradd command for {name}:\n{stderr}"))
            .to_string()
    };
    let rendered = squash(&render("man/wgd.8"));
    for (printed, user) in [
        (hint(missing), "_wgd-net"),
        (hint(missing_hs), "_wgd-hs"),
        (hint(missing_crypto), "_wgd-crypto"),
    ] {
        let name = printed
            .rsplit(' ')
            .next()
            .expect("a useradd line has words");
        let expected = format!("{}{user}", &printed[..printed.len() - name.len()]);
        assert!(
            rendered.contains(&expected),
            "wgd.8 lacks `{expected}` (what wgd prints for a missing user)"
        );
    }
}

#[test]
fn wgd_page_documents_privileges_environment_and_secrets() {
    let rendered = render("man/wgd.8");
    let flat = squash(&rendered);
    for needle in [
        // the four processes and what they run as
        "parent",
        "transport",
        "handshake",
        "crypto",
        "_wgd-net",
        "_wgd-hs",
        "_wgd-crypto",
        "/run/wgd/empty",
        "NO_NEW_PRIVS",
        "CAP_NET_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "SOCK_SEQPACKET",
        "SCM_RIGHTS",
        // memory locking
        "mlockall",
        "LimitMEMLOCK",
        "CAP_SYS_RESOURCE",
        // files
        "/var/run/wireguard/ifname.sock",
        "0600",
        // write-only secrets
        "private_key",
        "preshared_key",
        "wg showconf",
        "wg-quick save",
        "wgctl show",
        "wgctl showconf",
        "PrivateKeyFile",
        "wgd_get=1",
    ] {
        assert!(flat.contains(needle), "wgd.8 does not mention {needle:?}");
    }
    let environment = section(&rendered, "ENVIRONMENT");
    for var in [
        "LOG_LEVEL",
        "WGD_TRANSPORT_WORKERS",
        "WG_PROCESS_FOREGROUND",
        "WG_QUICK_USERSPACE_IMPLEMENTATION",
    ] {
        assert!(environment.contains(var), "wgd.8 ENVIRONMENT lacks {var}");
    }
    for level in ["error", "info", "debug", "silent"] {
        assert!(
            mentions_word(&environment, level),
            "wgd.8 ENVIRONMENT lacks LOG_LEVEL {level}"
        );
    }
    let standards = squash(&section(&rendered, "STANDARDS"));
    assert!(standards.contains("WireGuard: Next Generation Kernel Network Tunnel"));
    assert!(standards.contains("Cross-platform Userspace"));
}

fn wgctl_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WGCTL_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = root().join("target").join("debug").join("wgctl");
    p.exists().then_some(p)
}

/// Subcommand names from a clap-style `Commands:` block, if any.
fn help_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn wgctl_page_documents_every_subcommand() {
    let rendered = render("man/wgctl.8");
    let synopsis = section(&rendered, "SYNOPSIS");
    let documented: BTreeSet<&str> = synopsis
        .lines()
        .filter_map(|l| l.trim().strip_prefix("wgctl "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    for sub in WGCTL_SUBCOMMANDS {
        assert!(
            documented.contains(sub),
            "wgctl.8 SYNOPSIS lacks `wgctl {sub}` (has {documented:?})"
        );
    }
    let description = section(&rendered, "DESCRIPTION");
    for sub in WGCTL_SUBCOMMANDS {
        let described = description
            .lines()
            .any(|l| l.split_whitespace().next() == Some(sub));
        assert!(described, "wgctl.8 DESCRIPTION has no entry for {sub}");
    }
    let flat = squash(&rendered);
    for needle in [
        "[ifname | all | interfaces]",
        "[field | dump]",
        "--json",
        "PrivateKeyFile",
        "fd77::/16",
        "SHA-224",
    ] {
        assert!(flat.contains(needle), "wgctl.8 does not mention {needle:?}");
    }
    let exit_status = section(&rendered, "EXIT STATUS");
    assert!(exit_status.contains("exits 0 on success"));
    section(&rendered, "EXAMPLES");
}

#[test]
fn wgctl_page_documents_what_wgctl_help_prints() {
    // The suite builds every binary first (scripts/test.sh): a missing
    // one is a failure, not a reason to check less.
    let bin = wgctl_binary()
        .expect("wgctl is not built (target/debug/wgctl): run cargo build --workspace --bins");
    let help = |args: &[&str]| -> Option<String> {
        let mut cmd = Command::new(&bin);
        cmd.args(args);
        let out = run(cmd);
        let help = text(&out.stdout) + &text(&out.stderr);
        (out.status.success() && !help.trim().is_empty()).then_some(help)
    };
    let top = help(&["--help"])
        .unwrap_or_else(|| panic!("{} --help failed or printed nothing", bin.display()));
    let rendered = render("man/wgctl.8");
    let synopsis = section(&rendered, "SYNOPSIS");
    let mut flags = long_flags(&top);
    for sub in help_subcommands(&top) {
        assert!(
            synopsis.lines().any(|l| l
                .trim()
                .strip_prefix("wgctl ")
                .and_then(|r| r.split_whitespace().next())
                == Some(sub.as_str())),
            "wgctl --help lists the subcommand {sub}, which wgctl.8's SYNOPSIS lacks"
        );
        if let Some(sub_help) = help(&[sub.as_str(), "--help"]) {
            flags.extend(long_flags(&sub_help));
        }
    }
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| !mentions_word(&rendered, f))
        .collect();
    assert!(
        missing.is_empty(),
        "wgctl.8 does not document {missing:?}, which `wgctl --help` prints"
    );
}

/// The quoted strings of `const NAME: &[&str] = &[ ... ];` in `src`.
fn const_str_list(src: &str, name: &str) -> Vec<String> {
    let start = src
        .find(&format!("const {name}"))
        .unwrap_or_else(|| panic!("wg-config/src/config/parser.rs has no `const {name}` any more"));
    let body = &src[start..];
    let body = &body[..body.find("];").expect("the list ends with `];`")];
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn wgd_conf_page_documents_every_key() {
    let src = read("wg-config/src/config/parser.rs");
    let rendered = render("man/wgd.conf.5");
    let interface = section(&rendered, "DESCRIPTION");
    let documented: BTreeSet<String> = interface
        .lines()
        .filter_map(|l| {
            let (key, _) = l.trim().split_once(" = ")?;
            (!key.contains(' ')).then(|| key.to_ascii_lowercase())
        })
        .collect();
    for (list, section_name) in [("INTERFACE_KEYS", "Interface"), ("PEER_KEYS", "Peer")] {
        let keys = const_str_list(&src, list);
        assert!(!keys.is_empty(), "no keys found in {list}");
        for key in keys {
            assert!(
                documented.contains(&key),
                "wgd.conf.5 does not document the [{section_name}] key {key:?} \
                 (documented: {documented:?})"
            );
        }
    }
    let flat = squash(&rendered);
    for needle in [
        "[Interface]",
        "[Peer]",
        "case-insensitive",
        "file:line: message",
        "AutoAddress = true",
        "fd77::/16",
        "first 14 bytes",
        "SHA-224",
        "wgctl addr",
        "BMX7",
    ] {
        assert!(
            flat.contains(needle),
            "wgd.conf.5 does not mention {needle:?}"
        );
    }
    section(&rendered, "EXAMPLES");
}

/// The DIAGNOSTICS example is what wgd prints for such a file (it reads
/// the configuration before anything else, so nothing is created).
#[test]
fn wgd_conf_page_diagnostic_is_what_wgd_prints() {
    let rendered = render("man/wgd.conf.5");
    let diagnostics = section(&rendered, "DIAGNOSTICS");
    let documented = diagnostics
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("/etc/wireguard/wg0.conf:"))
        .expect("wgd.conf.5 DIAGNOSTICS has an example error")
        .to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("wg0.conf");
    std::fs::write(
        &conf,
        "[Interface]\nListenPort = 51820\n\n[Peer]\n\
         PublicKey = YzvhQuwbw6VgaSE3pAbxwNuX+1Jh+HKs3U06p7+iU2I=\n\
         AllowedIPs = 10.0.0.2/32\nAdress = 10.0.0.1\n",
    )
    .expect("writing the configuration");
    let mut cmd = Command::new(wgd_binary());
    cmd.arg("-f").arg("-c").arg(&conf).arg("wgdocs1");
    let out = run(cmd);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "wgd accepted a bad file:\n{stderr}");
    let expected = documented.replace("/etc/wireguard/wg0.conf", &conf.display().to_string());
    assert!(
        stderr.lines().any(|l| l.trim() == expected),
        "wgd.conf.5 documents `{documented}`, but wgd printed:\n{stderr}"
    );
}

/// `fd77::/16` followed by the first 14 bytes of SHA-224 over the key.
fn derived_address(pubkey_b64: &str) -> std::net::Ipv6Addr {
    let key = base64::engine::general_purpose::STANDARD
        .decode(pubkey_b64)
        .unwrap_or_else(|e| panic!("{pubkey_b64:?} in a man page is not base64: {e}"));
    assert_eq!(key.len(), 32, "{pubkey_b64:?} is not a 32-byte key");
    let digest = Sha224::digest(&key);
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[1] = 0x77;
    a[2..].copy_from_slice(&digest[..14]);
    a.into()
}

#[test]
fn autoaddress_examples_match_the_derivation() {
    for page in ["man/wgctl.8", "man/wgd.conf.5"] {
        let flat = squash(&render(page));
        let keys: Vec<&str> = flat
            .match_indices("wgctl addr ")
            .filter_map(|(i, m)| {
                let word = flat[i + m.len()..].split_whitespace().next()?;
                let word = word.trim_end_matches(['\'', ',', '.']);
                (word.len() == 44 && word.ends_with('=')).then_some(word)
            })
            .collect();
        assert!(!keys.is_empty(), "{page} has no `wgctl addr KEY` example");
        let derived: Vec<std::net::Ipv6Addr> = keys.iter().map(|k| derived_address(k)).collect();
        let shown: Vec<std::net::Ipv6Addr> = flat
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| w.starts_with("fd77:") && !w.starts_with("fd77::"))
            .map(|w| {
                let w = w.split('/').next().unwrap_or(w);
                w.parse()
                    .unwrap_or_else(|e| panic!("{page}: {w:?} is not an IPv6 address: {e}"))
            })
            .collect();
        assert!(!shown.is_empty(), "{page} shows no derived address");
        for addr in &shown {
            assert!(
                derived.contains(addr),
                "{page} shows {addr}, which is not the address of any key it passes \
                 to `wgctl addr` (those derive to {derived:?})"
            );
        }
    }
}

/// `[Section]` → `Key=Value` pairs of a unit file, in order.
fn unit_entries(unit: &str) -> Vec<(String, String, String)> {
    let mut entries = Vec::new();
    let mut section = String::new();
    for line in unit.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{UNIT}: not a Key=Value line: {line:?}"));
        entries.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
    }
    entries
}

#[test]
fn systemd_unit_has_the_required_settings() {
    let entries = unit_entries(&read(UNIT));
    let get = |section: &str, key: &str| -> Vec<&str> {
        entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    };
    let one = |section: &str, key: &str| -> &str {
        match get(section, key)[..] {
            [v] => v,
            ref other => panic!("{UNIT}: expected one [{section}] {key}=, found {other:?}"),
        }
    };
    assert_eq!(
        one("Service", "ExecStart"),
        "/usr/sbin/wgd -f -c /etc/wireguard/%i.conf %i"
    );
    assert_eq!(one("Service", "Type"), "simple");
    assert_eq!(one("Service", "ExecReload"), "/usr/bin/wgctl reload %i");
    assert_eq!(one("Service", "Restart"), "on-failure");
    assert_eq!(one("Service", "LimitMEMLOCK"), "256M");
    assert!(one("Unit", "After").contains("network-online.target"));
    assert!(one("Unit", "Documentation").contains("man:wgd(8)"));
    assert!(!one("Unit", "Description").is_empty());
    assert!(!one("Install", "WantedBy").is_empty());

    // What wgd needs before it drops privilege (see wgd/src/privdrop.rs),
    // and nothing more.
    let caps: BTreeSet<&str> = one("Service", "CapabilityBoundingSet")
        .split_whitespace()
        .collect();
    let want: BTreeSet<&str> = [
        "CAP_NET_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_SYS_CHROOT",
        "CAP_SETPCAP",
        "CAP_IPC_LOCK",
        "CAP_SYS_NICE",
        // the parent: CAP_KILL kept, CAP_SYS_ADMIN for its seccomp filter
        // without no_new_privs (dropped at once)
        "CAP_KILL",
        "CAP_SYS_ADMIN",
    ]
    .into_iter()
    .collect();
    assert_eq!(caps, want, "{UNIT}: CapabilityBoundingSet");

    // Settings that would break wgd's own privilege drop.
    for key in [
        "User",
        "Group",
        "DynamicUser",
        "NoNewPrivileges",
        "PrivateUsers",
        "AmbientCapabilities",
        "SecureBits",
    ] {
        assert!(
            get("Service", key).is_empty(),
            "{UNIT} must not set {key}=: wgd starts as root and drops privilege itself"
        );
    }
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let analyze = which("systemd-analyze")
        .expect("systemd-analyze is not installed (.ci/install-deps installs systemd)");
    let dir = tempfile::tempdir().expect("temp dir");
    // An instance of the template, run from the binary this workspace built
    // (verify checks that ExecStart= is executable).
    let wgctl = wgctl_binary().expect("wgctl is built (ExecReload= runs it)");
    let unit = read(UNIT)
        .replace("/usr/sbin/wgd", &wgd_binary().display().to_string())
        .replace("/usr/bin/wgctl", &wgctl.display().to_string());
    let instance = dir.path().join("wgd@wg0.service");
    std::fs::write(&instance, unit).expect("writing the unit instance");
    // Documentation=man:… is checked against these pages, as installed.
    let manpath = dir.path().join("man");
    for page in PAGES {
        let section = page.rsplit('.').next().expect("a page has a section");
        let to = manpath.join(format!("man{section}"));
        std::fs::create_dir_all(&to).expect("creating the man directory");
        let name = Path::new(page).file_name().expect("a page has a name");
        std::fs::copy(file(page), to.join(name)).expect("copying a man page");
    }
    let mut cmd = Command::new(analyze);
    cmd.arg("verify")
        .arg("--man=yes")
        .arg(&instance)
        .env("MANPATH", &manpath)
        .env("SYSTEMD_LOG_COLOR", "0");
    let out = run(cmd);
    let stderr = text(&out.stderr);
    let about_unit: Vec<&str> = stderr.lines().filter(|l| l.contains("wgd")).collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify {UNIT} ({}):\n{stderr}{}",
        out.status,
        text(&out.stdout)
    );
}

#[test]
fn sysusers_creates_both_users() {
    let conf = read(SYSUSERS);
    let users: Vec<(String, String, String)> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let shell = fields.last().expect("a line has fields").to_string();
            (fields[0].to_string(), fields[1].to_string(), shell)
        })
        .collect();
    for name in ["_wgd-net", "_wgd-hs", "_wgd-crypto"] {
        assert!(
            users
                .iter()
                .any(|(t, n, shell)| t == "u" && n == name && shell == "/usr/sbin/nologin"),
            "{SYSUSERS} does not create the user {name} with shell /usr/sbin/nologin: {users:?}"
        );
    }

    let sysusers = which("systemd-sysusers")
        .expect("systemd-sysusers is not installed (.ci/install-deps installs systemd)");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(sysusers);
    cmd.arg(format!("--root={}", dir.path().display()))
        .arg("--dry-run")
        .arg(file(SYSUSERS));
    let out = run(cmd);
    let report = text(&out.stdout) + &text(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-sysusers --dry-run {SYSUSERS}:\n{report}"
    );
    for name in ["_wgd-net", "_wgd-hs", "_wgd-crypto"] {
        assert!(
            report.contains(&format!("user '{name}'")),
            "systemd-sysusers would not create {name}:\n{report}"
        );
    }
}

#[test]
fn rc_script_passes_sh_n() {
    for script in [RC_SCRIPT, RC_DEFAULTS] {
        let mut cmd = Command::new("sh");
        cmd.arg("-n").arg(file(script));
        let out = run(cmd);
        assert!(
            out.status.success(),
            "sh -n {script}:\n{}",
            text(&out.stderr)
        );
    }
    let script = read(RC_SCRIPT);
    assert!(
        script.starts_with("#!/bin/sh\n"),
        "{RC_SCRIPT}: not a sh script"
    );
    for needle in [
        "### BEGIN INIT INFO",
        "# Provides:          wgd",
        "### END INIT INFO",
        "start-stop-daemon",
        "/etc/default/wgd",
        "WGD_INTERFACES",
        "/etc/wireguard",
        "TERM",
        "start)",
        "stop)",
        "restart)",
        "reload | force-reload)",
        "status)",
    ] {
        assert!(script.contains(needle), "{RC_SCRIPT} lacks {needle:?}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(file(RC_SCRIPT))
        .expect("stat the rc script")
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "{RC_SCRIPT} is not executable");
}

#[test]
fn rc_script_passes_shellcheck() {
    let shellcheck =
        which("shellcheck").expect("shellcheck is not installed (.ci/install-deps installs it)");
    for script in [RC_SCRIPT, RC_DEFAULTS] {
        let mut cmd = Command::new(&shellcheck);
        cmd.arg(file(script));
        let out = run(cmd);
        assert!(
            out.status.success(),
            "shellcheck {script}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}
