//! JSON market instances: the documented example clears; malformed or
//! inconsistent input is refused with the offending field named.

use fairgrid_protocol::market::MarketError;
use fairgrid_protocol::market::explain::explain;
use fairgrid_protocol::market::instance::Instance;
use fairgrid_protocol::market::report::Binding;
use fairgrid_protocol::market::verify;

const EXAMPLE: &str = include_str!("../../../docs/examples/market-instance.json");

fn field_of(text: &str) -> String {
    match Instance::from_json(text) {
        Err(MarketError::Instance { field, .. }) => field,
        other => panic!("expected an instance error, got {other:?}"),
    }
}

fn with_bids(bids: &str) -> String {
    format!(
        r#"{{"job": {{"name": "j", "shards": 10, "demand_per_shard": {{"cpu_milli": 1000}}, "limit_price": 100}},
            "bids": [{bids}]}}"#
    )
}

#[test]
fn the_documented_example_clears_and_verifies() {
    let instance = Instance::from_json(EXAMPLE).unwrap();
    let outcome = instance.clear().unwrap();
    assert_eq!(outcome.assigned + outcome.shortfall, outcome.job.shards);
    // alpha = 30% of 60: univ-a is the cheapest but capped at 18.
    let univ_a = outcome.owners.iter().find(|o| o.owner == "univ-a").unwrap();
    assert_eq!(univ_a.shards, 18);
    assert_eq!(univ_a.binding, Binding::OwnerCap);
    assert!(outcome.owners.iter().all(|o| o.shards <= o.cap));
    assert!(outcome.fairness.max_share_ppm <= 300_000);
    verify(
        &outcome.allocation,
        &instance.job,
        &instance.bids,
        &instance.trust,
    )
    .unwrap();
    let text = explain(&outcome);
    assert!(
        text.contains("univ-a: 18 shards. Owner cap binding"),
        "{text}"
    );
    // Same input, same bytes out.
    let again = Instance::from_json(EXAMPLE).unwrap().clear().unwrap();
    assert_eq!(again.allocation_hash, outcome.allocation_hash);
}

