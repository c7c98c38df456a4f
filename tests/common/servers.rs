//! Real servers beside the gateway in tests (Varnish, and others as they come), each
//! started on a free loopback port in a directory of its own, and stopped with SIGTERM
//! (then SIGKILL) when dropped.

use super::{eventually, free_tcp_port};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process listening on `port`.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    log: std::path::PathBuf,
    name: &'static str,
}

impl Server {
    /// Starts `command` (built with the server's port and directory) and waits until its
    /// port accepts connections.
    pub fn start(
        name: &'static str,
        command: impl FnOnce(u16, &Path) -> Command,
        install_hint: &str,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_tcp_port();
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command(port, dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({install_hint}): {e}"));
        let server = Server {
            child,
            port,
            dir,
            log,
            name,
        };
        let up = eventually(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "{name} did not listen: {}", server.log());
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: varnishd's manager then stops its cache process too.
        self.signal("-TERM");
        let stopped = eventually(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten()
        });
        if stopped.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log());
        }
    }
}

/// The README's Varnish configuration, its backend set to `backend_port` on loopback.
pub fn readme_vcl(backend_port: u16) -> String {
    let readme = std::fs::read_to_string(super::root_path("README.md")).unwrap();
    let vcl = readme
        .split("```vcl\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows a Varnish configuration in a ```vcl block");
    assert!(vcl.contains(".port = \"8080\";"), "{vcl}");
    vcl.replace(".port = \"8080\";", &format!(".port = \"{backend_port}\";"))
}

/// Varnish from Debian with the README's configuration in front of `backend_port`.
pub fn varnish(backend_port: u16) -> Server {
    Server::start(
        "varnish",
        |port, dir| {
            let vcl = dir.join("gateway.vcl");
            std::fs::write(&vcl, readme_vcl(backend_port)).unwrap();
            let mut command = Command::new("varnishd");
            command
                .args(["-F", "-j", "none"])
                .args(["-a", &format!("127.0.0.1:{port}")])
                .arg("-f")
                .arg(&vcl)
                .arg("-n")
                .arg(dir.join("varnish"))
                .args(["-s", "malloc,256m"]);
            command
        },
        "make test-deps installs Debian's varnish",
    )
}
