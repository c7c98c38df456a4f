//! The outbox: one small JSON file per event not yet delivered, in a directory beside
//! the recordings (`record.dir/.events`). A file is written whole under a temporary name
//! and renamed, so a crash leaves either no event or a complete one; it is removed once
//! its delivery is answered with a 2xx (or given up). A file's name starts with its
//! creation time, so that names sort oldest first, and ends with the event's id.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The outbox's directory within `record.dir`.
pub const OUTBOX_DIR: &str = ".events";
const SUFFIX: &str = ".json";
/// What a file being written starts with; such files are never delivered.
const TEMPORARY: &str = ".tmp-";

/// The name of an event's file: microseconds since the epoch (20 digits, so that names
/// sort by age), then its id.
pub fn file_name(created: SystemTime, id: &str) -> String {
    let micros = created
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{micros:020}-{id}{SUFFIX}")
}

/// The event id in a file's name; `None` for a file that is not an event's.
pub fn id_of(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (stamp, id) = stem.split_once('-')?;
    let valid = stamp.len() == 20
        && stamp.bytes().all(|b| b.is_ascii_digit())
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid.then_some(id)
}

/// The outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn new(record_dir: &Path) -> Self {
        Self {
            dir: record_dir.join(OUTBOX_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory, and removes the files a crash left half written.
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TEMPORARY) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Writes an event's file: whole under a temporary name, synced, then renamed.
    pub fn write(&self, name: &str, body: &[u8]) -> std::io::Result<()> {
        let temporary = self.dir.join(format!("{TEMPORARY}{name}"));
        let written = (|| {
            let mut file = match std::fs::File::create(&temporary) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(&self.dir)?;
                    std::fs::File::create(&temporary)?
                }
                other => other?,
            };
            file.write_all(body)?;
            file.sync_data()?;
            std::fs::rename(&temporary, self.dir.join(name))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }

    pub fn read(&self, name: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.dir.join(name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    /// Removes an event's file; one already gone is no error.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The events' files, oldest first.
    pub fn list(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| id_of(name).is_some())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_sort_by_age_and_carry_the_id() {
        let early = file_name(UNIX_EPOCH + Duration::from_secs(9), "ffff");
        let late = file_name(UNIX_EPOCH + Duration::from_secs(10), "0000");
        assert!(early < late);
        assert_eq!(id_of(&early), Some("ffff"));
        assert_eq!(id_of(&late), Some("0000"));
        assert_eq!(id_of(".tmp-00000000000000000001-ab.json"), None);
        assert_eq!(id_of("00000000000000000001-ab.json.tmp"), None);
        assert_eq!(id_of("1-ab.json"), None);
        assert_eq!(id_of("00000000000000000001-.json"), None);
    }

    #[test]
    fn files_are_written_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        // The directory is made on the first write if it is missing.
        let second = file_name(UNIX_EPOCH + Duration::from_secs(2), "b");
        let first = file_name(UNIX_EPOCH + Duration::from_secs(1), "a");
        outbox.write(&second, b"{\"id\":\"b\"}").unwrap();
        outbox.write(&first, b"{\"id\":\"a\"}").unwrap();
        std::fs::write(outbox.dir().join(".tmp-half"), b"{").unwrap();
        assert_eq!(outbox.list(), vec![first.clone(), second.clone()]);
        outbox.prepare().unwrap();
        assert!(!outbox.dir().join(".tmp-half").exists());
        assert_eq!(outbox.read(&first).unwrap(), b"{\"id\":\"a\"}");
        outbox.remove(&first).unwrap();
        outbox.remove(&first).unwrap();
        assert!(!outbox.contains(&first));
        assert_eq!(outbox.list(), vec![second]);
    }
}
