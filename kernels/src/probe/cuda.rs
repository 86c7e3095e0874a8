//! The CUDA side of the probe: are the driver, NVRTC and cuBLAS loadable,
//! with versions that work together, and what does each GPU measure.
//!
//! Order matters: cudarc panics when a function's library is missing, so
//! each library is loaded here (with the same file names cudarc tries)
//! before any of its functions is called.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cudarc::driver::{result as driver, sys as driver_sys};

use super::{CudaLibraries, CudaUnavailable, GpuReport};
use crate::backend::cuda::CudaBackend;
use crate::backend::{Backend, GemmSpec};

/// Oldest CUDA major version the kernels and cudarc's bindings accept.
const MIN_CUDA_MAJOR: i32 = 12;

pub(super) fn libraries() -> Result<CudaLibraries, CudaUnavailable> {
    static CHECKED: OnceLock<Result<CudaLibraries, CudaUnavailable>> = OnceLock::new();
    CHECKED.get_or_init(check_libraries).clone()
}

/// Symbols fairgrid needs from each library; one missing means the
/// library is too old (or not the real one).
const DRIVER_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuDriverGetVersion",
    "cuModuleLoadData",
    "cuLaunchKernel",
    "cuMemAllocAsync",
];
const NVRTC_SYMBOLS: &[&str] = &["nvrtcVersion", "nvrtcCompileProgram", "nvrtcGetCUBIN"];
const CUBLAS_SYMBOLS: &[&str] = &[
    "cublasGetProperty",
    "cublasSgemm_v2",
    "cublasSgemv_v2",
    "cublasSetWorkspace_v2",
    "cublasSetMathMode",
];

/// Why a library could not be used.
#[derive(Debug)]
enum LoadFailure {
    /// No candidate file loaded; the most telling loader message.
    NotLoaded(String),
    /// It loaded but lacks a symbol.
    MissingSymbol { file: String, symbol: &'static str },
}

/// Loads the first of the file names cudarc tries for `names` (cudarc will
/// pick the same one) and checks that it has `symbols`.
fn loadable(names: &[&str], symbols: &[&'static str]) -> Result<(), LoadFailure> {
    let candidates: Vec<String> = names
        .iter()
        .flat_map(|name| cudarc::get_lib_name_candidates(name))
        .collect();
    let mut telling = None;
    for candidate in &candidates {
        // SAFETY: loading a shared library runs its initialisers; these are
        // NVIDIA's libraries, the same ones cudarc would load.
        match unsafe { libloading::Library::new(candidate) } {
            Ok(library) => {
                for &symbol in symbols {
                    // SAFETY: only looks the symbol up; it is never called.
                    if unsafe { library.get::<*const ()>(symbol.as_bytes()) }.is_err() {
                        return Err(LoadFailure::MissingSymbol {
                            file: candidate.clone(),
                            symbol,
                        });
                    }
                }
                return Ok(());
            }
            Err(error) => {
                // The loader's own message is in the source ("dlopen failed"
                // alone says nothing).
                let text = std::error::Error::source(&error)
                    .map_or_else(|| error.to_string(), |s| s.to_string());
                if !text.contains("No such file") || !text.contains(candidate.as_str()) {
                    telling.get_or_insert(text);
                }
            }
        }
    }
    Err(LoadFailure::NotLoaded(telling.unwrap_or_else(|| {
        // The names a Linux install has: lib<name>.so and lib<name>.so.N.
        let usual: Vec<&str> = candidates
            .iter()
            .map(String::as_str)
            .filter(|c| !c.contains("64") && !c.contains("32"))
            .take(4)
            .collect();
        format!("none of {} is on the library path", usual.join(", "))
    })))
}

/// Maps a load failure to the reason CUDA is unavailable: not found is
/// `absent`, a missing symbol is a wrong (too old) version.
fn unavailable(failure: LoadFailure, absent: fn(String) -> CudaUnavailable) -> CudaUnavailable {
    match failure {
        LoadFailure::NotLoaded(why) => absent(why),
        LoadFailure::MissingSymbol { file, symbol } => CudaUnavailable::WrongVersion(format!(
            "{file} has no {symbol}: it is too old (or not NVIDIA's library)"
        )),
    }
}

fn version_pair(v: i32) -> (i32, i32) {
    (v / 1000, (v % 1000) / 10)
}

fn check_libraries() -> Result<CudaLibraries, CudaUnavailable> {
    loadable(&["cuda", "nvcuda"], DRIVER_SYMBOLS)
        .map_err(|f| unavailable(f, CudaUnavailable::NoDriver))?;
    // SAFETY: only tries to dlopen the library.
    if !unsafe { driver_sys::is_culib_present() } {
        return Err(CudaUnavailable::NoDriver("libcuda did not load".into()));
    }
    driver::init()
        .map_err(|e| CudaUnavailable::NoDevice(format!("the driver failed to initialise ({e})")))?;
    let mut raw = 0;
    // SAFETY: the driver library is loaded and initialised.
    unsafe { driver_sys::cuDriverGetVersion(&mut raw) }
        .result()
        .map_err(|e| CudaUnavailable::NoDevice(format!("cuDriverGetVersion failed ({e})")))?;
    let driver_version = version_pair(raw);
    let device_count = driver::device::get_count()
        .map_err(|e| CudaUnavailable::NoDevice(format!("cuDeviceGetCount failed ({e})")))?;
    if device_count <= 0 {
        return Err(CudaUnavailable::NoDevice("the driver sees no GPU".into()));
    }

    loadable(&["nvrtc"], NVRTC_SYMBOLS).map_err(|f| unavailable(f, CudaUnavailable::NoNvrtc))?;
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaUnavailable::NoNvrtc("libnvrtc did not load".into()));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded; nvrtcVersion only writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaUnavailable::NoNvrtc(format!("nvrtcVersion failed ({e})")))?;
    let nvrtc = (major, minor);

