//! Choosing the device to train on: `--device cpu|cuda|auto`.
//!
//! `auto` takes GPU 0 when CUDA is usable and otherwise falls back to the
//! CPU with one log line saying why; `cuda` refuses to fall back.

use crate::error::{KernelError, Result};
use crate::probe::{CudaUnavailable, cuda_libraries};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePreference {
    Auto,
    Cpu,
    Cuda,
}

/// Where training will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU; with the reason CUDA was not used when `auto` fell back.
    Cpu {
        cuda_unavailable: Option<CudaUnavailable>,
    },
    /// A GPU.
    Cuda { ordinal: usize },
}

/// Resolves `preference` on this machine (probing CUDA's libraries, never
/// panicking when they are missing).
pub fn choose_device(preference: DevicePreference) -> Result<DeviceChoice> {
    match preference {
        DevicePreference::Cpu => Ok(DeviceChoice::Cpu {
            cuda_unavailable: None,
        }),
        DevicePreference::Cuda => match cuda_libraries() {
            Ok(_) => Ok(DeviceChoice::Cuda { ordinal: 0 }),
            Err(why) => Err(KernelError::CudaUnavailable(why)),
        },
        DevicePreference::Auto => match cuda_libraries() {
            Ok(_) => Ok(DeviceChoice::Cuda { ordinal: 0 }),
            Err(why) => {
                tracing::warn!(
                    target: "fairgrid::kernels",
                    reason = %why,
                    "CUDA not usable; training on the CPU"
                );
                Ok(DeviceChoice::Cpu {
                    cuda_unavailable: Some(why),
                })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available_and_auto_never_fails() {
        assert_eq!(
            choose_device(DevicePreference::Cpu).unwrap(),
            DeviceChoice::Cpu {
                cuda_unavailable: None
            }
        );
        match choose_device(DevicePreference::Auto).unwrap() {
            DeviceChoice::Cuda { ordinal } => assert_eq!(ordinal, 0),
            DeviceChoice::Cpu { cuda_unavailable } => {
                let why = cuda_unavailable.expect("auto says why it fell back");
                // `cuda` must then refuse, with the same reason.
                let err = choose_device(DevicePreference::Cuda).unwrap_err();
                assert!(err.to_string().contains(&why.to_string()), "{err}");
            }
        }
    }
}
