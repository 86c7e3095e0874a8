//! The wide-area testbed (issue 16): nodes in network namespaces behind
//! NAT routers, a relay on a shared "internet", links shaped with `tbf`.
//! It needs root and `ip`, `nft`, `tc` and `iptables`; without them it stops and says
//! so ([`netns::unavailable`]). Traffic stays inside the namespaces it
//! made: the nodes' APIs are reached from threads that entered them.
//!
//! - [`testbed`]: namespaces, veth pairs, NAT rules and shaping;
//! - [`node`]: a node process in a namespace, and its API;
//! - [`delay`]: added latency per site link (NFQUEUE, no netem);
//! - [`bridge`]: a namespaced node's API, reachable from the testnet's
//!   namespace (so a [`crate::cluster::Cluster`] can place nodes in them);
//! - [`matrix`]: the NAT matrix (direct, relayed, or not connected);
//! - [`job`]: a job across the testbed, direct or through the relay;
//! - [`upnp`]: a node behind a home router that forwards its port (UPnP).

pub mod bridge;
pub mod delay;
pub mod job;
pub mod matrix;
pub mod netns;
pub mod node;
pub mod testbed;
pub mod upnp;
