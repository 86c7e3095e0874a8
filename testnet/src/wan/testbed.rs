//! The wide-area testbed: an "internet" namespace (a bridge, the relay
//! and bootstrap node's address 10.77.0.1) and, per site, a NAT router
//! namespace and a host namespace behind it:
//!
//! ```text
//!   host i (192.168.i.2) ── lan│router i│wan (10.77.0.(10+i)) ── br0 (internet, 10.77.0.1)
//! ```
//!
//! Each router masquerades its LAN behind its public address with the
//! site's [`Nat`] behaviour (nftables); links can be shaped with `tbf`
//! both ways (upload on the router's `wan`, download on the internet's
//! port) and delayed both ways by the router ([`super::delay`]). Every namespace is named after this process, so parallel runs do
//! not meet, and all go when the [`Testbed`] is dropped (or, if the process
//! was killed first, when the next testbed starts).

use std::net::Ipv4Addr;

use anyhow::Context;

use super::delay::DelayLine;
use super::netns::Netns;

/// How a site's router translates and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Nat {
    /// Endpoint-independent mapping and filtering: every port of the
    /// public address leads to the host (masquerade plus a catch-all DNAT).
    FullCone,
    /// Endpoint-independent mapping (Linux keeps the source port when it
    /// can), filtering by remote address and port (conntrack admits only
    /// replies): what most home and campus NATs do.
    PortRestricted,
    /// A new random public port per flow (`masquerade fully-random`):
    /// endpoint-dependent mapping, which defeats hole punching.
    Symmetric,
}

impl Nat {
    pub const ALL: [Nat; 3] = [Nat::FullCone, Nat::PortRestricted, Nat::Symmetric];

    pub fn label(self) -> &'static str {
        match self {
            Nat::FullCone => "full-cone",
            Nat::PortRestricted => "port-restricted",
            Nat::Symmetric => "symmetric",
        }
    }

    /// Whether two nodes behind these NATs can, in principle, punch a
    /// direct connection: not when either side maps per flow, unless the
    /// other side admits anything (full cone).
    pub fn hole_punchable(a: Nat, b: Nat) -> bool {
        match (a, b) {
            (Nat::Symmetric, Nat::Symmetric) => false,
            (Nat::Symmetric, other) | (other, Nat::Symmetric) => other == Nat::FullCone,
            _ => true,
        }
    }

    fn ruleset(self, table: &str, lan_host: Ipv4Addr) -> String {
        let masquerade = match self {
            Nat::Symmetric => "masquerade fully-random",
            _ => "masquerade",
        };
        let forward_all = match self {
            Nat::FullCone => format!(
                "chain prerouting {{ type nat hook prerouting priority dstnat; iifname \"wan\" dnat to {lan_host}; }}"
            ),
            _ => String::new(),
        };
        // Unsolicited packets for the router itself are dropped without
        // an answer (no RST, no ICMP), as NAT boxes and firewalls do: a
        // hole punch's first packet is lost, not refused.
        format!(
            "table ip {table} {{\n  chain postrouting {{ type nat hook postrouting priority srcnat; oifname \"wan\" {masquerade}; }}\n  {forward_all}\n  chain input {{ type filter hook input priority filter; iifname \"wan\" ct state new drop; }}\n}}\n"
        )
    }
}

/// Shaping of every site's link to the internet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Shaping {
    /// Each direction's rate, Mbit/s (0: not limited).
    pub rate_mbit: u32,
    /// Added to each direction of the link, milliseconds (0: none).
    pub delay_ms: u32,
}

/// Every testbed namespace is named `fgwPIDxN-...` (N counts the
/// process's testbeds).
pub(crate) const NAME_PREFIX: &str = "fgw";

/// The internet's address prefix; the relay and bootstrap node sit at
/// [`Testbed::INTERNET_HOST`].
const INTERNET_PREFIX: [u8; 3] = [10, 77, 0];

pub struct Site {
    /// First, so it stops before the router's namespace goes.
    pub delay: Option<DelayLine>,
    pub nat: Nat,
    pub host: Netns,
    pub router: Netns,
    pub public_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
}

pub struct Testbed {
    /// Sites first: their namespaces go before the internet's.
    pub sites: Vec<Site>,
    pub internet: Netns,
}

impl Testbed {
    pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    /// One site per entry of `nats` (at most 200), optionally shaped.
    pub fn create(nats: &[Nat], shaping: Option<Shaping>) -> anyhow::Result<Testbed> {
        anyhow::ensure!(nats.len() <= 200, "at most 200 sites");
        super::netns::sweep_stale(NAME_PREFIX);
        // Several testbeds may live in one process at once (tests run in
        // parallel): each gets a number of its own.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{NAME_PREFIX}{}x{n}", std::process::id());
        let internet = Netns::create(&format!("{tag}-inet"))?;
        internet.ip(["link", "add", "br0", "type", "bridge"])?;
        internet.ip([
            "addr",
            "add",
            &format!("{}/24", Self::INTERNET_HOST),
            "dev",
            "br0",
        ])?;
        internet.ip(["link", "set", "br0", "up"])?;
        // Counts what the internet's own address (the relay) receives and
        // sends; frames the bridge forwards between sites do not pass here.
        internet.nft(
            "table ip fairgrid_acct {\n  chain input { type filter hook input priority filter; counter; }\n  chain output { type filter hook output priority filter; counter; }\n}\n",
        )?;
        let mut testbed = Testbed {
            sites: Vec::new(),
            internet,
        };
        for (i, &nat) in nats.iter().enumerate() {
            let site = testbed
                .add_site(&tag, i + 1, nat, shaping)
                .with_context(|| format!("setting up site {} ({})", i + 1, nat.label()))?;
            testbed.sites.push(site);
        }
        Ok(testbed)
    }

