//! Shared set-up of the wgd end-to-end tests: two namespaces joined by a
//! veth with IPv4 and IPv6 outer addresses, a WireGuard peer in each (wgd
//! or wireguard-go), inner addresses on both families.
#![allow(dead_code)]

pub mod fault;
pub mod scan;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use wgd_tests::wg::{self, Dump};
use wgd_tests::{
    keypair, link, preshared_key, InterfaceConfig, Netns, PeerConfig, Result, Veth, WgGo, Wgd,
};

pub const OUTER_A4: &str = "10.210.0.1";
pub const OUTER_B4: &str = "10.210.0.2";
pub const OUTER_A6: &str = "fd00:210::1";
pub const OUTER_B6: &str = "fd00:210::2";
pub const INNER_A4: &str = "10.211.0.1";
pub const INNER_B4: &str = "10.211.0.2";
pub const INNER_A6: &str = "fd00:211::1";
pub const INNER_B6: &str = "fd00:211::2";
pub const PORT_A: u16 = 51820;
pub const PORT_B: u16 = 51821;

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

pub fn sa(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Wgd,
    Go,
}

/// A WireGuard peer under test, whichever implementation.
pub enum Side<'ns> {
    Wgd(Wgd<'ns>),
    Go(WgGo<'ns>),
}

impl<'ns> Side<'ns> {
    pub fn ns(&self) -> &'ns Netns {
        match self {
            Side::Wgd(w) => w.ns(),
            Side::Go(g) => g.ns(),
        }
    }
    pub fn ifname(&self) -> &str {
        match self {
            Side::Wgd(w) => w.ifname(),
            Side::Go(g) => g.ifname(),
        }
    }
    pub fn set(&self, args: &[&str]) -> Result<()> {
        match self {
            Side::Wgd(w) => w.set(args),
            Side::Go(g) => g.set(args),
        }
    }
    pub fn dump(&self) -> Result<Dump> {
        match self {
            Side::Wgd(w) => w.dump(),
            Side::Go(g) => g.dump(),
        }
    }
    pub fn wgd(&self) -> &Wgd<'ns> {
        match self {
            Side::Wgd(w) => w,
            Side::Go(_) => panic!("this side is wireguard-go"),
        }
    }
    pub fn report(&self) -> String {
        match self {
            Side::Wgd(w) => w.child().report(),
            Side::Go(g) => g.child().report(),
        }
    }
    pub fn finish(&self, v4: &str, v6: &str) {
        for a in [v4, v6] {
            wgd_tests::add_addr(self.ns(), self.ifname(), a).expect("inner address");
        }
        self.ns()
            .ip(["link", "set", self.ifname(), "up"])
            .expect("interface up");
    }
}

/// How a pair is configured.
#[derive(Debug, Clone)]
pub struct Setup {
    pub a: Kind,
    pub b: Kind,
    /// A knows B's endpoint (A can initiate).
    pub a_knows_b: bool,
    /// B knows A's endpoint (B can initiate).
    pub b_knows_a: bool,
    /// Outer family of the configured endpoints.
    pub outer_v6: bool,
    pub psk_a: Option<String>,
    pub psk_b: Option<String>,
    /// A is configured with this public key for B instead of B's own.
    pub wrong_key_for_b: bool,
    /// Environment for wgd processes.
    pub wgd_env: Vec<(&'static str, &'static str)>,
    pub a_allowed_for_b: Vec<String>,
}

impl Setup {
    pub fn new(a: Kind, b: Kind) -> Setup {
        Setup {
            a,
            b,
            a_knows_b: true,
            b_knows_a: false,
            outer_v6: false,
            psk_a: None,
            psk_b: None,
            wrong_key_for_b: false,
            wgd_env: Vec::new(),
            a_allowed_for_b: vec![format!("{INNER_B4}/32"), format!("{INNER_B6}/128")],
        }
    }
    pub fn with_psk(mut self) -> Setup {
        let k = preshared_key();
        self.psk_a = Some(k.clone());
        self.psk_b = Some(k);
        self
    }
}

pub struct Net {
    pub ns_a: Netns,
    pub ns_b: Netns,
    pub veth: Veth,
}

pub fn net() -> Net {
    let ns_a = Netns::new().expect("namespace A");
    let ns_b = Netns::new().expect("namespace B");
    let veth = link(
        &ns_a,
        &ns_b,
        &format!("{OUTER_A4}/24"),
        &format!("{OUTER_B4}/24"),
        &format!("{OUTER_A6}/64"),
        &format!("{OUTER_B6}/64"),
    )
    .expect("veth");
    Net { ns_a, ns_b, veth }
}

fn start<'ns>(
    kind: Kind,
    ns: &'ns Netns,
    conf: InterfaceConfig,
    env: &[(&str, &str)],
) -> Side<'ns> {
    match kind {
        Kind::Wgd => Side::Wgd(Wgd::start(ns, conf, env).expect("start wgd")),
        Kind::Go => {
            let g = WgGo::start(ns).expect("start wireguard-go");
            g.setconf(&conf).expect("configure wireguard-go");
            Side::Go(g)
        }
    }
}

/// Starts both sides per `setup`, with inner addresses and links up.
pub fn pair<'n>(net: &'n Net, setup: &Setup) -> (Side<'n>, Side<'n>) {
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let (ea, eb) = if setup.outer_v6 {
        (sa(OUTER_A6, PORT_A), sa(OUTER_B6, PORT_B))
    } else {
        (sa(OUTER_A4, PORT_A), sa(OUTER_B4, PORT_B))
    };
    let key_for_b = if setup.wrong_key_for_b {
        keypair().1
    } else {
        pb.clone()
    };
    let allowed: Vec<&str> = setup.a_allowed_for_b.iter().map(String::as_str).collect();
    let mut peer_b = PeerConfig::new(&key_for_b, &allowed);
    if setup.a_knows_b {
        peer_b = peer_b.endpoint(eb);
    }
    peer_b.preshared_key = setup.psk_a.clone();
    let mut peer_a = PeerConfig::new(
        &pa,
        &[&format!("{INNER_A4}/32"), &format!("{INNER_A6}/128")],
    );
    if setup.b_knows_a {
        peer_a = peer_a.endpoint(ea);
    }
    peer_a.preshared_key = setup.psk_b.clone();
    let conf_a = InterfaceConfig {
        private_key: Some(ka),
        listen_port: Some(PORT_A),
        fwmark: None,
        peers: vec![peer_b],
    };
    let conf_b = InterfaceConfig {
        private_key: Some(kb),
        listen_port: Some(PORT_B),
        fwmark: None,
        peers: vec![peer_a],
    };
    let a = start(setup.a, &net.ns_a, conf_a, &setup.wgd_env);
    let b = start(setup.b, &net.ns_b, conf_b, &setup.wgd_env);
    a.finish(&format!("{INNER_A4}/24"), &format!("{INNER_A6}/64"));
    b.finish(&format!("{INNER_B4}/24"), &format!("{INNER_B6}/64"));
    (a, b)
}

/// Public key of a side's peer entry as the other side sees it.
pub fn only_peer(d: &Dump) -> &wg::DumpPeer {
    d.peers.first().expect("one peer")
}

pub const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
