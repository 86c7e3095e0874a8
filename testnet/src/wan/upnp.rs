//! UPnP across a home router (issue 16): a router namespace running
//! miniupnpd (an Internet Gateway Device, as home routers are) in front of
//! a node, and a node on the "internet". The router drops connections
//! nobody asked for, so the public node cannot dial the home node, unless
//! the home node runs with `network.upnp` and the router forwards its
//! port. Both are tried: first a home node without UPnP, then one with it.
//!
//! libp2p only maps through a router whose own address is public, so this
//! internet is 44.0.0.0/24 (inside the namespaces this makes and deletes;
//! nothing leaves them), not the testbed's private 10.77.0.0/24.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::matrix::{transports_to, wait};
use super::netns::Netns;
use super::node::{PORT, WanNode};
use crate::launcher::Launcher;

const PUBLIC_NODE: Ipv4Addr = Ipv4Addr::new(44, 0, 0, 1);
const ROUTER_WAN: Ipv4Addr = Ipv4Addr::new(44, 0, 0, 2);
const ROUTER_LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const HOME_NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

/// How long the public node's dial has to connect.
const DIAL_SECS: u64 = 10;

/// What the two tries found.
#[derive(Debug)]
pub struct UpnpOutcome {
    /// Without UPnP: the transports the public node reached the home node
    /// over (none expected).
    pub without: Vec<String>,
    /// With UPnP: what the home node's status says of the router, and the
    /// addresses the router forwards to it.
    pub status: String,
    pub mapped: Vec<String>,
    /// With UPnP: the transports the public node reached it over.
    pub with: Vec<String>,
    /// How long after the home node started the router had mapped it.
    pub time_to_mapped: Duration,
}

/// The home router's rules: masquerade out of `wan`, drop unsolicited
/// connections to itself, and the chains miniupnpd fills (its nftables
/// build's default names) with a forward and a DNAT per mapping.
const ROUTER_RULESET: &str = "table inet filter {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; oifname \"wan\" masquerade; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
  chain input { type filter hook input priority 0; policy accept; iifname \"wan\" ct state new drop; }
}
";

/// miniupnpd's configuration: UPnP IGD and NAT-PMP on the LAN, mappings of
/// unprivileged ports for LAN hosts only.
fn miniupnpd_conf() -> String {
    format!(
        "ext_ifname=wan\nlistening_ip=lan\nhttp_port=0\nenable_upnp=yes\nenable_natpmp=yes\nsecure_mode=yes\nsystem_uptime=yes\nuuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07d\nallow 1024-65535 {HOME_NODE}/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
    )
}

/// The three namespaces and the router's daemon; dropping it stops the
/// daemon and deletes the namespaces.
struct HomeNetwork {
    internet: Netns,
    /// Kept for its drop (which deletes it); nothing reads it.
    _router: Netns,
    home: Netns,
    miniupnpd: Child,
}

impl Drop for HomeNetwork {
    fn drop(&mut self) {
        let _ = self.miniupnpd.kill();
        let _ = self.miniupnpd.wait();
    }
}

