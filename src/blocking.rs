//! Blocking calls made from async code: the file system, GStreamer state changes. The
//! async workers also run every stream's RTP receive task, so a call that may block must
//! not hold a worker while the others' packets wait.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `f`, which may block, without holding up the async workers' other tasks: the
/// worker hands them to another thread for the time of the call (`block_in_place`).
/// Outside a multi-threaded runtime (a unit test's), it is a plain call.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::blocking;

    #[test]
    fn runs_anywhere() {
        assert_eq!(blocking(|| 1), 1);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async { assert_eq!(blocking(|| 2), 2) });
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap()
            .block_on(async { assert_eq!(blocking(|| 3), 3) });
    }
}
