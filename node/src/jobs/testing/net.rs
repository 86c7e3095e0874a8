//! An in-memory network: the node's real [`NetworkClient`] over a stand-in
//! for the libp2p event loop, which hands each request and each gossiped
//! job spec to the addressed node's jobs handlers on that node's own
//! runtime. Requests and answers go through the wire codec, so the size
//! limits and encodings are the real ones. A node taken off the network
//! ([`MemoryNet::detach`]) can neither send nor be reached, and the others
//! are told it is gone, as a closed connection would tell them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use libp2p::PeerId;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::error::{NodeError, Result};
use crate::jobs::{self, JobsContext};
use crate::net::codec::{decode_frame, encode_frame};
use crate::net::{Command, NetworkClient, Request, Response, Topic};

/// Commands a node may queue before its stand-in event loop reads them.
const QUEUE: usize = 1024;

/// Which requests to hold back: `(to, request)`.
pub type HoldRule = Box<dyn Fn(&PeerId, &Request) -> bool + Send + Sync>;

struct Member {
    ctx: Weak<JobsContext>,
    runtime: Handle,
}

pub struct MemoryNet {
    members: Mutex<BTreeMap<PeerId, Member>>,
    hold: Mutex<Option<HoldRule>>,
    /// Requests held back now.
    held: AtomicUsize,
    /// Bumped on every release.
    released: watch::Sender<u64>,
    /// Nodes the others reach only through a relay.
    relayed: Mutex<std::collections::BTreeSet<PeerId>>,
}

impl MemoryNet {
    pub fn new() -> Arc<MemoryNet> {
        Arc::new(MemoryNet {
            members: Mutex::new(BTreeMap::new()),
            hold: Mutex::new(None),
            held: AtomicUsize::new(0),
            released: watch::channel(0).0,
            relayed: Mutex::new(Default::default()),
        })
    }

    /// From now on the others reach `peer` only through a relay (as its
    /// transports say; the messages still arrive).
    pub fn relay_only(&self, peer: PeerId) {
        self.relayed.lock().expect("relayed lock").insert(peer);
    }

    /// How `from` is connected to `to`: relayed if either is reached only
    /// through a relay.
    fn transports(&self, from: &PeerId, to: &PeerId) -> Vec<crate::net::reach::Transport> {
        use crate::net::reach::Transport;
        let relayed = self.relayed.lock().expect("relayed lock");
        if relayed.contains(from) || relayed.contains(to) {
            vec![Transport::Relayed]
        } else {
            vec![Transport::Tcp]
        }
    }

    /// Holds back every request the rule picks, as a slow link would,
    /// until [`MemoryNet::release`]; then it goes on to whoever is on the
    /// network at that time.
    pub fn hold(&self, rule: HoldRule) {
        *self.hold.lock().expect("hold lock") = Some(rule);
    }

