//! int8 block quantisation with error feedback on the GPU (codes and
//! scales bit-equal to `compress::int8`), and dequantisation.

use super::memory::as_bytes;
use super::{CudaBackend, CudaBuf, check, count, launch};
use crate::compress::int8;
use crate::error::{KernelError, Result};

/// Threads per quantisation block (`QUANT_THREADS` in quant.cu).
const QUANT_THREADS: u32 = 256;

impl CudaBackend {
    pub(super) fn quantize(
        &self,
        x: &CudaBuf,
        residual: &mut CudaBuf,
        len: usize,
        block: usize,
        codes: &mut [i8],
        scales: &mut [f32],
    ) -> Result<()> {
        let op = "quantize_int8_ef";
        check(op, "buffer", x.len(), len)?;
        check(op, "buffer", residual.len(), len)?;
        if codes.len() != len {
            return Err(KernelError::shape(op, len, codes.len()));
        }
        int8::check_block(block)?;
        let blocks = int8::blocks(len, block);
        if scales.len() != blocks {
            return Err(KernelError::shape(
                op,
                format!("{len} residuals and codes, {blocks} scales"),
                format!("{} scales", scales.len()),
            ));
        }
        if len == 0 {
            return Ok(());
        }
        let (n, b) = (count(op, len)?, count(op, block)?);
        // Held until the results are on the host: the scratch is ours.
        let mut state = self.state();
        let codes_dev = self.grow(&mut state.codes, len)?.ptr();
        let scales_dev = self.grow(&mut state.scales, blocks)?.ptr();
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (count(op, blocks)?, 1, 1),
            block_dim: (QUANT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            quantize_int8_ef,
            cfg,
            [x.ptr(), residual.ptr(), n, b, codes_dev, scales_dev]
        )?;
        self.copy_out(codes_dev, codes)?;
        self.copy_out(scales_dev, scales)?;
        drop(state);
        if let Some(bad) = scales.iter().position(|s| s.is_nan()) {
            return Err(KernelError::NonFinite {
                what: format!("update element {}", bad * block),
                value: f32::NAN,
            });
        }
        Ok(())
    }

    pub(super) fn dequantize(
        &self,
        codes: &[i8],
        scales: &[f32],
        block: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let op = "dequantize_int8";
        check(op, "buffer", out.len(), codes.len())?;
        int8::check_block(block)?;
        let blocks = int8::blocks(codes.len(), block);
        if scales.len() != blocks {
            return Err(KernelError::shape(
                op,
                format!("{} outputs, {blocks} scales", codes.len()),
                format!("{} scales", scales.len()),
            ));
        }
        if codes.is_empty() {
            return Ok(());
        }
        let (n, b) = (count(op, codes.len())?, count(op, block)?);
        let mut state = self.state();
        let codes_dev = self.grow(&mut state.codes, codes.len())?.ptr();
        let scales_dev = self.grow(&mut state.scales, blocks)?.ptr();
        // SAFETY: i8 has the same size and alignment as u8.
        let code_bytes =
            unsafe { std::slice::from_raw_parts(codes.as_ptr() as *const u8, codes.len()) };
        self.copy_in(&mut state, code_bytes, codes_dev)?;
        self.copy_in(&mut state, as_bytes(scales), scales_dev)?;
        let launched = launch!(
            self,
            dequantize_int8,
            self.core.grid(codes.len()),
            [codes_dev, scales_dev, out.ptr(), n, b]
        );
        drop(state);
        launched
    }
}