    fn add_site(
        &self,
        tag: &str,
        n: usize,
        nat: Nat,
        shaping: Option<Shaping>,
    ) -> anyhow::Result<Site> {
        let [a, b, c] = INTERNET_PREFIX;
        let public_ip = Ipv4Addr::new(a, b, c, 10 + n as u8);
        let router_ip = Ipv4Addr::new(192, 168, n as u8, 1);
        let host_ip = Ipv4Addr::new(192, 168, n as u8, 2);
        let router = Netns::create(&format!("{tag}-r{n}"))?;
        let host = Netns::create(&format!("{tag}-h{n}"))?;
        let port = format!("s{n}");

        // Router's WAN side, plugged into the internet's bridge.
        router.ip([
            "link",
            "add",
            "wan",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.internet.name(),
        ])?;
        self.internet
            .ip(["link", "set", &port, "master", "br0", "up"])?;
        router.ip(["addr", "add", &format!("{public_ip}/24"), "dev", "wan"])?;
        router.ip(["link", "set", "wan", "up"])?;

        // The LAN between router and host.
        router.ip([
            "link",
            "add",
            "lan",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.name(),
        ])?;
        router.ip(["addr", "add", &format!("{router_ip}/24"), "dev", "lan"])?;
        router.ip(["link", "set", "lan", "up"])?;
        host.ip(["addr", "add", &format!("{host_ip}/24"), "dev", "eth0"])?;
        host.ip(["link", "set", "eth0", "up"])?;
        host.ip(["route", "add", "default", "via", &router_ip.to_string()])?;

        router.exec("sysctl", ["-qw", "net.ipv4.ip_forward=1"])?;
        router.nft(&nat.ruleset("fairgrid_nat", host_ip))?;

        let shape = shaping.unwrap_or_default();
        if shape.rate_mbit > 0 {
            shape_egress(&router, "wan", shape)?;
            shape_egress(&self.internet, &port, shape)?;
        }
        let delay = match shape.delay_ms {
            0 => None,
            ms => Some(DelayLine::start(
                &router,
                0,
                std::time::Duration::from_millis(u64::from(ms)),
            )?),
        };
        Ok(Site {
            delay,
            nat,
            host,
            router,
            public_ip,
            host_ip,
        })
    }
}

impl Testbed {
    /// Bytes the internet namespace's own address (the relay) has received
    /// and sent since the testbed was made.
    pub fn relay_bytes(&self) -> anyhow::Result<u64> {
        let listing = self
            .internet
            .exec("nft", ["list", "table", "ip", "fairgrid_acct"])?;
        Ok(counted_bytes(&listing))
    }
}

/// The sum of every `bytes N` in an nft listing of counters.
fn counted_bytes(listing: &str) -> u64 {
    let words: Vec<&str> = listing.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "bytes")
        .filter_map(|w| w[1].trim_end_matches([';', ',']).parse::<u64>().ok())
        .sum()
}

/// A token bucket on `dev`'s egress: `rate` with a burst of 10 ms worth
/// of it (at least 16 KiB) and a queue of up to 100 ms.
fn shape_egress(ns: &Netns, dev: &str, shape: Shaping) -> anyhow::Result<()> {
    let burst_bytes = (u64::from(shape.rate_mbit) * 1_000_000 / 8 / 100).max(16 * 1024);
    ns.exec(
        "tc",
        [
            "qdisc",
            "add",
            "dev",
            dev,
            "root",
            "tbf",
            "rate",
            &format!("{}mbit", shape.rate_mbit),
            "burst",
            &burst_bytes.to_string(),
            "latency",
            "100ms",
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_an_nft_listing() {
        let listing = "table ip fairgrid_acct {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tcounter packets 12 bytes 3400\n\t}\n\tchain output {\n\t\tcounter packets 3 bytes 600\n\t}\n}\n";
        assert_eq!(counted_bytes(listing), 4000);
        assert_eq!(counted_bytes("table ip t { }"), 0);
    }

    #[test]
    fn which_pairs_can_punch_a_hole() {
        use Nat::*;
        assert!(Nat::hole_punchable(PortRestricted, PortRestricted));
        assert!(Nat::hole_punchable(FullCone, Symmetric));
        assert!(Nat::hole_punchable(Symmetric, FullCone));
        assert!(!Nat::hole_punchable(Symmetric, PortRestricted));
        assert!(!Nat::hole_punchable(Symmetric, Symmetric));
    }

    #[test]
    fn a_full_cone_forwards_everything_and_a_symmetric_nat_randomises_ports() {
        let host = Ipv4Addr::new(192, 168, 1, 2);
        let full = Nat::FullCone.ruleset("t", host);
        assert!(full.contains("dnat to 192.168.1.2"), "{full}");
        assert!(!full.contains("fully-random"));
        let sym = Nat::Symmetric.ruleset("t", host);
        assert!(sym.contains("masquerade fully-random"), "{sym}");
        assert!(!sym.contains("dnat"));
        let restricted = Nat::PortRestricted.ruleset("t", host);
        assert!(!restricted.contains("dnat") && !restricted.contains("random"));
        for rules in [full, sym, restricted] {
            assert!(rules.contains("ct state new drop"), "{rules}");
        }
    }
}
