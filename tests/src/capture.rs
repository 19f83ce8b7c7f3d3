//! Packet capture on a test's own veth with `tcpdump`, and the reading of
//! its pcap file: what crossed the underlay, to check that nothing left it
//! in cleartext.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::proc::Child;
use crate::wait::wait_until;

/// A running `tcpdump -w` on one interface of a namespace; stopped (and
/// its file complete) by [`Capture::finish`] or on drop.
pub struct Capture {
    child: Child,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Capture {
    /// Starts capturing IPv4 and IPv6 on `dev` in `ns` and waits until
    /// tcpdump listens.
    pub fn start(ns: &Netns, dev: &str) -> Result<Capture> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("capture dir", e))?;
        let path = dir.path().join("underlay.pcap");
        let p = path.to_string_lossy().into_owned();
        // -U: each packet written as it comes; -Z root: keep writing to a
        // root-owned temp dir; -s 256: headers and the start of payloads.
        let child = ns.spawn(
            "tcpdump",
            [
                "-i", dev, "-n", "-U", "-Z", "root", "-s", "256", "-w", &p, "ip", "or", "ip6",
            ],
        )?;
        wait_until(Duration::from_secs(10), "tcpdump listening", || {
            child.stderr().contains("listening on") || !child.is_running()
        })?;
        if !child.is_running() {
            return Err(Error::other(format!("tcpdump failed:\n{}", child.report())));
        }
        Ok(Capture {
            child,
            _dir: dir,
            path,
        })
    }

    /// Stops tcpdump and reads what it captured.
    pub fn finish(self) -> Result<Vec<Packet>> {
        self.child.stop(Duration::from_secs(3));
        read_pcap(&self.path)
    }
}

/// One captured IP packet, as far as these checks need it.
#[derive(Debug, Clone)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol (IPv6: the first next-header).
    pub proto: u8,
    /// The UDP payload's first bytes, for UDP.
    pub udp_payload: Option<Vec<u8>>,
}

impl Packet {
    /// A UDP payload that is a WireGuard message: type 1 to 4 and three
    /// zero bytes.
    pub fn is_wireguard(&self) -> bool {
        self.udp_payload
            .as_deref()
            .is_some_and(|p| p.len() >= 4 && (1..=4).contains(&p[0]) && p[1..4] == [0, 0, 0])
    }
}

fn u16be(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads a classic pcap file of Ethernet frames (tcpdump's default on a
/// veth): every IPv4 and IPv6 packet.
pub fn read_pcap(path: &Path) -> Result<Vec<Packet>> {
    let data = std::fs::read(path).map_err(|e| Error::io("read pcap", e))?;
    let bad = |what: &str| Error::other(format!("{}: {what}", path.display()));
    if data.len() < 24 {
        return Err(bad("no pcap header"));
    }
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => return Err(bad("not a pcap file")),
    };
    let u32at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    if u32at(20) != Some(1) {
        return Err(bad("link type is not Ethernet"));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32at(at + 8).ok_or_else(|| bad("short record"))? as usize;
        let frame = data
            .get(at + 16..at + 16 + caplen)
            .ok_or_else(|| bad("truncated record"))?;
        at += 16 + caplen;
        if let Some(p) = parse_frame(frame) {
            out.push(p);
        }
    }
    Ok(out)
}

fn parse_frame(f: &[u8]) -> Option<Packet> {
    let ethertype = u16be(f, 12)?;
    let ip = f.get(14..)?;
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (s.into(), d.into(), *ip.get(9)?, ip.get(ihl..)?)
        }
        0x86dd => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (s.into(), d.into(), *ip.get(6)?, ip.get(40..)?)
        }
        _ => return None,
    };
    let udp_payload = (proto == 17).then(|| l4.get(8..).unwrap_or(&[]).to_vec());
    Some(Packet {
        src,
        dst,
        proto,
        udp_payload,
    })
}
