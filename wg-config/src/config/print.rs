//! Writing a configuration file: `wgctl showconf`.
//!
//! Secrets are write-only (DESIGN.md): wgd never returns its private key
//! or preshared keys, so a file written from what it reports can only
//! name a key's file or say, in a comment, that a key exists.

use std::fmt::Write as _;

use crate::display::{fmt_allowed_ip, fmt_endpoint};
use crate::uapi::{Device, Psk};

/// `wgctl showconf IF`: the interface as a wg(8) configuration file, from
/// what its daemon reported. A key is never lost silently: the private
/// key is named by its file when wgd read it from one, and otherwise a
/// comment says it exists and cannot be shown; preshared keys likewise.
/// What this writes, [`super::parse_str`] reads back.
pub fn showconf(dev: &Device) -> String {
    let mut s = String::from("[Interface]\n");
    if dev.listen_port != 0 {
        let _ = writeln!(s, "ListenPort = {}", dev.listen_port);
    }
    if dev.fwmark != 0 {
        let _ = writeln!(s, "FwMark = 0x{:x}", dev.fwmark);
    }
    match (&dev.private_key_file, &dev.public_key) {
        (Some(file), _) => {
            let _ = writeln!(s, "PrivateKeyFile = {}", file.display());
        }
        (None, Some(public)) => {
            let _ = writeln!(
                s,
                "# PrivateKey: the interface has a private key (public key {public}),"
            );
            let _ = writeln!(
                s,
                "# but it is write-only and cannot be shown. Add PrivateKey or PrivateKeyFile here."
            );
        }
        (None, None) => {}
    }
    for p in &dev.peers {
        s.push_str("\n[Peer]\n");
        let _ = writeln!(s, "PublicKey = {}", p.public_key);
        match p.preshared_key {
            Psk::None => {}
            Psk::Set => s.push_str(
                "# PresharedKey: this peer has one, but it is write-only and cannot be shown.\n",
            ),
            Psk::Unknown => s.push_str(
                "# PresharedKey: preshared keys are write-only; if this peer has one, it is not shown.\n",
            ),
        }
        if !p.allowed_ips.is_empty() {
            let ips: Vec<String> = p.allowed_ips.iter().map(fmt_allowed_ip).collect();
            let _ = writeln!(s, "AllowedIPs = {}", ips.join(", "));
        }
        if let Some(ep) = &p.endpoint {
            let _ = writeln!(s, "Endpoint = {}", fmt_endpoint(ep));
        }
        if p.persistent_keepalive != 0 {
            let _ = writeln!(s, "PersistentKeepalive = {}", p.persistent_keepalive);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::aip;
    use crate::config::{parse_str, Config};
    use crate::uapi::{Peer, WgdStats};
    use proto::keys::PublicKey;
    use std::path::Path;

    fn b64(b: u8) -> String {
        PublicKey([b; 32]).to_base64()
    }

    fn cfg(text: &str) -> Config {
        parse_str(text, Path::new("/etc/wgd/test.conf")).unwrap()
    }

    fn wgd_device() -> Device {
        let mut a = Peer::new(PublicKey([2; 32]));
        a.allowed_ips = vec![aip("10.0.0.2", 32), aip("fd00::", 64)];
        a.endpoint = Some("192.0.2.2:51820".parse().unwrap());
        a.persistent_keepalive = 25;
        let b = Peer::new(PublicKey([3; 32]));
        Device {
            public_key: Some(PublicKey([1; 32])),
            private_key_file: None,
            listen_port: 51820,
            fwmark: 0,
            stats: Some(WgdStats::default()),
            peers: vec![a, b],
        }
    }

    #[test]
    fn showconf_never_drops_a_key_silently() {
        let dev = wgd_device();
        let text = showconf(&dev);
        let expected = format!(
            "[Interface]\n\
             ListenPort = 51820\n\
             # PrivateKey: the interface has a private key (public key {k1}),\n\
             # but it is write-only and cannot be shown. Add PrivateKey or PrivateKeyFile here.\n\
             \n\
             [Peer]\n\
             PublicKey = {k2}\n\
             # PresharedKey: preshared keys are write-only; if this peer has one, it is not shown.\n\
             AllowedIPs = 10.0.0.2/32, fd00::/64\n\
             Endpoint = 192.0.2.2:51820\n\
             PersistentKeepalive = 25\n\
             \n\
             [Peer]\n\
             PublicKey = {k3}\n\
             # PresharedKey: preshared keys are write-only; if this peer has one, it is not shown.\n",
            k1 = b64(1),
            k2 = b64(2),
            k3 = b64(3)
        );
        assert_eq!(text, expected);
        // What showconf writes, wgd reads (the comments are comments).
        let back = cfg(&text);
        assert!(back.interface.private_key.is_none());
        assert_eq!(back.peers.len(), 2);

        // From a key file: the file is named, and survives a round trip.
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("wg0.key");
        std::fs::write(&key_file, format!("{}\n", b64(9))).unwrap();
        let mut dev = wgd_device();
        dev.private_key_file = Some(key_file.clone());
        dev.fwmark = 0x51;
        let text = showconf(&dev);
        assert!(text.starts_with(&format!(
            "[Interface]\nListenPort = 51820\nFwMark = 0x51\nPrivateKeyFile = {}\n\n[Peer]\n",
            key_file.display()
        )));
        let back = cfg(&text);
        let k = back.interface.private_key.unwrap();
        assert_eq!(k.file.as_deref(), Some(key_file.as_path()));
        assert_eq!(back.interface.fwmark, Some(0x51));

        // No key at all: nothing to say.
        let mut dev = wgd_device();
        dev.public_key = None;
        dev.peers.clear();
        assert_eq!(showconf(&dev), "[Interface]\nListenPort = 51820\n");
        // A known preshared key.
        let mut dev = wgd_device();
        dev.peers[1].preshared_key = Psk::Set;
        dev.peers[0].preshared_key = Psk::None;
        let text = showconf(&dev);
        assert_eq!(text.matches("# PresharedKey").count(), 1);
        assert!(text.contains("this peer has one"));
    }
}
