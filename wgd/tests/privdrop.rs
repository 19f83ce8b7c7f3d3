//! Privilege-drop tests. They need root: as any other user they fail (not
//! skip), because a privilege drop that is never exercised is not tested.
//!
//! Each drop happens in a forked child, which reports what the kernel says
//! about it over a pipe and leaves with `_exit`, never returning into the
//! test harness.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{self, fork, ForkResult, Gid, Pid, Uid, User};
use wgd::privdrop::{self, Identity};

/// Forked children inherit every fd of this multithreaded process, pipes of
/// concurrently running tests included; fork one child at a time so that no
/// report pipe is held open by a stranger.
static FORK_LOCK: Mutex<()> = Mutex::new(());

const END: &str = "END\n";

fn require_root() {
    assert!(
        Uid::effective().is_root(),
        "the privdrop tests must run as root (they chroot, setuid and change capabilities); \
         run them with sudo, e.g. `sudo -E cargo test -p wgd --test privdrop`"
    );
}

/// Run `body` in a forked child and return the `key=value` lines it
/// writes, plus what `inspect` learns about the child from outside while it
/// waits.
fn in_child<T>(
    body: impl FnOnce(&mut File) -> Result<(), String>,
    inspect: impl FnOnce(Pid) -> T,
) -> (HashMap<String, String>, T) {
    let _serial = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (report_r, report_w) = unistd::pipe().expect("pipe");
    let (go_r, go_w) = unistd::pipe().expect("pipe");

    // SAFETY: the child only runs the test body and then `_exit`s; it
    // never returns into the harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(report_r);
            drop(go_w);
            let mut out = File::from(report_w);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let r = body(&mut out);
                if let Err(e) = &r {
                    let _ = writeln!(out, "error={}", e.replace('\n', " | "));
                }
                r
            }));
            let _ = out.write_all(END.as_bytes());
            drop(out);
            // Stay alive until the parent has looked at us from outside.
            let mut go = File::from(go_r);
            let _ = go.read(&mut [0u8; 1]);
            let code = match outcome {
                Ok(Ok(())) => 0,
                Ok(Err(_)) => 1,
                Err(_) => 2,
            };
            // SAFETY: _exit skips atexit handlers and stdio flushing that
            // belong to the harness; it never returns.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            drop(go_r);
            let text = read_report(report_r);
            let inspected = inspect(child);
            File::from(go_w).write_all(b"x").expect("release child");
            let status = waitpid(child, None).expect("waitpid");
            let map = parse(&text);
            assert_eq!(
                status,
                WaitStatus::Exited(child, 0),
                "child failed: {:?}\nfull report:\n{text}",
                map.get("error")
            );
            (map, inspected)
        }
    }
}

