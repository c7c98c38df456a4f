//! One UDP port and one TCP port for every publisher's ICE, DTLS and SRTP
//! (`webrtc.udp_port`, `webrtc.tcp_port`, and ICE over TCP on the HTTP listener with
//! `webrtc.ice_on_http`). One socket, many peers: the first STUN request's username says
//! whose a packet (or a TCP connection) is, then its remote address does.
//!
//! The WebRTC stack binds sockets per peer connection; each publisher's connection runs on
//! a [`PeerSockets`] runtime whose sockets are views of the shared ones, and its host
//! candidates are rewritten to the shared ports before the publisher sees them
//! ([`rewrite_candidate`], [`rewrite_sdp`]). With `webrtc.udp_port = 0` there is no mux:
//! each publisher gets an ephemeral port of its own.

mod candidates;
mod runtime;
mod stun;
mod table;
mod tcp;
mod udp;

pub use candidates::{CandidatePorts, rewrite_candidate, rewrite_sdp};
pub use table::TcpVia;

use crate::config::WebrtcConfig;
use prometheus_client::metrics::counter::Counter;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use table::{PeerId, Table};
use tokio_util::sync::CancellationToken;

/// What the mux dropped, for `/metrics` (clones count together).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Datagrams from an unknown address that named no publisher.
    pub udp_unknown: Counter,
    /// Datagrams dropped because their publisher's queue was full.
    pub udp_queue_full: Counter,
    /// Datagrams not sent because the socket's send buffer was full.
    pub udp_send_dropped: Counter,
    /// TCP connections whose first frame named no publisher (or came too late).
    pub tcp_unknown: Counter,
}

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("cannot bind UDP {address} (webrtc.udp_port): {source}")]
    Udp {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on TCP {address} (webrtc.tcp_port): {source}")]
    Tcp {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// What runs once started.
#[derive(Debug)]
pub(crate) struct Shared {
    table: Mutex<Table>,
    udp: Arc<udp::SharedUdp>,
    counters: Counters,
    ports: CandidatePorts,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared sockets, held by the gateway; started once in `main`.
#[derive(Debug)]
pub struct Mux {
    config: WebrtcConfig,
    counters: Counters,
    shared: OnceLock<Arc<Shared>>,
    stop: CancellationToken,
}

impl Mux {
    pub fn new(config: &WebrtcConfig) -> Mux {
        Mux {
            config: config.clone(),
            counters: Counters::default(),
            shared: OnceLock::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Binds `webrtc.udp_port` and `webrtc.tcp_port` on `webrtc.bind_address` and starts
    /// reading them (nothing with `udp_port = 0`). `http_port` is the HTTP listener's, for
    /// `webrtc.ice_on_http`. Needs a tokio runtime.
    pub fn start(&self, http_port: u16) -> Result<(), MuxError> {
        if self.config.udp_port == 0 || self.shared.get().is_some() {
            return Ok(());
        }
        let ip = self.bind_ip();
        let address = SocketAddr::new(ip, self.config.udp_port as u16);
        let udp =
            udp::SharedUdp::bind(address).map_err(|source| MuxError::Udp { address, source })?;
        let tcp = match self.config.tcp_port {
            0 => None,
            port => {
                let address = SocketAddr::new(ip, port as u16);
                let listen = || {
                    let listener = std::net::TcpListener::bind(address)?;
                    listener.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(listener)
                };
                Some(listen().map_err(|source| MuxError::Tcp { address, source })?)
            }
        };
        let ports = CandidatePorts {
            udp: Some(self.config.udp_port as u16),
            tcp: tcp.as_ref().map(|_| self.config.tcp_port as u16),
            http: self.config.ice_on_http.then_some(http_port),
            nat_ips: self.config.nat_1to1_ips.clone(),
        };
        tracing::info!(
            udp = %udp.local_addr().unwrap_or(address),
            tcp = ?ports.tcp,
            http = ?ports.http,
            "every publisher's ICE on one UDP port"
        );
        let shared = Arc::new(Shared {
            table: Mutex::default(),
            udp: Arc::new(udp),
            counters: self.counters.clone(),
            ports,
        });
        tokio::spawn(shared.udp.clone().read(shared.clone(), self.stop.clone()));
        if let Some(listener) = tcp {
            tokio::spawn(tcp::accept(listener, shared.clone(), self.stop.clone()));
        }
        let _ = self.shared.set(shared);
        Ok(())
    }

    /// Stops reading (at shutdown).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn bind_ip(&self) -> IpAddr {
        self.config
            .bind_address
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    /// Sockets for one more publisher; `None` without a mux (`udp_port = 0`).
    pub fn peer(&self) -> Option<PeerSockets> {
        let shared = self.shared.get()?.clone();
        let id = shared.table().add_peer();
        let link = Arc::new(PeerLink { id, shared });
        Some(PeerSockets {
            runtime: Arc::new(runtime::PeerRuntime::new(link.clone())),
            link,
        })
    }

    /// Whether the HTTP listener hands ICE over TCP here.
    pub fn takes_ice_on_http(&self) -> bool {
        self.config.ice_on_http && self.shared.get().is_some()
    }

    /// Whether `stream` (accepted by the HTTP listener) starts with framed STUN; `None`
    /// when it sent too little in time.
    pub async fn is_ice(&self, stream: &tokio::net::TcpStream) -> Option<bool> {
        tcp::starts_with_stun(stream).await
    }

    /// Hands an ICE connection from the HTTP listener to the publisher it names.
    pub async fn take_from_http(&self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        if let Some(shared) = self.shared.get() {
            tcp::hand_over(shared.clone(), stream, remote, TcpVia::Http).await;
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Publishers known to the mux now (each ends with its peer connection).
    pub fn peers(&self) -> usize {
        self.shared.get().map_or(0, |shared| shared.table().peers())
    }

    /// The shared UDP socket's address, once started.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.shared.get()?.udp.local_addr().ok()
    }
}

/// One publisher's place in the mux; forgotten (its username, its addresses) when the
/// last of its holders (its runtime, its views, its session) goes.
#[derive(Debug)]
pub(crate) struct PeerLink {
    id: PeerId,
    shared: Arc<Shared>,
}

impl PeerLink {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.shared.table()
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.table().remove_peer(self.id);
    }
}

/// A publisher's sockets: the runtime its peer connection is built with.
#[derive(Debug)]
pub struct PeerSockets {
    link: Arc<PeerLink>,
    runtime: Arc<runtime::PeerRuntime>,
}

impl PeerSockets {
    pub fn runtime(&self) -> Arc<dyn webrtc::runtime::Runtime> {
        self.runtime.clone()
    }

    /// The publisher's STUN requests name `ufrag`; false when another publisher has it.
    pub fn register(&self, ufrag: &str) -> bool {
        self.link.table().set_ufrag(self.link.id, ufrag)
    }

    /// What the candidates the publisher is told must say.
    pub fn ports(&self) -> CandidatePorts {
        self.link.shared.ports.clone()
    }

    /// How the TCP connection that last carried this publisher's media came, if one did.
    pub fn tcp_media_via(&self) -> Option<TcpVia> {
        self.link.table().tcp_media_via(self.link.id)
    }

    /// Where the publisher's latest UDP datagram (other than STUN) came from.
    pub fn media_from(&self) -> Option<SocketAddr> {
        self.link.table().media_from(self.link.id)
    }

    /// Forgets the publisher now (its peer connection closed), whoever still holds a view.
    pub fn forget(&self) {
        self.link.table().remove_peer(self.link.id);
    }
}
