//! The process's memory: the set-up of the two allocators in it, giving memory back
//! when streams end, and what each holds (for `/metrics`).
//!
//! The Rust code allocates from jemalloc (the global allocator, with its background
//! threads returning freed pages); GStreamer, GLib and x264 allocate from glibc's
//! `malloc`. Measured with churning publishers (README, "Memory"), glibc's allocator kept
//! most of what the pipelines had used: a thread that allocates gets an arena of its own
//! (up to eight per core), and the freed memory in an arena stays with the process; and
//! pictures, once glibc has raised its mapping threshold above their size, come from the
//! arenas between blocks that outlive them. So at start the arenas are capped and the
//! mapping threshold fixed ([`configure`]), and after a stream's pipeline is torn down
//! the free memory of every arena is given back (`malloc_trim`, off the async workers,
//! at most once per [`TRIM_INTERVAL`]).
//!
//! The only unsafe code of the gateway: calls into glibc that have no safe binding.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// glibc arenas at most. Fewer arenas share more threads (the streams' GStreamer and
/// x264 threads take a lock more often), but each keeps what it has freed.
pub const ARENA_MAX: i32 = 2;

/// Blocks this large or larger are mapped on their own and unmapped when freed. glibc
/// raises its threshold (up to 32 MiB) each time such a block is freed, after which
/// pictures (a 640x360 frame is 338 KiB) come from the arenas, between smaller blocks
/// that outlive them, and the freed room cannot be given back. Setting it keeps it.
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// How often ended pipelines are looked for, and so at most how often memory is trimmed.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the environment
/// overrides them). Freed pages go back to the system over about a second rather than
/// its default ten: fifteen seconds after a churn of publications it still held 4 to 7 MiB
/// of them (README, "Memory"), and the CPU used stayed within run-to-run spread.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_OPTIONS: &u8 = &b"dirty_decay_ms:1000\0"[0];

/// Pipelines torn down so far.
static RELEASED: AtomicU64 = AtomicU64::new(0);

/// Sets glibc's allocator up; false when it refused. Call it first in `main`, before any
/// thread starts: an arena cap set later leaves the arenas already made. Where the
/// environment sets glibc's allocator up (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`,
/// `GLIBC_TUNABLES`), that setting is left as it is.
pub fn configure() -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let given = |variable: &str, tunable: &str| {
        std::env::var_os(variable).is_some() || tunables.contains(tunable)
    };
    let mut done = true;
    if !given("MALLOC_ARENA_MAX", "glibc.malloc.arena_max") {
        // SAFETY: mallopt only sets a parameter of the allocator; no thread runs yet.
        done &= unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) } == 1;
    }
    if !given("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold") {
        // SAFETY: as above.
        done &= unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) } == 1;
    }
    done
}

/// Says that a stream's pipeline was torn down: what it used can be given back.
pub fn pipeline_released() {
    RELEASED.fetch_add(1, Ordering::Relaxed);
}

/// Called by every async worker as it goes idle (the runtime's `on_thread_park`): once
/// after pipelines were torn down, the worker's jemalloc thread cache goes back to the
/// arenas, where the trim can return it. A worker that sits idle never allocates again to
/// let jemalloc collect its cache (3 to 4 MiB after a churn, README "Memory"); otherwise
/// this costs one atomic load per park.
pub fn on_worker_park() {
    thread_local! {
        static FLUSHED_AT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let released = RELEASED.load(Ordering::Relaxed);
    FLUSHED_AT.with(|flushed| {
        if flushed.get() != released {
            flushed.set(released);
            void_control(c"thread.tcache.flush");
        }
    });
}

/// Calls one of jemalloc's controls that take and give no value.
fn void_control(name: &std::ffi::CStr) {
    // SAFETY: a NUL-terminated name and no buffers, as jemalloc's void controls take.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// Gives back the free memory of glibc's arenas after pipelines were torn down, for as
/// long as the runtime runs.
pub fn spawn_trimmer() {
    tokio::spawn(async {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut trimmed = RELEASED.load(Ordering::Relaxed);
        loop {
            tick.tick().await;
            let released = RELEASED.load(Ordering::Relaxed);
            if released == trimmed {
                continue;
            }
            trimmed = released;
            // It walks every arena under its lock: not on the workers that receive RTP.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    });
}

/// Returns the free memory of every glibc arena, and jemalloc's unused dirty pages (which
/// its background threads would return over ten seconds or so), to the system.
pub fn trim() {
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
    // This thread's cache first, then `arena.<MALLCTL_ARENAS_ALL>.purge`.
    void_control(c"thread.tcache.flush");
    void_control(c"arena.4096.purge");
}

/// What the process's memory is, as each allocator and the kernel see it, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Resident set size (`/proc/self/statm`).
    pub resident: u64,
    /// jemalloc: allocated by the Rust code and not freed.
    pub jemalloc_allocated: u64,
    /// jemalloc: in physically resident pages that it maps.
    pub jemalloc_resident: u64,
    /// jemalloc: mapped but returned to the system (virtual memory only).
    pub jemalloc_retained: u64,
    /// glibc: allocated by the C libraries and not freed (`mallinfo2`'s `uordblks` and
    /// `hblkhd`).
    pub malloc_in_use: u64,
    /// glibc: taken from the system, in use or free (`arena` and `hblkhd`).
    pub malloc_held: u64,
}

/// The process's memory now.
pub fn stats() -> MemoryStats {
    let mut stats = MemoryStats {
        resident: resident().unwrap_or(0),
        ..MemoryStats::default()
    };
    // jemalloc's statistics are a snapshot taken when its epoch advances.
    if tikv_jemalloc_ctl::epoch::advance().is_ok() {
        stats.jemalloc_allocated = tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as u64;
        stats.jemalloc_resident = tikv_jemalloc_ctl::stats::resident::read().unwrap_or(0) as u64;
        stats.jemalloc_retained = tikv_jemalloc_ctl::stats::retained::read().unwrap_or(0) as u64;
    }
    // SAFETY: mallinfo2 reads the allocator's counters (under each arena's lock).
    let info = unsafe { libc::mallinfo2() };
    stats.malloc_in_use = (info.uordblks + info.hblkhd) as u64;
    stats.malloc_held = (info.arena + info.hblkhd) as u64;
    stats
}

/// Resident set size, bytes.
fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_allocator_counts_what_it_holds() {
        let before = stats();
        assert!(before.resident > 0);
        // The tests' allocator is the system's: the Rust side is glibc's here.
        let block = vec![1u8; 8 << 20];
        let during = stats();
        assert!(during.malloc_in_use >= before.malloc_in_use + (8 << 20) - 4096);
        assert!(during.malloc_held >= during.malloc_in_use);
        drop(block);
        trim();
    }
}
