//! The API's HTTP/1 server, with the limits a node on a shared machine
//! needs so that slow or idle clients cannot take it over:
//!
//! - a header-read timeout (hyper's, which needs a timer to work at all;
//!   `axum::serve` sets none): a client that has not sent a whole request
//!   head within [`Limits::header_timeout`], also between requests on a
//!   kept-alive connection, is disconnected;
//! - at most [`Limits::max_connections`] connections; at the cap a new
//!   connection closes the oldest one that is not in a request (a
//!   slowloris, or an idle keep-alive), so the node's own CLI always gets
//!   in, and is itself closed only when every connection is serving a
//!   request. The evicted connection's socket is closed by its own task, so
//!   the loop also holds one permit per live socket and waits for the
//!   evicted one to close before serving the new one: the number of open
//!   sockets never exceeds the cap, even while clients reconnect faster
//!   than evicted tasks get scheduled.
//!
//! Requests in progress (a long-polled event stream) are never cut.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

const TARGET: &str = "fairgrid::api";

/// How long a new connection waits for an evicted one's socket to close.
const EVICTED_CLOSE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// One open connection, as the accept loop sees it.
struct Connection {
    /// Requests being served on it now.
    in_request: AtomicUsize,
    /// Tells its task to close it.
    close: Notify,
}

/// The open connections, by the order they were accepted.
#[derive(Default)]
struct Open {
    next: AtomicU64,
    connections: Mutex<BTreeMap<u64, Arc<Connection>>>,
}

impl Open {
    fn add(&self) -> (u64, Arc<Connection>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            in_request: AtomicUsize::new(0),
            close: Notify::new(),
        });
        self.lock().insert(id, Arc::clone(&connection));
        (id, connection)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Connection>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes room for one more under `max`: closes the oldest connection
    /// not in a request. False if every connection is serving one.
    fn make_room(&self, max: usize) -> bool {
        let mut open = self.lock();
        if open.len() < max {
            return true;
        }
        let idle = open
            .iter()
            .find(|(_, c)| c.in_request.load(Ordering::SeqCst) == 0)
            .map(|(id, c)| (*id, Arc::clone(c)));
        match idle {
            Some((id, connection)) => {
                open.remove(&id);
                connection.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `app` on `listener` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Open::default());
    let live_sockets = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, most likely: let some close.
                warn!(target: TARGET, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !open.make_room(limits.max_connections) {
            debug!(target: TARGET, %peer, "every connection is serving a request; closing the new one");
            drop(stream);
            continue;
        }
        // The connection evicted to make room closes its socket when its
        // task next runs; wait for that rather than go past the cap.
        let permit = tokio::select! {
            permit = tokio::time::timeout(EVICTED_CLOSE_WAIT, Arc::clone(&live_sockets).acquire_owned()) => permit,
            _ = stop.changed() => return,
        };
        let Ok(Ok(permit)) = permit else {
            debug!(target: TARGET, %peer, "no connection closed in time; closing the new one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (id, connection) = open.add();
        let (open, app) = (Arc::clone(&open), app.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits, &connection).await;
            open.remove(id);
            drop(permit);
        });
    }
}

/// The address a request came from (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    limits: Limits,
    connection: &Arc<Connection>,
) {
    let counted = Arc::clone(connection);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let app = app.clone();
        let counted = Arc::clone(&counted);
        counted.in_request.fetch_add(1, Ordering::SeqCst);
        let mut request = Request::from(request);
        request.extensions_mut().insert(ClientAddr(peer));
        async move {
            let response = app.oneshot(request).await;
            counted.in_request.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = served => {
            if let Err(e) = result {
                debug!(target: TARGET, error = %e, "connection ended");
            }
        }
        _ = connection.close.notified() => {
            debug!(target: TARGET, "closed to make room for a new connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let open = Open::default();
        let (a, first) = open.add();
        let (_, second) = open.add();
        let (_, third) = open.add();
        assert!(open.make_room(4));
        // At the cap: the oldest idle one goes.
        first.in_request.store(1, Ordering::SeqCst);
        assert!(open.make_room(3));
        assert_eq!(open.lock().len(), 2);
        assert!(open.lock().contains_key(&a), "the busy one stays");
        drop((second, third));
        // Every connection busy: no room.
        for c in open.lock().values() {
            c.in_request.store(1, Ordering::SeqCst);
        }
        assert!(!open.make_room(2));
        assert!(open.make_room(3));
    }
}
