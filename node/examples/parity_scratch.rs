use fairgrid_kernels::data::builtin;
use fairgrid_kernels::*;

fn main() {
    let fm = builtin::fashion_mnist().unwrap();
    let spec = ModelSpec::fashion_mnist(Arch::LogReg);
    let args: Vec<String> = std::env::args().collect();
    let rounds: u32 = args[1].parse().unwrap();
    let h: u32 = args[2].parse().unwrap();
    let b: usize = args[3].parse().unwrap();
    let lr: f32 = args[4].parse().unwrap();
    let mom: f32 = args[5].parse().unwrap();
    for seed in 1..9u64 {
        let shards = fm.train.shards(625, seed).unwrap();
        let t0 = std::time::Instant::now();
        // distributed: 4 workers, 4 shards each
        let mut workers: Vec<Trainer<CpuBackend>> = (0..4)
            .map(|_| {
                Trainer::new(
                    CpuBackend::new(1).unwrap(),
                    &spec,
                    OptimizerConfig::sgd(lr, mom),
                    b,
                    seed,
                )
                .unwrap()
            })
            .collect();
        let mut comps: Vec<Compressor> = (0..4)
            .map(|_| Compressor::new(Compression::Int8 { block: 256 }).unwrap())
            .collect();
        let mut params = workers[0].params_flat().unwrap();
        for r in 0..rounds {
            let mut deltas = Vec::new();
            for w in 0..4 {
                let set = ShardSet::new(shards[w * 4..w * 4 + 4].iter().collect()).unwrap();
                let u = workers[w]
                    .train_local(&params, &set, h, lr, seed * 1000 + r as u64 * 10 + w as u64)
                    .unwrap();
                let bytes = comps[w].encode(&u.delta).unwrap();
                deltas.push((decode_update(&bytes, params.len()).unwrap(), u.samples));
            }
            let refs: Vec<(&[f32], u64)> = deltas.iter().map(|(d, s)| (d.as_slice(), *s)).collect();
            let mean = weighted_mean(&refs).unwrap();
            for (p, m) in params.iter_mut().zip(&mean) {
                *p += m;
            }
        }
        workers[0].set_params_flat(&params).unwrap();
        let dist = workers[0].evaluate(&fm.test).unwrap().accuracy;
        // single
        let mut single = Trainer::new(
            CpuBackend::new(1).unwrap(),
            &spec,
            OptimizerConfig::sgd(lr, mom),
            4 * b,
            seed,
        )
        .unwrap();
        let all = ShardSet::new(shards.iter().collect()).unwrap();
        let mut params = single.params_flat().unwrap();
        for r in 0..rounds {
            let u = single
                .train_local(&params, &all, h, lr, seed * 7777 + r as u64)
                .unwrap();
            for (p, m) in params.iter_mut().zip(&u.delta) {
                *p += m;
            }
        }
        single.set_params_flat(&params).unwrap();
        let one = single.evaluate(&fm.test).unwrap().accuracy;
        println!(
            "seed {seed}: dist {:.4} single {:.4} gap {:.2}pp  ({:?})",
            dist,
            one,
            (dist - one) * 100.0,
            t0.elapsed()
        );
    }
}
