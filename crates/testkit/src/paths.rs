//! Where the repository's files and the workspace's programs are.

use crate::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository (the workspace's root).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels down")
        .to_path_buf()
}

/// A path inside the repository.
pub fn root_path(relative: &str) -> PathBuf {
    root().join(relative)
}

/// A program of the workspace, built beside the one running: tests run from
/// `target/PROFILE/deps`, the benchmark from `target/PROFILE`. A test finds the tools of
/// other crates (`webrtc-gateway-publish`) only once `cargo build --workspace --bins`
/// has built them; cargo builds only the test's own package's binaries for it.
pub fn binary(name: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(Error::io("the running program"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [Some(dir), dir.parent()];
    candidates
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| Error::MissingBinary {
            name: name.to_string(),
            beside: dir.to_path_buf(),
        })
}

/// The test publisher (`webrtc-gateway-publish`) to the signalling socket at `ws_url`,
/// publishing `stream` with `args`; it prints one JSON line per message.
pub fn publisher_command(ws_url: &str, stream: &str, args: &[&str]) -> Result<Command, Error> {
    let mut command = Command::new(binary("webrtc-gateway-publish")?);
    command
        .args(["--url", ws_url, "--stream", stream])
        .args(args);
    Ok(command)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_root_holds_the_readme() {
        assert!(super::root_path("README.md").is_file());
    }
}
