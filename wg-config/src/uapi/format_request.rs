//! The client's side of a request: [`format_set`] writes the `set=1`
//! request for a list of [`SetOp`]s, exactly as [`super::read_request`]
//! reads it back.

use proto::keys::SecretKey;
use zeroize::Zeroizing;

use super::{put, AllowedIpChange, SetOp};

/// The text of a `set=1` request for `ops`, through its empty line.
/// Zeroized when dropped: it may carry keys.
pub fn format_set(ops: &[SetOp]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(set_capacity(ops)));
    s.push_str("set=1\n");
    for op in ops {
        match op {
            SetOp::PrivateKey(k) => put_secret(&mut s, "private_key", k.as_ref()),
            SetOp::ListenPort(p) => put(&mut s, format_args!("listen_port={p}")),
            SetOp::Fwmark(m) => put(&mut s, format_args!("fwmark={m}")),
            SetOp::ReplacePeers => s.push_str("replace_peers=true\n"),
            SetOp::Peer(p) => {
                put(&mut s, format_args!("public_key={}", p.public_key.to_hex()));
                if p.remove {
                    s.push_str("remove=true\n");
                }
                if p.update_only {
                    s.push_str("update_only=true\n");
                }
                if let Some(psk) = &p.preshared_key {
                    put_secret(&mut s, "preshared_key", psk.as_ref());
                }
                if let Some(ep) = p.endpoint {
                    // `SocketAddr`'s text (`[v6%zone]:port` with a numeric
                    // zone) is what the server parses.
                    put(&mut s, format_args!("endpoint={ep}"));
                }
                if let Some(k) = p.persistent_keepalive {
                    put(&mut s, format_args!("persistent_keepalive_interval={k}"));
                }
                if p.replace_allowed_ips {
                    s.push_str("replace_allowed_ips=true\n");
                }
                for change in &p.allowed_ips {
                    let (sign, ip) = match change {
                        AllowedIpChange::Add(ip) => ("", ip),
                        AllowedIpChange::Remove(ip) => ("-", ip),
                    };
                    put(
                        &mut s,
                        format_args!("allowed_ip={sign}{}/{}", ip.addr, ip.cidr),
                    );
                }
            }
        }
    }
    s.push('\n');
    s
}

/// An upper bound on the length of [`format_set`]'s text, so that its
/// buffer is allocated once and never moved (a move would leave a copy of
/// the keys in freed memory). The device lines and `set=1` take under
/// 160 bytes, a peer's fixed lines under 400 (its longest, an IPv6
/// endpoint with a zone, is 70), an allowed IP under 64.
fn set_capacity(ops: &[SetOp]) -> usize {
    160 + ops
        .iter()
        .map(|op| match op {
            SetOp::Peer(p) => 400 + 64 * p.allowed_ips.len(),
            _ => 0,
        })
        .sum::<usize>()
}

/// `key=HEX`, or all zeros for "no key"; written digit by digit into the
/// zeroizing request so that no other copy of the key is made.
fn put_secret(s: &mut String, key: &str, secret: Option<&SecretKey>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    s.push_str(key);
    s.push('=');
    match secret {
        Some(k) => {
            for &b in k.expose() {
                s.push(HEX[usize::from(b >> 4)] as char);
                s.push(HEX[usize::from(b & 15)] as char);
            }
        }
        None => (0..64).for_each(|_| s.push('0')),
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::aip;
    use crate::uapi::{read_request, PeerOp, Request};
    use proto::keys::PublicKey;

    fn pk(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn parse_with_wgd(text: &str) -> Vec<SetOp> {
        let mut r = std::io::Cursor::new(text.as_bytes().to_vec());
        match read_request(&mut r, &|_| None).unwrap() {
            Some(Request::Set(ops)) => ops,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn set_text_is_what_wgd_parses() {
        let mut peer = PeerOp::new(pk(1));
        peer.preshared_key = Some(Some(SecretKey::from_bytes([7; 32])));
        peer.endpoint = Some("[2001:db8::1]:51820".parse().unwrap());
        peer.persistent_keepalive = Some(25);
        peer.replace_allowed_ips = true;
        peer.allowed_ips = vec![
            AllowedIpChange::Add(aip("10.0.0.0", 8)),
            AllowedIpChange::Remove(aip("fd00::", 64)),
        ];
        let mut gone = PeerOp::new(pk(2));
        gone.remove = true;
        let mut upd = PeerOp::new(pk(3));
        upd.update_only = true;
        upd.preshared_key = Some(None);
        let ops = vec![
            SetOp::PrivateKey(Some(SecretKey::from_bytes([9; 32]))),
            SetOp::ListenPort(51820),
            SetOp::Fwmark(0x1234),
            SetOp::ReplacePeers,
            SetOp::Peer(peer),
            SetOp::Peer(gone),
            SetOp::Peer(upd),
        ];
        let text = format_set(&ops);
        assert!(text.starts_with("set=1\nprivate_key=0909"), "{}", &*text);
        assert_eq!(text.capacity(), set_capacity(&ops), "never reallocated");
        assert!(text.ends_with("\n\n"));
        assert!(text.contains("preshared_key=0000000000"));
        assert!(text.contains("allowed_ip=-fd00::/64\n"));
        assert_eq!(parse_with_wgd(&text), ops);
        // The worst case of every line still fits the first allocation.
        let mut worst = PeerOp::new(pk(4));
        worst.remove = true;
        worst.update_only = true;
        worst.preshared_key = Some(Some(SecretKey::from_bytes([0xff; 32])));
        worst.endpoint = Some(
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
                .parse()
                .unwrap(),
        );
        worst.persistent_keepalive = Some(65535);
        worst.replace_allowed_ips = true;
        worst.allowed_ips =
            vec![AllowedIpChange::Remove(aip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 128)); 3];
        let ops = vec![
            SetOp::PrivateKey(Some(SecretKey::from_bytes([0xff; 32]))),
            SetOp::ListenPort(65535),
            SetOp::Fwmark(u32::MAX),
            SetOp::ReplacePeers,
            SetOp::Peer(worst),
        ];
        let text = format_set(&ops);
        assert_eq!(text.capacity(), set_capacity(&ops), "never reallocated");
        assert_eq!(parse_with_wgd(&text), ops);
        // A private key removal is the all-zero key.
        let text = format_set(&[SetOp::PrivateKey(None)]);
        assert_eq!(*text, format!("set=1\nprivate_key={}\n\n", "0".repeat(64)));
        assert_eq!(parse_with_wgd(&text), vec![SetOp::PrivateKey(None)]);
    }
}
