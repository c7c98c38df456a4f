//! The accept loop, for HTTP and HTTPS alike: at most `limits.max_connections` open
//! connections (more are closed at once), a TLS handshake and a request's headers within
//! `http.request_timeout_s`, HTTP/1.1 with upgrades (WebSocket) and HTTP/2. A connection
//! whose first bytes are framed STUN is ICE over TCP (`webrtc.ice_on_http`) and goes to
//! the gateway's mux.

use crate::gateway::Gateway;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_http::add_extension::AddExtension;

/// How long the loop pauses after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What bounds the connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// For the TLS handshake, and for each request's headers.
    pub request_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ConnectionLimits,
    gateway: Arc<Gateway>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let acceptor = tls.map(TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accept error: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            gateway.metrics.connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let _open = gateway.metrics.connection_opened();
            let _permit = permit;
            // ICE over TCP on this port (`webrtc.ice_on_http`): told by its first bytes,
            // which stay in the stream for HTTP and TLS.
            if gateway.net.takes_ice_on_http() {
                let mut first = [0u8; 1];
                let sent = tokio::time::timeout(limits.request_timeout, stream.peek(&mut first));
                if !matches!(sent.await, Ok(Ok(n)) if n > 0) {
                    return;
                }
                match gateway.net.is_ice(&stream).await {
                    Some(true) => return gateway.net.take_from_http(stream, peer).await,
                    Some(false) => {}
                    None => return,
                }
            }
            // Handlers (the hooks) learn the client's address from this extension.
            let service = TowerToHyperService::new(AddExtension::new(app, ConnectInfo(peer)));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.request_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(limits.request_timeout);
            let served = match acceptor {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.request_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => {
                    // The protocol is told by the first bytes: a client that sends none
                    // within the timeout is closed.
                    let mut first = [0u8; 1];
                    let sent =
                        tokio::time::timeout(limits.request_timeout, stream.peek(&mut first));
                    if !matches!(sent.await, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}
