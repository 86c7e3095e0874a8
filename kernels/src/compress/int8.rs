//! int8 block quantisation with error feedback (host-side reference; the
//! CPU backend uses it directly and other backends must match it).
//!
//! Per block of `block` values: `scale = max|r| / 127`, `code = round(r /
//! scale)`, so each value is off by at most `scale / 2` after decoding. The
//! error is kept in a residual and added to the next update (error
//! feedback), so nothing is lost for good, only delayed.

use crate::error::{KernelError, Result};

pub fn blocks(len: usize, block: usize) -> usize {
    len.div_ceil(block)
}

pub(crate) fn check_block(block: usize) -> Result<()> {
    if block == 0 || block > 1 << 20 {
        return Err(KernelError::config(
            "int8 block size",
            format!("{block} is not in 1..=1048576"),
        ));
    }
    Ok(())
}

/// `residual += x`, then quantises the residual into `codes`/`scales` and
/// leaves the rounding error in `residual`.
pub fn quantize_ef(
    x: &[f32],
    residual: &mut [f32],
    block: usize,
    codes: &mut [i8],
    scales: &mut [f32],
) -> Result<()> {
    check_block(block)?;
    let len = x.len();
    if residual.len() != len || codes.len() != len || scales.len() != blocks(len, block) {
        return Err(KernelError::shape(
            "quantize_int8_ef",
            format!("{len} residuals and codes, {} scales", blocks(len, block)),
            format!(
                "{} residuals, {} codes, {} scales",
                residual.len(),
                codes.len(),
                scales.len()
            ),
        ));
    }
    for (b, scale_out) in scales.iter_mut().enumerate() {
        let range = b * block..((b + 1) * block).min(len);
        let r = &mut residual[range.clone()];
        let mut max = 0.0f32;
        for (rv, &xv) in r.iter_mut().zip(&x[range.clone()]) {
            *rv += xv;
            max = max.max(rv.abs());
            if !rv.is_finite() {
                return Err(KernelError::NonFinite {
                    what: format!("update element {}", range.start),
                    value: *rv,
                });
            }
        }
        let scale = max / 127.0;
        *scale_out = scale;
        let codes = &mut codes[range];
        if scale == 0.0 {
            codes.fill(0);
            continue;
        }
        // Divide rather than multiply by 1/scale: for a subnormal scale the
        // reciprocal overflows to infinity and 0 * inf would be NaN.
        for (c, rv) in codes.iter_mut().zip(r.iter_mut()) {
            let q = (*rv / scale).round().clamp(-127.0, 127.0);
            *c = q as i8;
            *rv -= q * scale;
        }
    }
    Ok(())
}

/// `out[i] = codes[i] * scales[i / block]`.
pub fn dequantize(codes: &[i8], scales: &[f32], block: usize, out: &mut [f32]) -> Result<()> {
    check_block(block)?;
    if out.len() != codes.len() || scales.len() != blocks(codes.len(), block) {
        return Err(KernelError::shape(
            "dequantize_int8",
            format!(
                "{} outputs, {} scales",
                codes.len(),
                blocks(codes.len(), block)
            ),
            format!("{} outputs, {} scales", out.len(), scales.len()),
        ));
    }
    for ((o, c), s) in out.chunks_mut(block).zip(codes.chunks(block)).zip(scales) {
        for (ov, &cv) in o.iter_mut().zip(c) {
            *ov = f32::from(cv) * s;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn error_is_at_most_half_a_step_per_element() {
        let mut rng = SplitMix64::new(5);
        let len = 1000;
        let block = 64;
        let x: Vec<f32> = (0..len).map(|_| rng.normal() as f32 * 0.01).collect();
        let mut residual = vec![0.0; len];
        let mut codes = vec![0i8; len];
        let mut scales = vec![0.0; blocks(len, block)];
        quantize_ef(&x, &mut residual, block, &mut codes, &mut scales).unwrap();
        let mut out = vec![0.0; len];
        dequantize(&codes, &scales, block, &mut out).unwrap();
        for i in 0..len {
            let scale = scales[i / block];
            assert!((x[i] - out[i]).abs() <= scale * 0.5 + 1e-9, "element {i}");
            // The residual holds exactly what was not sent.
            assert!((x[i] - out[i] - residual[i]).abs() < 1e-9);
        }
    }

    #[test]
    fn subnormal_blocks_stay_finite() {
        let x = [1e-41f32, -3e-42, 0.0, 5e-45];
        let mut r = [0.0f32; 4];
        let mut codes = [0i8; 4];
        let mut scales = [0.0f32; 1];
        quantize_ef(&x, &mut r, 4, &mut codes, &mut scales).unwrap();
        assert!(r.iter().all(|v| v.is_finite()), "{r:?}");
        assert_eq!(codes[0], 127);
    }

    #[test]
    fn zero_block_is_sent_as_zeros() {
        let x = [0.0f32; 10];
        let mut r = [0.0f32; 10];
        let mut codes = [1i8; 10];
        let mut scales = [1.0f32; 1];
        quantize_ef(&x, &mut r, 16, &mut codes, &mut scales).unwrap();
        assert_eq!(codes, [0; 10]);
        assert_eq!(scales, [0.0]);
    }

    #[test]
    fn nan_input_is_refused() {
        let x = [1.0, f32::NAN];
        let mut r = [0.0; 2];
        let mut codes = [0i8; 2];
        let mut scales = [0.0; 1];
        let err = quantize_ef(&x, &mut r, 2, &mut codes, &mut scales).unwrap_err();
        assert!(matches!(err, KernelError::NonFinite { .. }), "{err}");
    }
}
