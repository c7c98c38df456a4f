//! The WebRTC stack's runtime for one publisher's peer connection: tokio for tasks, timers,
//! name lookups and outgoing TCP, and for sockets the views of the shared ones. The stack
//! binds a socket for each address it is given (`IP:0`) and hands it here; the view takes
//! its address (the agent's host candidate) and the socket itself is closed at once.

use super::PeerLink;
use super::tcp::TcpListenerView;
use super::udp::UdpView;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// mDNS's port: a socket bound there is the stack's own multicast socket, not ICE's.
const MDNS_PORT: u16 = 5353;

#[derive(Debug)]
pub(crate) struct PeerRuntime {
    tokio: TokioRuntime,
    link: Arc<PeerLink>,
}

impl PeerRuntime {
    pub fn new(link: Arc<PeerLink>) -> PeerRuntime {
        PeerRuntime {
            tokio: TokioRuntime,
            link,
        }
    }
}

impl Runtime for PeerRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.tokio.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.tokio.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let key = socket.local_addr()?;
        if key.port() == MDNS_PORT {
            return self.tokio.wrap_udp_socket(socket);
        }
        drop(socket);
        let shared = self.link.shared.udp.clone();
        Ok(Arc::new(UdpView::new(self.link.clone(), shared, key)))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let key = listener.local_addr()?;
        drop(listener);
        Ok(Arc::new(TcpListenerView::new(self.link.clone(), key)))
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.tokio.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.tokio.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.tokio.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.tokio.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.tokio.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.tokio.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.tokio.yield_now()
    }

    fn name(&self) -> &'static str {
        "gateway-mux"
    }
}
