//! Whose is a packet: each publisher's ICE username fragment, the remote addresses it has
//! used, and where its packets go. Plain data, no I/O; the UDP reader and the TCP accept
//! loop consult it under one lock.

use super::stun;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::mpsc;

pub(crate) type PeerId = u64;

/// A datagram for one publisher: its bytes and where it came from.
#[derive(Debug)]
pub(crate) struct Datagram {
    pub bytes: Vec<u8>,
    pub from: SocketAddr,
}

/// A TCP connection for a publisher's listener view: the stream, and the remote address.
pub(crate) type Accepted = (Arc<dyn webrtc::runtime::AsyncTcpStream>, SocketAddr);

/// Remote addresses kept per publisher; the oldest is forgotten past this (a publisher
/// that keeps moving, or one that names itself from many addresses).
const ADDRESSES_PER_PEER: usize = 32;

/// Which listener a TCP connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpVia {
    /// `webrtc.tcp_port`.
    IcePort,
    /// The HTTP(S) listener (`webrtc.ice_on_http`).
    Http,
}

impl TcpVia {
    /// As kept in an atomic: 0 is none.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::IcePort => 1,
            Self::Http => 2,
        }
    }

    fn from_code(code: u8) -> Option<TcpVia> {
        match code {
            1 => Some(Self::IcePort),
            2 => Some(Self::Http),
            _ => None,
        }
    }
}

/// What a TCP connection for a peer needs: the listener view's address and queue, and
/// the cell its media reads mark with how it came.
pub(crate) type TcpTarget = (SocketAddr, mpsc::Sender<Accepted>, Arc<AtomicU8>);

#[derive(Debug, Default)]
struct PeerEntry {
    ufrag: Option<String>,
    /// Each local address the peer's ICE agent bound (its host candidate's key), with the
    /// queue of the view that reads for it.
    udp_views: Vec<(SocketAddr, mpsc::Sender<Datagram>)>,
    tcp_views: Vec<(SocketAddr, mpsc::Sender<Accepted>)>,
    addresses: Vec<SocketAddr>,
    /// Which of its TCP connections last carried media (see [`TcpVia::code`]).
    tcp_media: Arc<AtomicU8>,
    /// Where its latest datagram other than a STUN request came from.
    media_from: Option<SocketAddr>,
}

/// Where a datagram goes.
#[derive(Debug)]
pub(crate) enum Route {
    Peer(mpsc::Sender<Datagram>),
    /// Nobody's: not a STUN request naming a known publisher, from an unknown address.
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    next_id: PeerId,
    ufrags: HashMap<String, PeerId>,
    addresses: HashMap<SocketAddr, PeerId>,
    peers: HashMap<PeerId, PeerEntry>,
}

impl Table {
    pub fn add_peer(&mut self) -> PeerId {
        self.next_id += 1;
        self.peers.insert(self.next_id, PeerEntry::default());
        self.next_id
    }

    /// Forgets the peer, its username and every address it used.
    pub fn remove_peer(&mut self, id: PeerId) {
        if let Some(entry) = self.peers.remove(&id) {
            if let Some(ufrag) = entry.ufrag
                && self.ufrags.get(&ufrag) == Some(&id)
            {
                self.ufrags.remove(&ufrag);
            }
            for address in entry.addresses {
                if self.addresses.get(&address) == Some(&id) {
                    self.addresses.remove(&address);
                }
            }
        }
    }

    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    #[cfg(test)]
    pub fn addresses(&self) -> usize {
        self.addresses.len()
    }

    /// `ufrag` names this peer from now on (a username taken is refused).
    pub fn set_ufrag(&mut self, id: PeerId, ufrag: &str) -> bool {
        if self.ufrags.get(ufrag).is_some_and(|owner| *owner != id) {
            return false;
        }
        let Some(entry) = self.peers.get_mut(&id) else {
            return false;
        };
        if let Some(old) = entry.ufrag.replace(ufrag.to_owned()) {
            self.ufrags.remove(&old);
        }
        self.ufrags.insert(ufrag.to_owned(), id);
        true
    }