    loadable(&["cublas"], CUBLAS_SYMBOLS).map_err(|f| unavailable(f, CudaUnavailable::NoCublas))?;
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(CudaUnavailable::NoCublas("libcublas did not load".into()));
    }
    let cublas = cublas_version()
        .map_err(|e| CudaUnavailable::NoCublas(format!("cublasGetProperty failed ({e})")))?;

    check_versions(driver_version, nvrtc, cublas)?;
    Ok(CudaLibraries {
        driver: driver_version,
        nvrtc,
        cublas,
        device_count: device_count as usize,
    })
}

fn cublas_version() -> Result<(i32, i32), cudarc::cublas::result::CublasError> {
    use cudarc::cublas::sys::{cublasGetProperty, libraryPropertyType};
    let (mut major, mut minor) = (0, 0);
    // SAFETY: cuBLAS is loaded; cublasGetProperty only writes one int.
    unsafe {
        cublasGetProperty(libraryPropertyType::MAJOR_VERSION, &mut major).result()?;
        cublasGetProperty(libraryPropertyType::MINOR_VERSION, &mut minor).result()?;
    }
    Ok((major, minor))
}

/// The rules: CUDA 12 or newer everywhere, and neither NVRTC nor cuBLAS
/// from a newer major CUDA version than the driver supports (the driver
/// could not load NVRTC's code, and cuBLAS would refuse to start).
pub(crate) fn check_versions(
    driver: (i32, i32),
    nvrtc: (i32, i32),
    cublas: (i32, i32),
) -> Result<(), CudaUnavailable> {
    let wrong = |why: String| Err(CudaUnavailable::WrongVersion(why));
    if driver.0 < MIN_CUDA_MAJOR {
        return wrong(format!(
            "the driver supports CUDA {}.{}; fairgrid needs CUDA {MIN_CUDA_MAJOR}.0 or newer \
             (update the NVIDIA driver)",
            driver.0, driver.1
        ));
    }
    if nvrtc.0 < MIN_CUDA_MAJOR {
        return wrong(format!(
            "NVRTC {}.{} is older than CUDA {MIN_CUDA_MAJOR}",
            nvrtc.0, nvrtc.1
        ));
    }
    if cublas.0 < MIN_CUDA_MAJOR {
        return wrong(format!(
            "cuBLAS {}.{} is older than CUDA {MIN_CUDA_MAJOR}",
            cublas.0, cublas.1
        ));
    }
    if nvrtc.0 > driver.0 {
        return wrong(format!(
            "NVRTC {}.{} is newer than the driver's CUDA {}.{}, which cannot load its code: \
             update the driver or use NVRTC {}.x",
            nvrtc.0, nvrtc.1, driver.0, driver.1, driver.0
        ));
    }
    if cublas.0 > driver.0 {
        return wrong(format!(
            "cuBLAS {}.{} needs a newer driver than this one (CUDA {}.{}): update the driver \
             or use cuBLAS {}.x",
            cublas.0, cublas.1, driver.0, driver.1, driver.0
        ));
    }
    Ok(())
}

pub(super) fn gpus(
    gemm_size: usize,
    budget: Duration,
) -> Result<(CudaLibraries, Vec<GpuReport>), CudaUnavailable> {
    let libraries = libraries()?;
    let reports = (0..libraries.device_count)
        .map(|ordinal| report(ordinal, gemm_size, budget))
        .collect();
    Ok((libraries, reports))
}