impl HomeNetwork {
    fn create(files: &Path) -> anyhow::Result<HomeNetwork> {
        super::netns::sweep_stale(super::testbed::NAME_PREFIX);
        let tag = format!("{}{}xu", super::testbed::NAME_PREFIX, std::process::id());
        let internet = Netns::create(&format!("{tag}-inet"))?;
        let router = Netns::create(&format!("{tag}-r"))?;
        let home = Netns::create(&format!("{tag}-h"))?;
        veth(&router, "wan", &internet, "eth0")?;
        veth(&router, "lan", &home, "eth0")?;
        internet.ip(["addr", "add", &format!("{PUBLIC_NODE}/24"), "dev", "eth0"])?;
        router.ip(["addr", "add", &format!("{ROUTER_WAN}/24"), "dev", "wan"])?;
        router.ip(["addr", "add", &format!("{ROUTER_LAN}/24"), "dev", "lan"])?;
        home.ip(["addr", "add", &format!("{HOME_NODE}/24"), "dev", "eth0"])?;
        home.ip(["route", "add", "default", "via", &ROUTER_LAN.to_string()])?;
        router.exec("sysctl", ["-qw", "net.ipv4.ip_forward=1"])?;
        router.nft(ROUTER_RULESET)?;

        let conf = files.join("miniupnpd.conf");
        std::fs::write(&conf, miniupnpd_conf())?;
        let log = std::fs::File::create(files.join("miniupnpd.log"))?;
        let miniupnpd = Command::new("ip")
            .args(["netns", "exec", router.name(), "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(files.join("miniupnpd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting miniupnpd (apt-get install miniupnpd-nftables)")?;
        Ok(HomeNetwork {
            internet,
            _router: router,
            home,
            miniupnpd,
        })
    }
}

/// A veth pair: `a_dev` in `a`, `b_dev` in `b`, both up.
fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> anyhow::Result<()> {
    a.ip([
        "link",
        "add",
        a_dev,
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ])?;
    a.ip(["link", "set", a_dev, "up"])?;
    b.ip(["link", "set", b_dev, "up"])?;
    Ok(())
}

/// Whether this machine can run the scenario: root for the namespaces,
/// and miniupnpd.
pub fn unavailable() -> Option<String> {
    if let Some(why) = super::netns::unavailable() {
        return Some(why);
    }
    let found = Command::new("sh")
        .args(["-c", "command -v miniupnpd"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!found).then(|| {
        "miniupnpd is not installed (apt-get install miniupnpd-nftables; .ci/run does)".into()
    })
}

/// Runs both tries and reports what each found.
pub fn run(launcher: &Launcher) -> anyhow::Result<UpnpOutcome> {
    if let Some(why) = unavailable() {
        bail!("{why}");
    }
    let files = tempfile::Builder::new()
        .prefix("fairgrid-upnp-")
        .tempdir()?;
    let net = HomeNetwork::create(files.path())?;
    let log = ("FAIRGRID_LOG_FILTER".to_string(), "info".to_string());
    let public = WanNode::start(
        launcher,
        &net.internet,
        "public",
        &files.path().join("public"),
        std::slice::from_ref(&log),
        &[],
    )?;
    let home = |name: &str, upnp: bool| {
        WanNode::start(
            launcher,
            &net.home,
            name,
            &files.path().join(name),
            &[
                log.clone(),
                ("FAIRGRID_NETWORK_UPNP".into(), upnp.to_string()),
            ],
            &[],
        )
    };

    // Without UPnP: the router drops the public node's dial.
    let plain = home("home-plain", false)?;
    let without = dial_from(&public, &net.internet, &plain)?;
    drop(plain);

    // With UPnP: the home node asks the router to forward its ports.
    let started = Instant::now();
    let mapped_node = home("home-upnp", true)?;
    let (status, mapped) = wait(Duration::from_secs(30), "UPnP mapping", || {
        let s = mapped_node.api(&net.home, |c| async move { Ok(c.status().await?) })?;
        Ok((!s.upnp_addrs.is_empty()).then_some((s.upnp, s.upnp_addrs)))
    })
    .map_err(|e| {
        let daemon =
            std::fs::read_to_string(files.path().join("miniupnpd.log")).unwrap_or_default();
        e.context(format!(
            "{}\nminiupnpd:\n{daemon}",
            mapped_node.log_tail(20)
        ))
    })?;
    let time_to_mapped = started.elapsed();
    let with = dial_from(&public, &net.internet, &mapped_node)?;
    Ok(UpnpOutcome {
        without,
        status,
        mapped,
        with,
        time_to_mapped,
    })
}

/// The public node dials `target` at the router's public address; returns
/// the transports it is connected to it over once connected, or after
/// [`DIAL_SECS`] (empty: not connected).
fn dial_from(public: &WanNode, ns: &Netns, target: &WanNode) -> anyhow::Result<Vec<String>> {
    let addr = format!("/ip4/{ROUTER_WAN}/tcp/{PORT}/p2p/{}", target.peer_id);
    public.api(ns, |c| {
        let addr = addr.clone();
        async move { Ok(c.dial(&addr).await?) }
    })?;
    let deadline = Instant::now() + Duration::from_secs(DIAL_SECS);
    loop {
        let transports = transports_to(public, ns, &target.peer_id)?;
        if !transports.is_empty() || Instant::now() > deadline {
            return Ok(transports);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