fn read_report(fd: OwnedFd) -> String {
    let mut f = File::from(fd);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read up to the terminator rather than to EOF: see FORK_LOCK.
    while !buf.ends_with(END.as_bytes()) {
        let n = f.read(&mut chunk).expect("read report");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Copy the given `/proc/self/status` fields (values whitespace-normalised)
/// into the report.
fn report_status(out: &mut File, status: &str, keys: &[&str]) -> Result<(), String> {
    for key in keys {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .ok_or_else(|| format!("no {key} in /proc/self/status"))?;
        let value = line.split_whitespace().collect::<Vec<_>>().join(" ");
        writeln!(out, "{key}={value}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn get<'a>(m: &'a HashMap<String, String>, k: &str) -> &'a str {
    m.get(k)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("child did not report {k}; report: {m:?}"))
}

/// Drop to `id` in a child (locking memory first when `lock` is set, as the
/// crypto role does) and check everything the kernel reports.
fn check_drop(id: Identity, lock: bool) {
    let root = privdrop::empty_root().expect("empty_root");
    let child_root = root.clone();
    let child_id = id.clone();
    let (m, proc_root) = in_child(
        move |out| {
            // /proc is not reachable after the chroot; the status file
            // is generated when read, so opening it now and reading it
            // after the drop shows the dropped state.
            let mut status_file = File::open("/proc/self/status").map_err(|e| e.to_string())?;
            if lock {
                // Either locked, or declined because the memlock limit leaves
                // no room to allocate after the drop (as in containers without
                // CAP_SYS_RESOURCE); anything else is a failure.
                let lock = match privdrop::lock_memory() {
                    Ok(()) => "locked".to_owned(),
                    Err(e @ privdrop::PrivError::Memlock(_)) => format!("declined: {e}"),
                    Err(e) => return Err(format!("lock_memory: {e}")),
                };
                writeln!(out, "lock={lock}").map_err(|e| e.to_string())?;
            }
            privdrop::drop_child_privileges(&child_id, &child_root)
                .map_err(|e| format!("drop_child_privileges: {e}"))?;
            if lock {
                // MCL_FUTURE without CAP_IPC_LOCK: allocations must still
                // work within the raised RLIMIT_MEMLOCK.
                let v = vec![1u8; 16 << 20];
                writeln!(
                    out,
                    "alloc={}",
                    v.iter().map(|&b| b as usize).sum::<usize>()
                )
                .map_err(|e| e.to_string())?;
            }
            let mut status = String::new();
            status_file
                .read_to_string(&mut status)
                .map_err(|e| e.to_string())?;
            report_status(
                out,
                &status,
                &[
                    "Uid",
                    "Gid",
                    "Groups",
                    "CapInh",
                    "CapEff",
                    "CapPrm",
                    "CapBnd",
                    "CapAmb",
                    "NoNewPrivs",
                    "VmLck",
                ],
            )?;
            let setuid = match unistd::setuid(Uid::from_raw(0)) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("{e:?}"),
            };
            let dumpable = nix::sys::prctl::get_dumpable().map_err(|e| e.to_string())?;
            let passwd = match File::open("/etc/passwd") {
                Ok(_) => "opened".to_owned(),
                Err(e) => format!("{:?}", e.kind()),
            };
            let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
            let listing = fs::read_dir("/")
                .map(|d| d.count().to_string())
                .unwrap_or_else(|e| format!("{:?}", e.kind()));
            writeln!(
                out,
                "setuid0={setuid}\ndumpable={dumpable}\npasswd={passwd}\ncwd={}\nroot_entries={listing}",
                cwd.display()
            )
            .map_err(|e| e.to_string())
        },
        |pid| fs::read_link(format!("/proc/{pid}/root")).expect("readlink /proc/PID/root"),
    );

    let (u, g) = (id.uid.as_raw(), id.gid.as_raw());
    assert_eq!(
        get(&m, "Uid"),
        format!("{u} {u} {u} {u}"),
        "uids (real, effective, saved, fs)"
    );
    assert_eq!(
        get(&m, "Gid"),
        format!("{g} {g} {g} {g}"),
        "gids (real, effective, saved, fs)"
    );
    assert_eq!(get(&m, "Groups"), "", "supplementary groups");
    for key in ["CapInh", "CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(get(&m, key), "0000000000000000", "{key}");
    }
    assert_eq!(get(&m, "NoNewPrivs"), "1");
    assert_eq!(get(&m, "setuid0"), "EPERM", "setuid(0) after the drop");
    assert_eq!(get(&m, "dumpable"), "false");
    assert_eq!(
        get(&m, "passwd"),
        "NotFound",
        "/etc/passwd inside the chroot"
    );
    assert_eq!(get(&m, "cwd"), "/");
    assert_eq!(get(&m, "root_entries"), "0", "the chroot is empty");
    assert_eq!(proc_root, root, "/proc/PID/root is the empty root");
    if lock {
        assert_eq!(get(&m, "alloc"), (16usize << 20).to_string());
        let locked_kb: u64 = get(&m, "VmLck")
            .trim_end_matches(" kB")
            .parse()
            .expect("VmLck");
        let lock = get(&m, "lock");
        if lock == "locked" {
            assert!(locked_kb > 0, "memory is locked (VmLck {locked_kb} kB)");
        } else {
            eprintln!("note: lock_memory {lock}");
            assert_eq!(locked_kb, 0, "a declined lock leaves nothing locked");
        }
    }
}

#[test]
fn child_drop_to_nobody() {
    require_root();
    let nobody = User::from_name("nobody")
        .expect("getpwnam")
        .expect("no user nobody");
    check_drop(
        Identity {
            name: nobody.name,
            uid: nobody.uid,
            gid: nobody.gid,
        },
        false,
    );
}

#[test]
fn child_drop_to_unnamed_id_with_locked_memory() {
    require_root();
    // A hand-made identity without passwd entry, like the crypto fallback.
    check_drop(
        Identity {
            name: "#65533".into(),
            uid: Uid::from_raw(65533),
            gid: Gid::from_raw(65533),
        },
        true,
    );
}

#[test]
fn drop_refuses_root_identity() {
    require_root();
    let (m, ()) = in_child(
        |out| {
            let root = Identity {
                name: "root".into(),
                uid: Uid::from_raw(0),
                gid: Gid::from_raw(0),
            };
            let r = privdrop::drop_child_privileges(&root, Path::new("/nonexistent"));
            writeln!(out, "refused={}", r.is_err()).map_err(|e| e.to_string())
        },
        |_| (),
    );
    assert_eq!(get(&m, "refused"), "true");
}

#[test]
fn drop_refuses_multithreaded_process() {
    require_root();
    let (m, ()) = in_child(
        |out| {
            // A second thread would keep the capabilities this one drops.
            let (_hold, wait) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                let _ = wait.recv();
            });
            let id = Identity {
                name: "#65533".into(),
                uid: Uid::from_raw(65533),
                gid: Gid::from_raw(65533),
            };
            let r = privdrop::drop_child_privileges(&id, Path::new("/nonexistent"));
            let still_root = Uid::effective().is_root();
            writeln!(out, "refused={}\nstill_root={still_root}", r.is_err())
                .map_err(|e| e.to_string())
        },
        |_| (),
    );
    assert_eq!(get(&m, "refused"), "true");
    assert_eq!(
        get(&m, "still_root"),
        "true",
        "refused before changing anything"
    );
}