    pub fn add_udp_view(&mut self, id: PeerId, key: SocketAddr, inbox: mpsc::Sender<Datagram>) {
        if let Some(entry) = self.peers.get_mut(&id) {
            entry.udp_views.retain(|(k, _)| *k != key);
            entry.udp_views.push((key, inbox));
        }
    }

    pub fn remove_udp_view(&mut self, id: PeerId, key: SocketAddr) {
        if let Some(entry) = self.peers.get_mut(&id) {
            entry.udp_views.retain(|(k, _)| *k != key);
        }
    }

    pub fn add_tcp_view(&mut self, id: PeerId, key: SocketAddr, inbox: mpsc::Sender<Accepted>) {
        if let Some(entry) = self.peers.get_mut(&id) {
            entry.tcp_views.retain(|(k, _)| *k != key);
            entry.tcp_views.push((key, inbox));
        }
    }

    pub fn remove_tcp_view(&mut self, id: PeerId, key: SocketAddr) {
        if let Some(entry) = self.peers.get_mut(&id) {
            entry.tcp_views.retain(|(k, _)| *k != key);
        }
    }

    /// The peer's TCP listener view (its address and queue) for a connection that `ufrag`
    /// names, arriving on `local` (the view bound to that address, else its first).
    pub fn tcp_target(&mut self, ufrag: &str, local: IpAddr) -> Option<TcpTarget> {
        let id = *self.ufrags.get(ufrag)?;
        let entry = self.peers.get_mut(&id)?;
        let view = entry
            .tcp_views
            .iter()
            .find(|(key, _)| key.ip() == local)
            .or_else(|| entry.tcp_views.first())?
            .clone();
        Some((view.0, view.1, entry.tcp_media.clone()))
    }

    /// How the TCP connection that last carried the peer's media came.
    pub fn tcp_media_via(&self, id: PeerId) -> Option<TcpVia> {
        TcpVia::from_code(self.peers.get(&id)?.tcp_media.load(Ordering::Relaxed))
    }

    /// Where the peer's latest datagram other than a STUN request came from.
    pub fn media_from(&self, id: PeerId) -> Option<SocketAddr> {
        self.peers.get(&id)?.media_from
    }

    /// Where a datagram from `from` (to the local address `to`, when known) goes. A STUN
    /// request that names a publisher's username moves its address to that publisher.
    pub fn route(&mut self, from: SocketAddr, to: Option<IpAddr>, packet: &[u8]) -> Route {
        let ufrag = stun::request_ufrag(packet);
        let is_request = ufrag.is_some();
        let named = ufrag.and_then(|ufrag| self.ufrags.get(&ufrag).copied());
        let id = match named {
            Some(id) => {
                if self.addresses.get(&from) != Some(&id) {
                    self.learn(id, from);
                }
                id
            }
            None => match self.addresses.get(&from) {
                Some(id) => *id,
                None => return Route::Unknown,
            },
        };
        let Some(entry) = self.peers.get_mut(&id) else {
            return Route::Unknown;
        };
        if !is_request {
            entry.media_from = Some(from);
        }
        let view = to
            .and_then(|to| entry.udp_views.iter().find(|(key, _)| key.ip() == to))
            .or_else(|| entry.udp_views.first());
        match view {
            Some((_, inbox)) => Route::Peer(inbox.clone()),
            None => Route::Unknown,
        }
    }

    /// The peer sends to `to`: its answers come back from there. An address another peer
    /// holds stays with it.
    pub fn sent(&mut self, id: PeerId, to: SocketAddr) {
        if !self.addresses.contains_key(&to) {
            self.learn(id, to);
        }
    }