#[test]
fn errors_name_the_offending_field() {
    let ok = r#"{"node": "a", "ask": 5, "capacity": {"cpu_milli": 4000}}"#;
    assert!(Instance::from_json(&with_bids(ok)).is_ok());

    let cases = [
        (with_bids(&format!(r#"{ok}, {{"node": "b", "ask": 500, "capacity": {{}}}}"#)), "bids[1].ask"),
        (with_bids(&format!(r#"{ok}, {{"node": "b", "ask": -1, "capacity": {{}}}}"#)), "bids[1].ask"),
        (with_bids(&format!(r#"{ok}, {ok}"#)), "bids[1].node"),
        (with_bids(r#"{"node": "", "ask": 1, "capacity": {}}"#), "bids[0].node"),
        (with_bids(r#"{"node": "a", "ask": 1, "capacity": {"cpu": 1}}"#), "bids[0].capacity.cpu"),
        (with_bids(r#"{"node": "a", "ask": 1, "capacity": {}, "colour": "red"}"#), "bids[0].colour"),
        (with_bids(r#"{"node": "a", "ask": 1, "capacity": {}, "max_capacity": {}}"#), "bids[0].max_capacity"),
        (with_bids(r#"{"node": "a", "owner": "", "ask": 1, "capacity": {}}"#), "bids[0].owner"),
        (with_bids(r#"{"node": "a", "capacity": {}}"#), "bids[0]"),
        (r#"{"job": {"name": "j", "demand_per_shard": {"cpu_milli": 1}, "limit_price": 1}, "bids": []}"#.into(), "job.shards"),
        (r#"{"job": {"name": "j", "shards": 0, "demand_per_shard": {"cpu_milli": 1}, "limit_price": 1}, "bids": []}"#.into(), "job.shards"),
        (r#"{"job": {"name": "j", "shard_indices": [1, 5, 5], "demand_per_shard": {"cpu_milli": 1}, "limit_price": 1}, "bids": []}"#.into(), "job.shard_indices[2]"),
        (r#"{"job": {"name": "j", "shards": 3, "demand_per_shard": {}, "limit_price": 1}, "bids": []}"#.into(), "job.demand_per_shard"),
        (r#"{"job": {"name": "j", "shards": 3, "demand_per_shard": {"cpu_milli": 1}, "limit_price": 18446744073709551615}, "bids": []}"#.into(), "job.limit_price"),
        (r#"{"job": {"name": "j", "shards": 3, "demand_per_shard": {"cpu_milli": 1}, "limit_price": 1}, "policy": {"alpha_ppm": 0}, "bids": []}"#.into(), "policy.alpha_ppm"),
        (r#"{"job": {"name": "j", "shards": 3, "demand_per_shard": {"cpu_milli": 1}, "limit_price": 1}, "policy": {"beta_ppm": 2000000}, "bids": []}"#.into(), "policy.beta_ppm"),
        (r#"{"job": {"name": "j", "shards": 3, "demand_per_shard": {"cpu_milli": 1}, "limit_price": 1}, "policy": {"window": {"total": 1, "by_owner": {"x": 5}}}, "bids": []}"#.into(), "policy.window.total"),
        (r#"{"job": {"name": "j", "shards": 3, "demand_per_shard": {"cpu_milli": 1}, "limit_price": 1}, "bids": [], "extra": 1}"#.into(), "extra"),
        (r#"{"job": {"name": "j", "shards": 3, "demand_per_shard": {"cpu_milli": 1}, "limit_price": 1}, "bids": []} trailing"#.into(), "(document)"),
    ];
    for (text, field) in cases {
        assert_eq!(field_of(&text), field, "input: {text}");
    }
    for garbage in ["", "[1, 2", "null", "\u{0}", "{\"job\": "] {
        assert!(Instance::from_json(garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn owners_and_window_shape_the_caps() {
    let text = r#"{
        "job": {"name": "w", "shards": 10, "demand_per_shard": {"cpu_milli": 1000}, "limit_price": 50},
        "policy": {"alpha_ppm": 1000000, "beta_ppm": 500000, "window": {"total": 90, "by_owner": {"heavy": 48}}},
        "bids": [
            {"node": "h1", "owner": "heavy", "ask": 1, "capacity": {"cpu_milli": 10000}},
            {"node": "l1", "owner": "light", "ask": 9, "capacity": {"cpu_milli": 10000}, "max_capacity": {"cpu_milli": 4000}}
        ]}"#;
    let outcome = Instance::from_json(text).unwrap().clear().unwrap();
    let get = |name: &str| {
        outcome
            .owners
            .iter()
            .find(|o| o.owner == name)
            .unwrap()
            .clone()
    };
    // beta room: 50% of (90 + 10) = 50, less 48 used = 2.
    assert_eq!(get("heavy").cap, 2);
    assert_eq!(get("heavy").shards, 2);
    assert_eq!(get("heavy").binding, Binding::OwnerCap);
    // The certificate bounds light's node to 4 shards.
    assert_eq!(get("light").shards, 4);
    assert_eq!(get("light").binding, Binding::Capacity);
    assert_eq!(outcome.shortfall, 4);
    assert!(explain(&outcome).contains("network cap"));
}

#[test]
fn an_uncertified_node_is_never_shown_as_a_certified_owner_of_its_name() {
    // Owner "x" certifies node "a"; node "x" has no certificate (it is its
    // own owner). They are two owners and must print as two.
    let text = with_bids(
        r#"{"node": "a", "owner": "x", "ask": 5, "capacity": {"cpu_milli": 4000}},
           {"node": "x", "ask": 5, "capacity": {"cpu_milli": 4000}}"#,
    );
    let outcome = Instance::from_json(&text).unwrap().clear().unwrap();
    let mut names: Vec<&str> = outcome.owners.iter().map(|o| o.owner.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["x", "x (uncertified)"]);
}
