//! Real servers beside the gateway in tests (Varnish, an S3 store, Redis, HAProxy), each
//! started on a free loopback port in a directory of its own, and stopped with SIGTERM
//! (then SIGKILL) when dropped.

use super::{eventually, free_tcp_port};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How a server's command is made, from its port and directory.
type MakeCommand = Box<dyn Fn(u16, &Path) -> Command + Send>;

/// A server process listening on `port`.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    log: std::path::PathBuf,
    name: &'static str,
    make: MakeCommand,
    install_hint: String,
}

impl Server {
    /// Starts `command` (built with the server's port and directory) and waits until its
    /// port accepts connections.
    pub fn start(
        name: &'static str,
        command: impl Fn(u16, &Path) -> Command + Send + 'static,
        install_hint: &str,
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server {
            child: None,
            port: free_tcp_port(),
            log: dir.path().join(format!("{name}.log")),
            dir,
            name,
            make: Box::new(command),
            install_hint: install_hint.to_string(),
        };
        server.start_again();
        server
    }

    /// Starts the server (again, after [`Server::stop`]) on the same port and directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = (self.make)(self.port, self.dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({}): {e}", self.name, self.install_hint));
        self.child = Some(child);
        let port = self.port;
        let up = eventually(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "{} did not listen: {}", self.name, self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args([signal, &pid]).status();
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        // SIGTERM first: varnishd's manager then stops its cache process too.
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let stopped = eventually(Duration::from_secs(5), || child.try_wait().ok().flatten());
            if stopped.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
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
        move |port, dir| {
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

/// The access key the S3 store of the tests takes.
pub const S3_ACCESS_KEY: &str = "gateway-tests";
pub const S3_SECRET_KEY: &str = "gateway-tests-secret";
/// The bucket it has.
pub const S3_BUCKET: &str = "recordings";

/// An S3-compatible store (`s3s-fs`, which checks SigV4 signatures), with one bucket,
/// its objects plain files under `dir/data/<bucket>/`.
pub fn s3_store() -> Server {
    Server::start(
        "s3s-fs",
        |port, dir| {
            std::fs::create_dir_all(dir.join("data").join(S3_BUCKET)).unwrap();
            let mut command = Command::new(super::root_path("target/tools/bin/s3s-fs"));
            command
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
                .arg(dir.join("data"));
            command
        },
        "make test-deps installs s3s-fs into target/tools",
    )
}

/// Redis from Debian, on loopback, keeping nothing on disk, with `password` required.
pub fn redis(password: &str) -> Server {
    let password = password.to_string();
    Server::start(
        "redis",
        move |port, dir| {
            let mut command = Command::new("redis-server");
            command
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--requirepass", &password])
                .arg("--dir")
                .arg(dir);
            command
        },
        "make test-deps installs Debian's redis-server",
    )
}

/// The README's HAProxy configuration, listening on `port` on loopback, its servers
/// the gateways on `backends`.
pub fn readme_haproxy(port: u16, backends: &[u16]) -> String {
    let readme = std::fs::read_to_string(super::root_path("README.md")).unwrap();
    let config = readme
        .split("```haproxy\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows an HAProxy configuration in a ```haproxy block");
    let mut out = String::new();
    let mut servers_written = false;
    for line in config.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("bind ") {
            out.push_str(&format!("    bind 127.0.0.1:{port}\n"));
        } else if let Some(rest) = trimmed.strip_prefix("server ") {
            // The README's servers, each as it is written, on the test's ports.
            if !servers_written {
                let options = rest
                    .split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                for (k, backend) in backends.iter().enumerate() {
                    out.push_str(&format!(
                        "    server gw{} 127.0.0.1:{backend} {options}\n",
                        k + 1
                    ));
                }
                servers_written = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(servers_written, "{config}");
    out
}

/// HAProxy from Debian with the README's configuration in front of `backends`.
pub fn haproxy(backends: &[u16]) -> Server {
    let backends = backends.to_vec();
    Server::start(
        "haproxy",
        move |port, dir| {
            let config = dir.join("haproxy.cfg");
            std::fs::write(&config, readme_haproxy(port, &backends)).unwrap();
            let mut command = Command::new("haproxy");
            command.arg("-db").arg("-f").arg(&config);
            command
        },
        "make test-deps installs Debian's haproxy",
    )
}
