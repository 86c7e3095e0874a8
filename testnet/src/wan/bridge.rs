//! A node's HTTP API, which listens on its namespace's loopback, made
//! reachable from the testnet's own namespace: a listener on 127.0.0.1 here
//! whose connections a thread that entered the node's namespace carries
//! to the API there. Only these bytes cross, between two sockets of this
//! process: no route joins the namespaces, so the nodes' own traffic cannot
//! take this way round the NATs.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use super::netns::open_netns;

#[derive(Debug)]
pub struct ApiBridge {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiBridge {
    /// Carries connections to `127.0.0.1:<local port>` here to `target`
    /// (a loopback address) inside the namespace named `ns`.
    pub fn start(ns: &str, target: SocketAddr) -> anyhow::Result<ApiBridge> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the API bridge")?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let netns = open_netns(ns)?;
        let name = ns.to_string();
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("api-bridge-{name}"))
            .spawn(move || {
                use std::os::fd::AsRawFd;
                // SAFETY: setns on this thread only, with a valid fd. The
                // listener was made before, in the testnet's namespace.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    eprintln!("api bridge: cannot enter {name}");
                    return;
                }
                accept_loop(&listener, target, &stopping);
            })?;
        Ok(ApiBridge {
            local,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local)
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                // Opened on this thread: inside the node's namespace.
                let Ok(api) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                if let (Ok(c2), Ok(a2)) = (client.try_clone(), api.try_clone()) {
                    std::thread::spawn(move || pipe(c2, a2));
                    std::thread::spawn(move || pipe(api, client));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Copies `from` into `to` until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for ApiBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
