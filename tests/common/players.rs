//! Players run by the tests besides ffmpeg: VLC (which refuses to run as root).

/// Runs a command as an unprivileged user when we are root (VLC refuses to run as root).
pub fn unprivileged(program: &str) -> std::process::Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut command = std::process::Command::new("setpriv");
        command.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            program,
        ]);
        command
    } else {
        std::process::Command::new(program)
    }
}

/// The H.264 frames ffprobe counted (`-count_frames`, `stream=codec_name,nb_read_frames`).
pub fn h264_frames(probe: &str) -> u32 {
    probe
        .lines()
        .find(|l| l.contains("h264"))
        .and_then(|l| l.rsplit("nb_read_frames=").next()?.trim().parse().ok())
        .unwrap_or(0)
}