    /// Requests held back now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub fn release(&self) {
        self.hold.lock().expect("hold lock").take();
        self.released.send_modify(|n| *n += 1);
    }

    async fn wait_if_held(&self, to: &PeerId, request: &Request) {
        let held = self
            .hold
            .lock()
            .expect("hold lock")
            .as_ref()
            .is_some_and(|rule| rule(to, request));
        if !held {
            return;
        }
        let mut released = self.released.subscribe();
        self.held.fetch_add(1, Ordering::SeqCst);
        let _ = released.changed().await;
        self.held.fetch_sub(1, Ordering::SeqCst);
    }

    /// A network client for `peer`, served on the current runtime.
    pub fn client(self: &Arc<Self>, peer: PeerId) -> NetworkClient {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(serve(Arc::clone(self), peer, rx));
        NetworkClient {
            tx,
            local_peer_id: peer,
        }
    }

    /// Puts a node on the network; its handlers run on `runtime`.
    pub fn attach(&self, ctx: &Arc<JobsContext>, runtime: Handle) {
        let member = Member {
            ctx: Arc::downgrade(ctx),
            runtime,
        };
        let peer = ctx.net.local_peer_id();
        self.members
            .lock()
            .expect("members lock")
            .insert(peer, member);
    }

    /// Takes a node off the network; the others learn it is gone.
    pub fn detach(&self, peer: &PeerId) {
        self.members.lock().expect("members lock").remove(peer);
        for (ctx, runtime) in self.others(peer) {
            let peer = *peer;
            runtime.spawn(async move { jobs::on_disconnected(&ctx, &peer) });
        }
    }

    fn member(&self, peer: &PeerId) -> Option<(Arc<JobsContext>, Handle)> {
        let members = self.members.lock().expect("members lock");
        let member = members.get(peer)?;
        Some((member.ctx.upgrade()?, member.runtime.clone()))
    }

    fn others(&self, me: &PeerId) -> Vec<(Arc<JobsContext>, Handle)> {
        let members = self.members.lock().expect("members lock");
        members
            .iter()
            .filter(|(peer, _)| *peer != me)
            .filter_map(|(_, m)| Some((m.ctx.upgrade()?, m.runtime.clone())))
            .collect()
    }

    async fn request(&self, from: PeerId, to: PeerId, request: Request) -> Result<Response> {
        if self.member(&from).is_none() {
            return Err(NodeError::Network(format!("{from} is not on the network")));
        }
        self.wait_if_held(&to, &request).await;
        let Some((ctx, runtime)) = self.member(&to) else {
            return Err(NodeError::Network(format!("{to} cannot be reached")));
        };
        let request: Request = through_the_wire(&request)?;
        let sender = from
            .to_string()
            .parse()
            .map_err(|_| NodeError::Network(format!("{from} is not an ed25519 node key")))?;
        let answer = runtime
            .spawn(async move { jobs::handle(ctx, sender, request).await })
            .await
            .map_err(|e| NodeError::Network(format!("{to} went away while answering: {e}")))?;
        through_the_wire(&answer)
    }

    fn publish(&self, from: PeerId, topic: Topic, data: Vec<u8>) -> Result<()> {
        let others = self.others(&from);
        if others.is_empty() {
            return Err(NodeError::Network(
                "no peers subscribed to the topic".into(),
            ));
        }
        for (ctx, runtime) in others {
            let data = data.clone();
            match topic {
                Topic::Jobs => {
                    runtime.spawn(async move { jobs::worker::on_gossip(&ctx, from, &data) });
                }
                Topic::Allocations => {
                    runtime.spawn(async move { jobs::window::on_gossip(&ctx, from, &data) });
                }
                Topic::Adverts => {}
            }
        }
        Ok(())
    }
}

/// Encodes and decodes a message as the network would.
fn through_the_wire<T: crate::net::wire::WireEnum>(message: &T) -> Result<T> {
    let bytes = encode_frame(message).map_err(|e| NodeError::Network(e.to_string()))?;
    decode_frame(&bytes[4..]).map_err(|e| NodeError::Network(e.to_string()))
}

/// The stand-in event loop of one node.
async fn serve(net: Arc<MemoryNet>, me: PeerId, mut commands: mpsc::Receiver<Command>) {
    while let Some(command) = commands.recv().await {
        match command {
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let net = Arc::clone(&net);
                tokio::spawn(async move {
                    let _ = reply.send(net.request(me, peer, request).await);
                });
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(net.publish(me, topic, data));
            }
            Command::Dial { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
            Command::Peers { reply } => {
                let _ = reply.send(Vec::new());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(Vec::new());
            }
            Command::Transports { peer, reply } => {
                let _ = reply.send(net.transports(&me, &peer));
            }
            Command::Reach { reply } => {
                let _ = reply.send(crate::net::reach::ReachState::default().snapshot());
            }
            Command::Shutdown { reply } => {
                let _ = reply.send(());
                return;
            }
            // Answers go back through `request`; nothing to validate,
            // admit or ban in memory.
            Command::Respond { .. }
            | Command::Validate { .. }
            | Command::Admit { .. }
            | Command::Ban { .. } => {}
        }
    }
}
