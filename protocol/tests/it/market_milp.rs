//! Exact optimality: on random small instances the clearing's total cost
//! equals the optimum of the MILP (solved by good_lp's microlp backend)
//!
//!   minimise   sum_i ask_i x_i + limit * r
//!   subject to sum_i x_i + r = M
//!              sum_{i of owner o} x_i <= C_o          for every owner o
//!              0 <= x_i <= k_i, x_i integer, r >= 0   (r: the reserve)

use crate::common;

use std::collections::BTreeMap;

use common::{Case, SMALL, case};
use fairgrid_protocol::OwnerId;
use fairgrid_protocol::market::owner_cap;
use good_lp::{Expression, Solution, SolverModel, constraint, microlp, variable, variables};

fn milp_optimum(c: &Case) -> f64 {
    let m = c.job.shards.len() as u32;
    let mut vars = variables!();
    let xs: Vec<_> = c
        .bids
        .iter()
        .map(|b| vars.add(variable().integer().min(0).max(c.units(b) as f64)))
        .collect();
    let reserve = vars.add(variable().min(0));
    let mut objective: Expression = reserve * c.job.limit_price as f64;
    let mut placed: Expression = reserve.into();
    let mut by_owner: BTreeMap<OwnerId, Expression> = BTreeMap::new();
    for (b, &x) in c.bids.iter().zip(&xs) {
        objective += x * b.ask as f64;
        placed += x;
        *by_owner.entry(b.owner).or_default() += x;
    }
    let mut problem = vars.minimise(objective.clone()).using(microlp);
    problem = problem.with(constraint!(placed == m as f64));
    for (owner, used) in by_owner {
        problem = problem.with(constraint!(used <= owner_cap(&c.policy, m, &owner) as f64));
    }
    let solution = problem
        .solve()
        .expect("the reserve makes the MILP feasible");
    solution.eval(&objective)
}

#[test]
fn greedy_cost_equals_the_milp_optimum() {
    let mut checked = 0;
    let mut with_binding_caps = 0;
    for seed in 0..260u64 {
        let c = case(seed, SMALL);
        let allocation = c.clear();
        let greedy = c.cost(&allocation) as f64;
        let optimum = milp_optimum(&c);
        assert!(
            (greedy - optimum).abs() < 1e-6,
            "seed {seed}: greedy {greedy} vs MILP {optimum} for {c:?}"
        );
        checked += 1;
        if c.capped_supply() < c.bids.iter().map(|b| c.units(b)).sum::<u64>() {
            with_binding_caps += 1;
        }
    }
    assert!(checked >= 200);
    // The instances must exercise the caps, or the test proves little.
    assert!(
        with_binding_caps >= 50,
        "only {with_binding_caps} instances had binding caps"
    );
}