    fn learn(&mut self, id: PeerId, address: SocketAddr) {
        if !self.peers.contains_key(&id) {
            return;
        }
        if let Some(previous) = self.addresses.insert(address, id)
            && previous != id
            && let Some(other) = self.peers.get_mut(&previous)
        {
            other.addresses.retain(|a| *a != address);
        }
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        if !entry.addresses.contains(&address) {
            entry.addresses.push(address);
        }
        if entry.addresses.len() > ADDRESSES_PER_PEER {
            let oldest = entry.addresses.remove(0);
            if self.addresses.get(&oldest) == Some(&id) {
                self.addresses.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn peer_with_view(table: &mut Table, ufrag: &str) -> (PeerId, mpsc::Receiver<Datagram>) {
        let id = table.add_peer();
        assert!(table.set_ufrag(id, ufrag));
        let (tx, rx) = mpsc::channel(4);
        table.add_udp_view(id, addr(40000 + id as u16), tx);
        (id, rx)
    }

    /// The route leads to `inbox`.
    fn goes_to(route: Route, inbox: &mut mpsc::Receiver<Datagram>) -> bool {
        match route {
            Route::Peer(tx) => {
                let probe = Datagram {
                    bytes: vec![],
                    from: addr(1),
                };
                tx.try_send(probe).is_ok() && inbox.try_recv().is_ok()
            }
            Route::Unknown => false,
        }
    }

    #[test]
    fn a_stun_request_names_its_publisher_and_then_the_address_does() {
        let mut table = Table::default();
        let (_a, mut inbox_a) = peer_with_view(&mut table, "aaaa");
        let (_b, mut inbox_b) = peer_with_view(&mut table, "bbbb");
        assert!(matches!(
            table.route(addr(5000), None, b"\x80\x60media"),
            Route::Unknown
        ));
        let request = stun::tests::binding_request("bbbb:remote");
        assert!(goes_to(
            table.route(addr(5000), None, &request),
            &mut inbox_b
        ));
        assert!(goes_to(
            table.route(addr(5000), None, b"\x80\x60media"),
            &mut inbox_b
        ));
        // The same address, now naming another publisher (a client that publishes again).
        let request = stun::tests::binding_request("aaaa:remote");
        assert!(goes_to(
            table.route(addr(5000), None, &request),
            &mut inbox_a
        ));
        assert!(goes_to(
            table.route(addr(5000), None, b"dtls"),
            &mut inbox_a
        ));
    }

    #[test]
    fn a_publisher_that_moves_keeps_its_session() {
        let mut table = Table::default();
        let (_a, mut inbox) = peer_with_view(&mut table, "aaaa");
        let request = stun::tests::binding_request("aaaa:r");
        assert!(goes_to(table.route(addr(5000), None, &request), &mut inbox));
        // A NAT rebinding: the new address's first packet is the STUN check again.
        assert!(goes_to(table.route(addr(6000), None, &request), &mut inbox));
        assert!(goes_to(table.route(addr(6000), None, b"srtp"), &mut inbox));
    }

    #[test]
    fn answers_to_the_peers_own_sends_come_back_to_it() {
        let mut table = Table::default();
        let (a, mut inbox) = peer_with_view(&mut table, "aaaa");
        let (b, _) = peer_with_view(&mut table, "bbbb");
        table.sent(a, addr(7000));
        // Another peer sending there does not take it.
        table.sent(b, addr(7000));
        assert!(goes_to(table.route(addr(7000), None, b"x"), &mut inbox));
    }

    #[test]
    fn a_removed_peer_leaves_nothing_behind() {
        let mut table = Table::default();
        for i in 0..1000u16 {
            let (id, _) = peer_with_view(&mut table, &format!("user{i}"));
            let request = stun::tests::binding_request(&format!("user{i}:r"));
            table.route(addr(1000 + i), None, &request);
            table.sent(id, addr(30000 + i));
            table.remove_peer(id);
        }
        assert_eq!(table.peers(), 0);
        assert_eq!(table.addresses(), 0);
        assert!(table.ufrags.is_empty());
    }

    #[test]
    fn addresses_per_peer_are_bounded() {
        let mut table = Table::default();
        let (_a, _inbox) = peer_with_view(&mut table, "aaaa");
        let request = stun::tests::binding_request("aaaa:r");
        for port in 0..1000 {
            table.route(addr(2000 + port), None, &request);
        }
        assert_eq!(table.addresses(), ADDRESSES_PER_PEER);
    }

    #[test]
    fn a_username_is_one_peers() {
        let mut table = Table::default();
        let a = table.add_peer();
        let b = table.add_peer();
        assert!(table.set_ufrag(a, "same"));
        assert!(!table.set_ufrag(b, "same"));
    }
}
