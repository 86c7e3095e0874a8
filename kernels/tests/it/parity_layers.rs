//! The CUDA backend against the CPU backend for the declared
//! architectures' ops: GELU and tanh, dropout (the same mask bit for bit),
//! average pooling and batch normalisation. Without a usable GPU every
//! test prints why and passes (see parity.rs).
#![cfg(feature = "cuda")]

use crate::parity::{assert_close, down, pair, poisoned, randn, up};
use fairgrid_kernels::Result;
use fairgrid_kernels::backend::{Activation, Backend, DropoutMask, NormGeometry, PoolGeometry};

const TOL: f64 = 1e-5;

fn smooth_on<B: Backend>(be: &B, kind: Activation, x: &[f32], dy: &[f32]) -> Result<[Vec<f32>; 2]> {
    let n = x.len();
    let xb = up(be, x)?;
    let mut y = poisoned(be, n)?;
    be.activation_forward(kind, &xb, &mut y, n)?;
    let mut dx = poisoned(be, n)?;
    be.activation_backward(kind, &xb, &y, &up(be, dy)?, &mut dx, n)?;
    Ok([down(be, &y, n, true)?, down(be, &dx, n, true)?])
}

fn dropout_on<B: Backend>(be: &B, mask: &DropoutMask, x: &[f32]) -> Result<Vec<f32>> {
    let mut y = poisoned(be, x.len())?;
    be.dropout(mask, &up(be, x)?, &mut y, x.len())?;
    down(be, &y, x.len(), true)
}

#[test]
fn smooth_activations_and_dropout_match_cpu() -> Result<()> {
    let Some(mut p) = pair("smooth_activations_and_dropout_match_cpu") else {
        return Ok(());
    };
    let n = 100_003;
    let x = randn(&mut p.rng, n, 3.0);
    let dy = randn(&mut p.rng, n, 1.0);
    for kind in [Activation::Gelu, Activation::Tanh] {
        let cpu = smooth_on(&p.cpu, kind, &x, &dy)?;
        let gpu = smooth_on(&p.gpu, kind, &x, &dy)?;
        assert_close(&format!("{kind:?} forward"), &gpu[0], &cpu[0], TOL);
        assert_close(&format!("{kind:?} backward"), &gpu[1], &cpu[1], TOL);
    }
    let mask = DropoutMask {
        seed: 0xfeed,
        threshold: 1 << 23,
        scale: 2.0,
    };
    assert_eq!(
        dropout_on(&p.gpu, &mask, &x)?,
        dropout_on(&p.cpu, &mask, &x)?
    );
    Ok(())
}

fn avgpool_on<B: Backend>(
    be: &B,
    g: &PoolGeometry,
    x: &[f32],
    dy: &[f32],
) -> Result<[Vec<f32>; 2]> {
    let mut y = poisoned(be, g.output_len())?;
    be.avgpool_forward(g, &up(be, x)?, &mut y)?;
    let mut dx = poisoned(be, g.input_len())?;
    be.avgpool_backward(g, &up(be, dy)?, &mut dx)?;
    Ok([
        down(be, &y, g.output_len(), true)?,
        down(be, &dx, g.input_len(), true)?,
    ])
}

#[test]
fn avgpool_matches_cpu() -> Result<()> {
    let Some(mut p) = pair("avgpool_matches_cpu") else {
        return Ok(());
    };
    for (batch, in_h, in_w, channels, kernel, stride) in [
        (8, 28, 28, 32, 2, 2),
        (3, 9, 11, 5, 3, 2),
        (2, 6, 6, 3, 3, 1),
        (4, 8, 8, 64, 8, 8),
    ] {
        let g = PoolGeometry {
            batch,
            in_h,
            in_w,
            channels,
            kernel,
            stride,
        };
        let x = randn(&mut p.rng, g.input_len(), 1.0);
        let dy = randn(&mut p.rng, g.output_len(), 1.0);
        let cpu = avgpool_on(&p.cpu, &g, &x, &dy)?;
        let gpu = avgpool_on(&p.gpu, &g, &x, &dy)?;
        assert_close(&format!("avgpool {g:?}"), &gpu[0], &cpu[0], TOL);
        assert_close(&format!("avgpool backward {g:?}"), &gpu[1], &cpu[1], TOL);
    }
    Ok(())
}

/// Train forward (output, running mean and variance), backward (dgamma,
/// dbeta, dx) and eval forward.
fn batchnorm_on<B: Backend>(
    be: &B,
    g: &NormGeometry,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> Result<Vec<Vec<f32>>> {
    let (c, n) = (g.channels, g.len());
    let (xb, gb, bb) = (up(be, x)?, up(be, gamma)?, up(be, beta)?);
    let mut rm = up(be, &vec![0.5; c])?;
    let mut rv = up(be, &vec![2.0; c])?;
    let mut mean = poisoned(be, c)?;
    let mut invstd = poisoned(be, c)?;
    let mut y = poisoned(be, n)?;
    be.batchnorm_forward_train(
        g,
        &xb,
        &gb,
        &bb,
        &mut rm,
        &mut rv,
        &mut mean,
        &mut invstd,
        &mut y,
    )?;
    let mut dgamma = poisoned(be, c)?;
    let mut dbeta = poisoned(be, c)?;
    let mut dx = poisoned(be, n)?;
    let dyb = up(be, dy)?;
    be.batchnorm_backward(
        g,
        &xb,
        &dyb,
        &gb,
        &mean,
        &invstd,
        &mut dgamma,
        &mut dbeta,
        Some(&mut dx),
    )?;
    let mut y_eval = poisoned(be, n)?;
    be.batchnorm_forward_eval(g, &xb, &gb, &bb, &rm, &rv, &mut y_eval)?;
    Ok(vec![
        down(be, &y, n, true)?,
        down(be, &rm, c, false)?,
        down(be, &rv, c, false)?,
        down(be, &dgamma, c, true)?,
        down(be, &dbeta, c, true)?,
        down(be, &dx, n, true)?,
        down(be, &y_eval, n, true)?,
    ])
}

#[test]
fn batchnorm_matches_cpu() -> Result<()> {
    let Some(mut p) = pair("batchnorm_matches_cpu") else {
        return Ok(());
    };
    for (rows, channels) in [(8 * 28 * 28, 32), (64, 300), (3, 5), (70_000, 3)] {
        let g = NormGeometry {
            rows,
            channels,
            eps: 1e-5,
            momentum: 0.1,
        };
        let x = randn(&mut p.rng, g.len(), 2.0);
        let dy = randn(&mut p.rng, g.len(), 1.0);
        let gamma = randn(&mut p.rng, channels, 1.0);
        let beta = randn(&mut p.rng, channels, 1.0);
        let cpu = batchnorm_on(&p.cpu, &g, &x, &dy, &gamma, &beta)?;
        let gpu = batchnorm_on(&p.gpu, &g, &x, &dy, &gamma, &beta)?;
        let names = [
            "y",
            "running mean",
            "running var",
            "dgamma",
            "dbeta",
            "dx",
            "eval y",
        ];
        for ((name, got), want) in names.iter().zip(&gpu).zip(&cpu) {
            assert_close(
                &format!("batchnorm {name} {rows}x{channels}"),
                got,
                want,
                1e-4,
            );
        }
    }
    Ok(())
}
