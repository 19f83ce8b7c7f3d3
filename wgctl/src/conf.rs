//! Applying a configuration file: `setconf`, `addconf` and `syncconf`.
//! The file is read, and `showconf`'s file written, by the parser and
//! writer wgd itself uses (`wg_config::config`), so wgd's
//! `PrivateKeyFile`, `PresharedKeyFile` and `AutoAddress` work here as
//! they do at start-up.
//!
//! The three ways of applying a file, as in wg(8):
//! - [`setconf_ops`] with `replace`: `replace_peers=true`, then the
//!   interface and every peer (each with `replace_allowed_ips=true`);
//! - [`setconf_ops`] without `replace` (`addconf`): the same without
//!   `replace_peers`;
//! - [`syncconf_ops`]: compares the file with the current state and asks
//!   only for what differs, removing the peers the file does not name and
//!   never using `replace_peers`, so peers that did not change keep their
//!   sessions. Secrets cannot be compared (they cannot be read back): a
//!   preshared key in the file is always written, and a peer without one
//!   in the file gets its preshared key cleared unless the daemon said it
//!   has none. The private key is compared through its public key.

/// `setconf` (`replace`) or `addconf`: the whole file as one request
/// (wgd applies its own configuration file with the same function), and
/// `syncconf`'s request (wgd reloads its file with the same function).
pub use wg_config::config::{setconf_ops, syncconf_ops};

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ipc::AllowedIp;
    use proto::keys::{PublicKey, SecretKey};
    use std::net::IpAddr;
    use std::path::Path;
    use wg_config::cidr::aip;
    use wg_config::config::Config;
    use wg_config::keys::public_key;
    use wg_config::uapi::{AllowedIpChange, Device, Peer, PeerOp, Psk, SetOp, WgdStats};

    fn b64(b: u8) -> String {
        PublicKey([b; 32]).to_base64()
    }

    fn cfg(text: &str) -> Config {
        wg_config::config::parse_str(text, Path::new("/etc/wgd/test.conf")).unwrap()
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
    fn setconf_and_addconf() {
        let text = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 1\nFwMark = off\n\n\
             [Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.0.0.1/24\n\
             Endpoint = 192.0.2.1:7\nPersistentKeepalive = 5\n",
            b64(9),
            b64(2),
            b64(8)
        );
        let ops = setconf_ops(cfg(&text), true);
        let mut peer = PeerOp::new(PublicKey([2; 32]));
        peer.preshared_key = Some(Some(SecretKey::from_bytes([8; 32])));
        peer.endpoint = Some("192.0.2.1:7".parse().unwrap());
        peer.persistent_keepalive = Some(5);
        peer.replace_allowed_ips = true;
        peer.allowed_ips = vec![AllowedIpChange::Add(aip("10.0.0.1", 24))];
        assert_eq!(
            ops,
            vec![
                SetOp::PrivateKey(Some(SecretKey::from_bytes([9; 32]))),
                SetOp::ListenPort(1),
                SetOp::Fwmark(0),
                SetOp::ReplacePeers,
                SetOp::Peer(peer),
            ]
        );
        let ops = setconf_ops(cfg(&text), false);
        assert!(!ops.contains(&SetOp::ReplacePeers));
        assert_eq!(ops.len(), 4);
        // AutoAddress adds each peer's derived /128.
        let text = format!(
            "[Interface]\nAutoAddress = true\n[Peer]\nPublicKey = {}\n",
            b64(2)
        );
        let ops = setconf_ops(cfg(&text), true);
        let SetOp::Peer(p) = &ops[1] else {
            panic!("{ops:?}")
        };
        assert_eq!(
            p.allowed_ips,
            vec![AllowedIpChange::Add(AllowedIp {
                addr: IpAddr::V6(PublicKey([2; 32]).derived_address()),
                cidr: 128
            })]
        );
    }

    #[test]
    fn syncconf_of_an_identical_file_changes_nothing_but_psks() {
        let mut dev = wgd_device();
        dev.peers[0].preshared_key = Psk::None;
        dev.peers[1].preshared_key = Psk::None;
        // Same key (by public key), same port, host bits as written.
        let private = SecretKey::from_bytes([9; 32]);
        dev.public_key = Some(public_key(&private));
        let text = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51820\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = fd00::1/64, 10.0.0.2/32\n\
             Endpoint = 192.0.2.2:51820\nPersistentKeepalive = 25\n\
             [Peer]\nPublicKey = {}\n",
            b64(9),
            b64(2),
            b64(3)
        );
        assert_eq!(syncconf_ops(cfg(&text), &dev), vec![]);
        // With wgd, whether a peer has a PSK is unknown: it is cleared.
        let dev = {
            let mut d = dev;
            d.peers[1].preshared_key = Psk::Unknown;
            d
        };
        let mut clear = PeerOp::new(PublicKey([3; 32]));
        clear.preshared_key = Some(None);
        assert_eq!(syncconf_ops(cfg(&text), &dev), vec![SetOp::Peer(clear)]);
    }

    #[test]
    fn syncconf_diff() {
        let mut dev = wgd_device();
        dev.peers[0].preshared_key = Psk::None;
        dev.peers[1].preshared_key = Psk::None;
        // Peer 2 changes: one prefix goes, one comes, a new endpoint,
        // keepalive off (not in the file), a PSK. Peer 3 goes. Peer 4 is
        // new. The key, port and fwmark change.
        let text = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51821\nFwMark = 0x10\n\
             [Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.0.0.2/32, 10.9.0.0/16\n\
             Endpoint = 192.0.2.3:51820\n\
             [Peer]\nPublicKey = {}\nAllowedIPs = fd00::/64\nPersistentKeepalive = 7\n",
            b64(9),
            b64(2),
            b64(8),
            b64(4)
        );
        let ops = syncconf_ops(cfg(&text), &dev);
        let mut remove3 = PeerOp::new(PublicKey([3; 32]));
        remove3.remove = true;
        let mut shrink2 = PeerOp::new(PublicKey([2; 32]));
        shrink2.allowed_ips = vec![AllowedIpChange::Remove(aip("fd00::", 64))];
        let mut change2 = PeerOp::new(PublicKey([2; 32]));
        change2.allowed_ips = vec![AllowedIpChange::Add(aip("10.9.0.0", 16))];
        change2.preshared_key = Some(Some(SecretKey::from_bytes([8; 32])));
        change2.endpoint = Some("192.0.2.3:51820".parse().unwrap());
        change2.persistent_keepalive = Some(0);
        let mut new4 = PeerOp::new(PublicKey([4; 32]));
        new4.replace_allowed_ips = true;
        new4.allowed_ips = vec![AllowedIpChange::Add(aip("fd00::", 64))];
        new4.persistent_keepalive = Some(7);
        assert_eq!(
            ops,
            vec![
                SetOp::PrivateKey(Some(SecretKey::from_bytes([9; 32]))),
                SetOp::ListenPort(51821),
                SetOp::Fwmark(16),
                SetOp::Peer(remove3),
                SetOp::Peer(shrink2),
                SetOp::Peer(change2),
                SetOp::Peer(new4),
            ]
        );
        // The request never replaces peers, so unchanged ones keep their
        // sessions.
        assert!(!ops.contains(&SetOp::ReplacePeers));
        // And it is a request wgd accepts as written.
        let text = wg_config::uapi::format_set(&ops);
        let mut r = std::io::Cursor::new(text.as_bytes().to_vec());
        assert_eq!(
            wg_config::uapi::read_request(&mut r, &|_| None).unwrap(),
            Some(wg_config::uapi::Request::Set(ops))
        );
    }
}
