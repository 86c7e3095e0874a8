//! Device buffers with memory accounting, and the pinned staging ring that
//! lets uploads run asynchronously.
//!
//! Every allocation the backend makes (tensors, scratch, cuBLAS workspace)
//! is counted, so [`super::CudaBackend::memory`] reports the current and
//! peak device memory the same way PyTorch's `max_memory_allocated` does.
//!
//! Copies from ordinary (pageable) host memory make the CUDA driver wait
//! for the stream to drain first. Uploads therefore go through a ring of
//! pinned host slots: the host copies into a slot, queues an asynchronous
//! transfer and records an event; a slot is reused only once its event
//! has passed, which in steady state is long ago.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DeviceRepr, ValidAsZeroBits, result, sys};

use super::cuda_error;
use crate::error::Result;

/// Current and peak bytes allocated by one backend.
#[derive(Debug, Default)]
pub struct MemStats {
    current: AtomicUsize,
    peak: AtomicUsize,
}

impl MemStats {
    fn add(&self, bytes: usize) {
        let now = self.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.current.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak measurement from the current usage.
    pub fn reset_peak(&self) {
        self.peak.store(self.current(), Ordering::Relaxed);
    }
}

/// A device allocation of `len` elements of `T`, counted in [`MemStats`].
pub struct DeviceBuf<T> {
    slice: CudaSlice<T>,
    len: usize,
    mem: Arc<MemStats>,
}

impl<T: DeviceRepr + ValidAsZeroBits> DeviceBuf<T> {
    /// A zero-filled buffer. Zero-length buffers hold one element, so every
    /// buffer has a valid device address.
    pub(crate) fn zeros(stream: &Arc<CudaStream>, len: usize, mem: &Arc<MemStats>) -> Result<Self> {
        let slice = stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(|e| cuda_error("allocating device memory", e))?;
        mem.add(slice.num_bytes());
        Ok(DeviceBuf {
            slice,
            len,
            mem: mem.clone(),
        })
    }
}

impl<T> DeviceBuf<T> {
    /// Elements the buffer was asked to hold.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address, for kernel arguments and library calls.
    pub(crate) fn ptr(&self) -> u64 {
        let (ptr, _no_event) = self.slice.device_ptr(self.slice.stream());
        ptr
    }
}

impl<T> Drop for DeviceBuf<T> {
    fn drop(&mut self) {
        self.mem.sub(self.slice.num_bytes());
    }
}

impl<T> std::fmt::Debug for DeviceBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuf {{ len: {} }}", self.len)
    }
}

/// Bytes per pinned staging slot; larger uploads are copied directly.
pub(crate) const STAGING_SLOT_BYTES: usize = 1 << 20;
/// Each step uses two slots (images, labels), so the host can run about
/// four steps ahead of the device's copies before it waits for a slot.
const STAGING_SLOTS: usize = 8;

struct Slot {
    host: *mut u8,
    event: sys::CUevent,
    pending: bool,
}

/// The ring of pinned upload slots (see the module docs).
pub(crate) struct Staging {
    slots: Vec<Slot>,
    next: usize,
    stream: Arc<CudaStream>,
}

// SAFETY: the raw pointers are pinned host allocations and events owned by
// this value; the backend only touches them under its mutex.
unsafe impl Send for Staging {}

impl Staging {
    pub(crate) fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| cuda_error("binding the context", e))?;
        let mut slots = Vec::with_capacity(STAGING_SLOTS);
        for _ in 0..STAGING_SLOTS {
            // SAFETY: a plain pinned allocation, freed in Drop.
            let host = unsafe { result::malloc_host(STAGING_SLOT_BYTES, 0) }
                .map_err(|e| cuda_error("allocating pinned host memory", e))?
                as *mut u8;
            let event = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                .map_err(|e| cuda_error("creating an event", e))?;
            slots.push(Slot {
                host,
                event,
                pending: false,
            });
        }
        Ok(Staging {
            slots,
            next: 0,
            stream: stream.clone(),
        })
    }

    /// Queues a copy of `bytes` (at most [`STAGING_SLOT_BYTES`]) to device
    /// address `dst`; returns without waiting for it.
    pub(crate) fn upload(&mut self, bytes: &[u8], dst: u64) -> Result<()> {
        debug_assert!(bytes.len() <= STAGING_SLOT_BYTES);
        let index = self.next;
        self.next = (index + 1) % self.slots.len();
        let slot = &mut self.slots[index];
        if slot.pending {
            // SAFETY: the event was created by us and is live.
            unsafe { result::event::synchronize(slot.event) }
                .map_err(|e| cuda_error("waiting for a staging slot", e))?;
        }
        // SAFETY: the slot holds STAGING_SLOT_BYTES and its previous copy
        // has finished (event above); `dst` is a live device buffer of at
        // least `bytes.len()` bytes (checked by the caller).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), slot.host, bytes.len());
            let pinned = std::slice::from_raw_parts(slot.host, bytes.len());
            result::memcpy_htod_async(dst, pinned, self.stream.cu_stream())
                .map_err(|e| cuda_error("copying to the device", e))?;
            result::event::record(slot.event, self.stream.cu_stream())
                .map_err(|e| cuda_error("recording an event", e))?;
        }
        slot.pending = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self.stream.context().bind_to_thread();
        for slot in &self.slots {
            // SAFETY: our own event and pinned allocation; the event is
            // waited for before the memory goes back.
            unsafe {
                let _ = result::event::synchronize(slot.event);
                let _ = result::event::destroy(slot.event);
                let _ = result::free_host(slot.host as *mut std::ffi::c_void);
            }
        }
    }
}

/// Views `values` as bytes (for uploads of f32 and u32).
pub(crate) fn as_bytes<T: DeviceRepr>(values: &[T]) -> &[u8] {
    // SAFETY: DeviceRepr types are plain old data with no padding.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}