#[test]
fn parent_keeps_only_net_admin_and_bind_service() {
    require_root();
    let (m, ()) = in_child(
        |out| {
            privdrop::restrict_parent().map_err(|e| format!("restrict_parent: {e}"))?;
            let status = fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
            report_status(
                out,
                &status,
                &["Uid", "CapInh", "CapEff", "CapPrm", "CapBnd", "CapAmb"],
            )?;
            let dumpable = nix::sys::prctl::get_dumpable().map_err(|e| e.to_string())?;
            writeln!(out, "dumpable={dumpable}").map_err(|e| e.to_string())
        },
        |_| (),
    );
    // 1 << CAP_NET_ADMIN (12) | 1 << CAP_NET_BIND_SERVICE (10) | 1 << CAP_KILL (5)
    // | 1 << CAP_SYS_NICE (23, the transport's SCHED_RR while busy)
    let kept = "0000000000801420";
    // ... and, in the bounding set only, what a restarted role needs:
    // SETGID (6), SETUID (7), SETPCAP (8), IPC_LOCK (14), SYS_CHROOT (18).
    let bounding = "00000000008455e0";
    assert_eq!(get(&m, "CapEff"), kept);
    assert_eq!(get(&m, "CapPrm"), kept);
    assert_eq!(get(&m, "CapBnd"), bounding);
    assert_eq!(get(&m, "CapInh"), "0000000000000000");
    assert_eq!(get(&m, "CapAmb"), "0000000000000000");
    assert_eq!(get(&m, "Uid"), "0 0 0 0", "the parent stays uid 0");
    assert_eq!(get(&m, "dumpable"), "false");
}

#[test]
fn resolve_users_missing_and_fallback() {
    require_root();
    let missing = "_wgd-test-no-such-user";
    let missing_crypto = "_wgd-test-no-such-crypto";

    let err = privdrop::resolve_users(Some(missing), None, Some(missing_crypto), false)
        .expect_err("missing users must be an error");
    let msg = err.to_string();
    assert!(msg.contains("useradd"), "{msg}");
    assert!(
        msg.contains(&privdrop::create_user_command(missing)),
        "{msg}"
    );
    assert!(
        msg.contains(&privdrop::create_user_command(missing_crypto)),
        "{msg}"
    );

    let users = privdrop::resolve_users(
        Some(missing),
        Some("_wgd-test-no-such-hs"),
        Some(missing_crypto),
        true,
    )
    .expect("fallback with allow_nobody");
    let nobody = User::from_name("nobody")
        .expect("getpwnam")
        .expect("no user nobody");
    assert_eq!(users.transport.uid, nobody.uid);
    assert_eq!(users.transport.gid, nobody.gid);
    for id in [&users.handshake, &users.crypto] {
        assert_ne!(id.uid, users.transport.uid);
        assert_ne!(id.gid, users.transport.gid);
        assert!(!id.uid.is_root() && id.gid.as_raw() != 0);
        assert!(User::from_uid(id.uid).expect("getpwuid").is_none());
    }
    assert_ne!(users.handshake.uid, users.crypto.uid);

    // Two roles under one uid could trace and signal each other.
    let err = privdrop::resolve_users(Some("nobody"), None, Some("nobody"), false)
        .expect_err("same uid must be an error");
    assert!(err.to_string().contains("uid"), "{err}");

    let err = privdrop::resolve_users(Some("root"), None, Some("nobody"), false)
        .expect_err("root must be refused");
    assert!(err.to_string().contains("root"), "{err}");

    for name in [
        privdrop::DEFAULT_USER,
        privdrop::DEFAULT_HANDSHAKE_USER,
        privdrop::DEFAULT_CRYPTO_USER,
    ] {
        assert!(privdrop::CREATE_USERS_HINT.contains(&privdrop::create_user_command(name)));
    }
}

#[test]
fn empty_root_is_vetted() {
    require_root();
    let root = privdrop::empty_root().expect("empty_root");
    let md = fs::symlink_metadata(&root).expect("stat");
    assert!(md.is_dir());
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);

    // /tmp is world-writable: anyone could swap the directory.
    assert!(privdrop::empty_root_at(Path::new("/tmp/wgd-privdrop-test")).is_err());
    assert!(privdrop::empty_root_at(Path::new("relative/empty")).is_err());

    let base = format!("/run/wgd-privdrop-test-{}", std::process::id());
    let dir = Path::new(&base).join("empty");
    assert_eq!(privdrop::empty_root_at(&dir).expect("create"), dir);

    File::create(dir.join("intruder")).expect("create file");
    let err = privdrop::empty_root_at(&dir).expect_err("non-empty root");
    assert!(err.to_string().contains("not empty"), "{err}");
    fs::remove_file(dir.join("intruder")).expect("rm");

    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    assert!(
        privdrop::empty_root_at(&dir).is_err(),
        "world-writable root"
    );
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");

    let link = Path::new(&base).join("link");
    std::os::unix::fs::symlink(&dir, &link).expect("symlink");
    assert!(privdrop::empty_root_at(&link).is_err(), "symlinked root");

    fs::remove_dir_all(&base).expect("cleanup");
}
