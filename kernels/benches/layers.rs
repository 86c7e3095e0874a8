//! Bench binary: time of each CNN op at batch 64 and its GFLOP/s, to see
//! where a training step goes. Prints a table.
//! `cargo bench -p fairgrid-kernels --bench layers -- [threads]`

use std::time::Instant;

use fairgrid_kernels::CpuBackend;
use fairgrid_kernels::backend::{Backend, Conv2dGeometry, PoolGeometry};

fn time_ms(mut f: impl FnMut()) -> f64 {
    f();
    // Best of several runs: the machine is shared.
    (0..15)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let threads: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1);
    let be = CpuBackend::new(threads).unwrap();
    let n = 64;
    println!("| op (batch {n}, {threads} threads) | ms | GFLOP/s |");
    println!("|---|---|---|");
    let convs = [(28, 1, 32), (14, 32, 64), (7, 64, 128)];
    for (i, (hw, cin, cout)) in convs.into_iter().enumerate() {
        let g = Conv2dGeometry {
            batch: n,
            in_h: hw,
            in_w: hw,
            in_c: cin,
            out_c: cout,
            kernel: 3,
            stride: 1,
            pad: 1,
        };
        let x = vec![0.5f32; g.input_len()];
        let w = vec![0.01f32; g.weight_len()];
        let b = vec![0.0f32; cout];
        let mut y = vec![0.0f32; g.output_len()];
        let flops = 2.0 * (g.output_len() * g.patch_len()) as f64;
        let ms = time_ms(|| be.conv2d_forward(&g, &x, &w, &b, &mut y).unwrap());
        println!(
            "| conv{} forward | {ms:.2} | {:.1} |",
            i + 1,
            flops / ms / 1e6
        );
        let (mut dw, mut db, mut dx) = (
            vec![0.0f32; w.len()],
            vec![0.0f32; cout],
            vec![0.0f32; x.len()],
        );
        let ms = time_ms(|| {
            be.conv2d_backward(&g, &x, &w, &y, &mut dw, &mut db, None)
                .unwrap()
        });
        println!(
            "| conv{} backward, weights only | {ms:.2} | {:.1} |",
            i + 1,
            flops / ms / 1e6
        );
        let ms = time_ms(|| {
            be.conv2d_backward(&g, &x, &w, &y, &mut dw, &mut db, Some(&mut dx))
                .unwrap()
        });
        println!(
            "| conv{} backward, weights + input | {ms:.2} | {:.1} |",
            i + 1,
            2.0 * flops / ms / 1e6
        );
        let p = PoolGeometry {
            batch: n,
            in_h: hw,
            in_w: hw,
            channels: cout,
            kernel: 2,
            stride: 2,
        };
        let mut py = vec![0.0f32; p.output_len()];
        let mut arg = vec![0u32; p.output_len()];
        let ms = time_ms(|| be.maxpool_forward(&p, &y, &mut py, &mut arg).unwrap());
        println!("| pool{} forward | {ms:.2} | |", i + 1);
        let ms = time_ms(|| be.maxpool_backward(&p, &py, &arg, &mut y).unwrap());
        println!("| pool{} backward | {ms:.2} | |", i + 1);
        let mut r = vec![0.0f32; p.output_len()];
        let ms = time_ms(|| be.relu_forward(&py, &mut r, p.output_len()).unwrap());
        println!("| relu{} forward | {ms:.3} | |", i + 1);
    }
}