fn report(ordinal: usize, gemm_size: usize, budget: Duration) -> GpuReport {
    match CudaBackend::new(ordinal) {
        Ok(backend) => {
            let (sgemm_gflops, error) = if gemm_size == 0 {
                (None, None)
            } else {
                match sgemm_gflops(&backend, gemm_size, budget) {
                    Ok(g) => (Some(g), None),
                    Err(e) => (None, Some(format!("SGEMM benchmark failed: {e}"))),
                }
            };
            GpuReport {
                ordinal,
                name: backend.device_name().to_string(),
                memory_bytes: backend.total_memory() as u64,
                compute_capability: backend.compute_capability(),
                sgemm_gflops,
                error,
            }
        }
        Err(error) => {
            let device = driver::device::get(ordinal as i32).ok();
            GpuReport {
                ordinal,
                name: device
                    .and_then(|d| driver::device::get_name(d).ok())
                    .unwrap_or_else(|| "unknown".into()),
                // SAFETY: `d` is a valid device handle from cuDeviceGet.
                memory_bytes: device
                    .and_then(|d| unsafe { driver::device::total_mem(d) }.ok())
                    .unwrap_or(0) as u64,
                compute_capability: (0, 0),
                sgemm_gflops: None,
                error: Some(error.to_string()),
            }
        }
    }
}

/// cuBLAS SGEMM throughput for `n x n x n` products on `backend`, in
/// GFLOP/s: two warm-up products, then as many as fit in `budget`, timed
/// from the host around a synchronised batch.
pub fn sgemm_gflops(backend: &CudaBackend, n: usize, budget: Duration) -> crate::Result<f64> {
    let len = n * n;
    let mut a = backend.alloc(len)?;
    let mut b = backend.alloc(len)?;
    let mut c = backend.alloc(len)?;
    backend.fill(&mut a, len, 0.5)?;
    backend.fill(&mut b, len, 0.25)?;
    let spec = GemmSpec::new(n, n, n);
    for _ in 0..2 {
        backend.gemm(spec, &a, &b, &mut c)?;
    }
    backend.synchronize()?;
    let flops_per = 2.0 * (n as f64).powi(3);
    // Batches of about 20 ms, so the timing overhead stays negligible.
    let start = Instant::now();
    backend.gemm(spec, &a, &b, &mut c)?;
    backend.synchronize()?;
    let one = start.elapsed().as_secs_f64().max(1e-6);
    let per_batch = ((0.02 / one).ceil() as usize).clamp(1, 1000);
    let start = Instant::now();
    let mut runs = 0usize;
    while runs == 0 || start.elapsed() < budget {
        for _ in 0..per_batch {
            backend.gemm(spec, &a, &b, &mut c)?;
        }
        backend.synchronize()?;
        runs += per_batch;
    }
    Ok(flops_per * runs as f64 / start.elapsed().as_secs_f64() / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rules() {
        // Only major versions must agree: minor releases are compatible.
        assert!(check_versions((13, 0), (13, 0), (13, 1)).is_ok());
        assert!(check_versions((13, 1), (13, 0), (13, 1)).is_ok());
        assert!(check_versions((12, 4), (12, 9), (12, 9)).is_ok());
        let old = check_versions((11, 8), (11, 8), (11, 8)).unwrap_err();
        assert!(
            old.to_string().contains("update the NVIDIA driver"),
            "{old}"
        );
        let newer = check_versions((12, 8), (13, 0), (12, 8)).unwrap_err();
        assert!(
            newer.to_string().contains("newer than the driver"),
            "{newer}"
        );
        assert!(check_versions((13, 0), (13, 0), (12, 9)).is_ok());
    }

    #[test]
    fn missing_libraries_are_reported_not_panicked() {
        match loadable(&["fairgrid-no-such-library"], &[]).unwrap_err() {
            LoadFailure::NotLoaded(why) => {
                assert!(why.contains("libfairgrid-no-such-library.so"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // libc is loadable but has no CUDA symbols: a wrong version.
        let c_lib = ["c"];
        if let Err(failure) = loadable(&c_lib, &["cuInit"]) {
            let why = unavailable(failure, CudaUnavailable::NoDriver).to_string();
            assert!(why.contains("no cuInit") || why.contains("libc"), "{why}");
        }
        // Whatever this machine has, asking never panics.
        match libraries() {
            Ok(libs) => assert!(libs.device_count > 0),
            Err(why) => assert!(!why.to_string().is_empty()),
        }
    }
}
