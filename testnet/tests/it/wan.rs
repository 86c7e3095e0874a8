//! Issue 16's wide-area testbed: nodes behind NAT routers in network
//! namespaces, a relay on the testbed's "internet". It needs root (and
//! `ip`, `nft`, `tc`); .ci/run runs these as root with --ignored. Without
//! root they fail with that reason rather than pass.

use std::time::Duration;

use fairgrid_testnet::launcher::Launcher;
use fairgrid_testnet::wan::matrix::{self, MatrixArgs, Outcome, Over};
use fairgrid_testnet::wan::testbed::Nat;

/// One testbed at a time: each test checks that it left no namespace of
/// this process behind, and two at once would share the 2 cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn launcher() -> Launcher {
    Launcher::new(env!("CARGO_BIN_EXE_fairgrid-testnet"))
}

/// The NAT matrix, one trial per pair and transport: every pair ends up
/// connected (directly or through the relay); where both NATs allow hole
/// punching at least 70% of pairs connect directly (the libp2p study's
/// figure); where neither side can be reached unsolicited and one maps
/// per flow, the pair stays relayed.
#[test]
#[ignore = "needs root for network namespaces and NAT rules; .ci/run runs it (as root) with --ignored"]
fn nat_matrix_direct_where_nats_allow_relayed_elsewhere() {
    let _alone = one_at_a_time();
    let args = MatrixArgs {
        trials: 1,
        punch_secs: 8,
        nats: Nat::ALL.to_vec(),
        keep_files: false,
        transports: vec![Over::Tcp, Over::Quic],
        log_filter: "info".into(),
    };
    let started = std::time::Instant::now();
    let trials = matrix::run(&launcher(), &args).expect("the matrix runs");
    let report = matrix::report(&trials);
    eprintln!("{report}");
    assert_eq!(trials.len(), 12, "6 pairs x 2 transports");
    assert!(
        trials.iter().all(|t| t.outcome != Outcome::NotConnected),
        "every pair is connected at least through the relay:\n{report}"
    );
    let (direct, punchable) = matrix::direct_where_punchable(&trials);
    assert!(
        direct * 10 >= punchable * 7,
        "{direct}/{punchable} direct:\n{report}"
    );
    for t in &trials {
        if !Nat::hole_punchable(t.nats.0, t.nats.1) {
            assert_eq!(t.outcome, Outcome::Relayed, "{report}");
        }
        if t.nats == (Nat::PortRestricted, Nat::PortRestricted) {
            assert!(
                matches!(t.outcome, Outcome::Direct(_)),
                "two cone NATs punch a hole over {}:\n{report}",
                t.over
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(600));
    assert!(
        no_testbed_namespaces_left(),
        "the testbed removes its namespaces"
    );
}

/// The delay line adds what it is asked to each direction of a site's
/// link: a TCP handshake from a host behind a site to the internet takes
/// one round trip, twice the site's delay, and not much more.
#[test]
#[ignore = "needs root for network namespaces and NFQUEUE; .ci/run runs it (as root) with --ignored"]
fn a_delayed_site_link_adds_its_delay_each_way() {
    use fairgrid_testnet::wan::testbed::{Shaping, Testbed};
    let _alone = one_at_a_time();
    let delay_ms = 30;
    let testbed = Testbed::create(
        &[Nat::PortRestricted],
        Some(Shaping {
            rate_mbit: 0,
            delay_ms,
        }),
    )
    .expect("the testbed");
    let listener = testbed
        .internet
        .run_inside(|| Ok(std::net::TcpListener::bind((Testbed::INTERNET_HOST, 0))?))
        .expect("a listener on the internet");
    let target = listener.local_addr().unwrap();
    let handshakes: Vec<Duration> = testbed.sites[0]
        .host
        .run_inside(move || {
            let mut times = Vec::new();
            for _ in 0..5 {
                let started = std::time::Instant::now();
                let stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
                times.push(started.elapsed());
                drop(stream);
            }
            Ok(times)
        })
        .expect("connections from behind the site");
    let round_trip = Duration::from_millis(2 * u64::from(delay_ms));
    eprintln!("TCP handshakes through a site delayed {delay_ms} ms each way: {handshakes:?}");
    for took in &handshakes {
        assert!(
            *took >= round_trip && *took < round_trip + Duration::from_millis(15),
            "handshakes took {handshakes:?}, expected just over {round_trip:?}"
        );
    }
    let line = testbed.sites[0].delay.as_ref().expect("a delay line");
    assert_eq!(
        line.counters
            .errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    drop(testbed);
    assert!(no_testbed_namespaces_left());
}

fn no_testbed_namespaces_left() -> bool {
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let prefix = format!("fgw{}x", std::process::id());
    !String::from_utf8_lossy(&list.stdout).contains(&prefix)
}

/// A job whose coordinator and workers all sit behind NATs completes, with
/// the workers behind cone NATs (hole punching possible: the job's traffic
/// then goes direct) and behind symmetric ones (it goes through the
/// consortium relay).
#[test]
#[ignore = "needs root for network namespaces and NAT rules; .ci/run runs it (as root) with --ignored"]
fn jobs_across_nats_complete_directly_and_through_the_relay() {
    let _alone = one_at_a_time();
    // One thread: the nodes die with the thread that started them.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use fairgrid_testnet::job::{Model, Tuning};
        use fairgrid_testnet::wan::job::{WanJobArgs, measure};
        for worker_nat in [Nat::PortRestricted, Nat::Symmetric] {
            let args = WanJobArgs {
                coordinator_nat: Nat::PortRestricted,
                worker_nat,
                workers: 2,
                rate_mbit: 100,
                delay_ms: 0,
                model: Model::Mlp,
                tuning: Tuning {
                    rounds: Some(4),
                    // Bids cross the relay from cold connections, after each
                    // worker's one-second speed probe: more than the default 3 s.
                    bid_window_secs: Some(8),
                    ..Tuning::default()
                },
                timeout_secs: 180,
            };
            let figures = measure(launcher(), &args)
                .await
                .unwrap_or_else(|e| panic!("the job behind {worker_nat:?} NATs: {e:#}"));
            eprintln!("{:?}: {}", worker_nat, figures.line());
            assert!(figures.accuracy > 0.5, "{}", figures.line());
            assert!(figures.job_bytes > 0);
            if worker_nat == Nat::Symmetric {
                assert!(
                    figures.relay_bytes > figures.job_bytes / 2,
                    "through the relay: {}",
                    figures.line()
                );
            } else {
                // Hole punched: the relayed connections close once idle,
                // and the job's traffic goes direct.
                assert!(
                    figures.relay_bytes < figures.job_bytes / 4,
                    "direct, not through the relay: {}",
                    figures.line()
                );
            }
        }
        assert!(no_testbed_namespaces_left());
    });
}

/// UPnP: a node behind a home router (miniupnpd, which drops connections
/// nobody asked for) cannot be dialled from the internet; with
/// `network.upnp` it asks the router to forward its ports, its status
/// shows the mapped addresses, and the same dial connects directly.
#[test]
#[ignore = "needs root for network namespaces and miniupnpd; .ci/run runs it (as root) with --ignored"]
fn upnp_lets_a_node_behind_a_home_router_be_dialled_directly() {
    let _alone = one_at_a_time();
    if let Some(why) = fairgrid_testnet::wan::upnp::unavailable() {
        panic!("cannot run: {why}");
    }
    let outcome = fairgrid_testnet::wan::upnp::run(&launcher()).unwrap();
    eprintln!("{outcome:?}");
    assert!(
        outcome.without.is_empty(),
        "reached without UPnP: {outcome:?}"
    );
    assert_eq!(outcome.status, "gateway", "{outcome:?}");
    assert!(
        outcome
            .mapped
            .iter()
            .any(|a| a.starts_with("/ip4/44.0.0.2/tcp/4001/p2p/")),
        "{outcome:?}"
    );
    assert_eq!(outcome.with, vec!["tcp".to_string()], "{outcome:?}");
    assert!(no_testbed_namespaces_left());
}
