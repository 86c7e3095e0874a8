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

/// Expands `test_device!(body)` into `mod body { #[test] fn cpu() .. }`.
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
        }
    };
}
