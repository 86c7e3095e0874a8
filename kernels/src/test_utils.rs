//! Helpers for tests that must run on every backend.
//!
//! [`test_device!`](crate::test_device) turns one generic test body,
//! `fn name<B: Backend>(backend: &B) -> Result<()>`, into a module of
//! `#[test]`s, one per backend compiled in: `name::cpu` always (with two
//! threads, so the parallel paths run), and further backends (CUDA) when
//! their feature is on; those skip with a printed reason when no device is
//! present.

use crate::backend::cpu::CpuBackend;

/// The CPU backend the device tests run on.
pub fn cpu_backend() -> CpuBackend {
    CpuBackend::new(2).expect("two CPU threads")
}

/// The CUDA backend on GPU 0, or `None` after printing why the CUDA case
/// of `test` is skipped (no driver, no GPU, no NVRTC or cuBLAS, wrong
/// versions).
#[cfg(feature = "cuda")]
pub fn cuda_backend(test: &str) -> Option<crate::backend::cuda::CudaBackend> {
    cuda_backend_with(test, crate::backend::cuda::CudaOptions::default())
}

/// [`cuda_backend`] with options (TF32).
#[cfg(feature = "cuda")]
pub fn cuda_backend_with(
    test: &str,
    options: crate::backend::cuda::CudaOptions,
) -> Option<crate::backend::cuda::CudaBackend> {
    if let Err(why) = crate::probe::cuda_libraries() {
        eprintln!("skipping {test} on cuda: {why}");
        return None;
    }
    // The libraries are there: a failure now is a real error.
    match crate::backend::cuda::CudaBackend::with_options(0, options) {
        Ok(backend) => Some(backend),
        Err(error) => panic!("{test}: CUDA libraries present but the backend failed: {error}"),
    }
}

/// Expands `test_device!(body)` into `mod body { #[test] fn cpu() .. }`,
/// plus `fn cuda()` when the `cuda` feature is on.
#[macro_export]
macro_rules! test_device {
    ($name:ident) => {
        mod $name {
            #[test]
            fn cpu() {
                let backend = $crate::test_utils::cpu_backend();
                if let Err(error) = super::$name(&backend) {
                    panic!("{} on {}: {error}", stringify!($name), "cpu");
                }
            }

            $crate::test_device_cuda!($name);
        }
    };
}

/// The CUDA arm of [`test_device!`](crate::test_device).
#[cfg(feature = "cuda")]
#[macro_export]
#[doc(hidden)]
macro_rules! test_device_cuda {
    ($name:ident) => {
        #[test]
        fn cuda() {
            let Some(backend) = $crate::test_utils::cuda_backend(stringify!($name)) else {
                return;
            };
            if let Err(error) = super::$name(&backend) {
                panic!("{} on {}: {error}", stringify!($name), "cuda");
            }
        }
    };
}

/// Without the `cuda` feature there is no CUDA arm.
#[cfg(not(feature = "cuda"))]
#[macro_export]
#[doc(hidden)]
macro_rules! test_device_cuda {
    ($name:ident) => {};
}
