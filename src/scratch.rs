//! The gateway's own temporary directories (the HLS outputs' when `hls.dir` is empty):
//! named so that they can be found again, `PREFIX<pid>-<random>` under the system's
//! temporary directory (`TMPDIR`), each with a lock file that its gateway holds an
//! exclusive `flock` on for as long as it runs. The kernel lets go of the lock however
//! the process ends, SIGKILL included, so at start a gateway removes every directory of
//! its kind whose lock it can take: one left by a gateway that is gone. A directory
//! whose lock is held belongs to a running gateway and is left alone.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// The file whose lock says that the directory's gateway runs.
const LOCK: &str = ".lock";

/// A temporary directory held by this process, removed when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
    /// Holds the lock for the directory's life.
    _lock: File,
}

impl ScratchDir {
    /// Removes the directories of `prefix` left by gateways that are gone, then makes
    /// this process's own, locked.
    pub fn create(prefix: &str) -> std::io::Result<ScratchDir> {
        let root = std::env::temp_dir();
        for removed in sweep(&root, prefix) {
            tracing::info!(
                dir = %removed.display(),
                "removed a temporary directory left by a gateway that is gone"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}{}-", std::process::id()))
            .tempdir_in(&root)?;
        let lock = File::create(dir.path().join(LOCK))?;
        lock.try_lock().map_err(std::io::Error::from)?;
        Ok(ScratchDir { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the directories of `prefix` under `root` that no running process holds;
/// returns them.
pub fn sweep(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let pid = owner_pid(&name, prefix)?;
            let path = entry.path();
            // Not followed: a link of that name is not ours to remove.
            if !std::fs::symlink_metadata(&path).ok()?.is_dir() {
                return None;
            }
            abandoned(&path, pid).then(|| {
                let _ = std::fs::remove_dir_all(&path);
                path
            })
        })
        .collect()
}

/// The process id in a directory name `PREFIX<pid>-<random>`.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let (pid, random) = name.strip_prefix(prefix)?.split_once('-')?;
    (!random.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// Whether no running gateway holds `dir`: its lock can be taken, or, without a lock
/// file (a gateway killed between making the directory and locking it), the process
/// named in it no longer exists.
fn abandoned(dir: &Path, pid: u32) -> bool {
    match File::open(dir.join(LOCK)) {
        Ok(lock) => match lock.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(_)) => false,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            !Path::new(&format!("/proc/{pid}")).exists()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "test-scratch-";

    #[test]
    fn names_carry_the_owner() {
        assert_eq!(owner_pid("test-scratch-42-abc", PREFIX), Some(42));
        assert_eq!(owner_pid("test-scratch-42-", PREFIX), None);
        assert_eq!(owner_pid("test-scratch-x-abc", PREFIX), None);
        assert_eq!(owner_pid("other-42-abc", PREFIX), None);
    }

    #[test]
    fn a_held_directory_stays_and_an_abandoned_one_goes() {
        let root = tempfile::tempdir().unwrap();
        // Held: its lock is taken (by this process, through another open file).
        let held = root.path().join(format!("{PREFIX}1-held"));
        std::fs::create_dir(&held).unwrap();
        let lock = File::create(held.join(LOCK)).unwrap();
        lock.try_lock().unwrap();
        // Abandoned: a lock file nobody holds.
        let left = root.path().join(format!("{PREFIX}1-left"));
        std::fs::create_dir(&left).unwrap();
        File::create(left.join(LOCK)).unwrap();
        std::fs::write(left.join("segment.ts"), b"x").unwrap();
        // Without a lock file, owned by a live process (this one): kept.
        let young = root
            .path()
            .join(format!("{PREFIX}{}-young", std::process::id()));
        std::fs::create_dir(&young).unwrap();
        // Something else of that shape that is not a directory: kept.
        let file = root.path().join(format!("{PREFIX}1-file"));
        std::fs::write(&file, b"x").unwrap();

        assert_eq!(sweep(root.path(), PREFIX), vec![left.clone()]);
        assert!(held.exists() && young.exists() && file.exists() && !left.exists());
        drop(lock);
        assert_eq!(sweep(root.path(), PREFIX), vec![held.clone()]);
    }
}
