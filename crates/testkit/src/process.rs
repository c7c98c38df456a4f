//! One process type for everything the tests and the benchmark start: the gateway, the
//! test publisher, servers, players. Its output goes to a log file (stdout can be piped
//! instead), it can be waited for on a port, signalled, started again with the same
//! command, and it is stopped when dropped; if a test is failing then, its log is printed.

use crate::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The signals the tests send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Int,
    /// Freezes the process (a node that stops answering).
    Stop,
    Cont,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Signal::Term => "-TERM",
            Signal::Kill => "-KILL",
            Signal::Int => "-INT",
            Signal::Stop => "-STOP",
            Signal::Cont => "-CONT",
        }
    }
}

/// How a process's command is made, each time it starts.
type MakeCommand = Box<dyn Fn() -> Command + Send + Sync>;

/// A child process with its log.
pub struct Process {
    what: String,
    hint: String,
    make: MakeCommand,
    child: Option<Child>,
    log: PathBuf,
    /// The log's own directory, when no other was given.
    _log_dir: Option<tempfile::TempDir>,
    pipe_stdout: bool,
    /// Dropped with SIGTERM first (then SIGKILL after 5 s) rather than SIGKILL.
    gentle: bool,
    /// In a process group of its own, signalled as a group (with what it starts).
    group: bool,
    /// Its log printed when it is dropped during a panic.
    print_log: bool,
}

impl Process {
    /// A process named `what` (in messages) made by `make`, not started yet; its log is a
    /// file in a directory of its own.
    pub fn new(what: &str, make: impl Fn() -> Command + Send + Sync + 'static) -> Process {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Process {
            log: dir
                .path()
                .join(format!("{}.log", what.replace(['/', ' '], "-"))),
            _log_dir: Some(dir),
            what: what.to_string(),
            hint: "is it installed?".to_string(),
            make: Box::new(make),
            child: None,
            pipe_stdout: false,
            gentle: false,
            group: false,
            print_log: true,
        }
    }

    /// Logs to `path` (appended to) instead.
    pub fn log_to(mut self, path: &Path) -> Process {
        self.log = path.to_path_buf();
        self._log_dir = None;
        self
    }

    /// What to say when the program cannot be started (what installs it).
    pub fn hint(mut self, hint: &str) -> Process {
        self.hint = hint.to_string();
        self
    }

    /// Its stdout is piped to [`Process::take_stdout`] instead of the log.
    pub fn stdout_piped(mut self) -> Process {
        self.pipe_stdout = true;
        self
    }

    /// Stopped with SIGTERM first when dropped (a server that stops its children).
    pub fn gentle(mut self) -> Process {
        self.gentle = true;
        self
    }

    /// In a process group of its own: signals and the final SIGKILL reach what it
    /// started too (a WebDriver driver and its browser).
    pub fn group(mut self) -> Process {
        self.group = true;
        self
    }

    /// Its log is not printed when a test fails (its owner prints what matters).
    pub fn quiet(mut self) -> Process {
        self.print_log = false;
        self
    }

    /// Starts it; see [`Process::start`].
    pub fn spawn(mut self) -> Result<Process, Error> {
        self.start()?;
        Ok(self)
    }

    /// Starts the process (again, after it exited or was stopped) with the same command;
    /// its log goes on in the same file.
    pub fn start(&mut self) -> Result<(), Error> {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(Error::io(format!("the log of {}", self.what)))?;
        let stdout = if self.pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(log.try_clone().map_err(Error::io("a log file"))?)
        };
        let mut command = (self.make)();
        if self.group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Spawn {
                what: self.what.clone(),
                hint: self.hint.clone(),
                source,
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until loopback `port` accepts connections; fails at once if it exits.
    pub fn wait_port(&mut self, port: u16, timeout: Duration) -> Result<(), Error> {
        self.wait_until(timeout, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .map_err(|error| match error {
            Error::NotReady { what, timeout, log } => Error::NotListening {
                what,
                port,
                timeout,
                log,
            },
            other => other,
        })
    }

    /// Waits until `ready` says so (polled every 50 ms); fails at once if it exits.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            self.running()?;
            if ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: self.what.clone(),
                    timeout,
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ok while it runs; its exit status and log once it has exited.
    pub fn running(&mut self) -> Result<(), Error> {
        match self.try_wait() {
            Some(status) => Err(Error::Exited {
                what: self.what.clone(),
                status,
                log: self.log(),
            }),
            None if self.child.is_none() => Err(Error::NotRunning {
                what: self.what.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Its process id, while started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (nothing when it is not started).
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let target = if self.group {
                format!("-{pid}")
            } else {
                pid.to_string()
            };
            let _ = Command::new("kill")
                .args([signal.flag(), "--", &target])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Its piped stdout (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline || self.child.is_none() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (to its group too, if it has one), and reaped.
    pub fn kill(&mut self) {
        if self.group {
            self.signal(Signal::Kill);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (after SIGCONT, should it be stopped), then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        self.signal(Signal::Cont);
        self.signal(Signal::Term);
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            self.kill();
        }
        self.child = None;
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.gentle {
            self.stop();
        } else {
            self.signal(Signal::Cont);
            self.kill();
        }
        if self.print_log && std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "---- {} log ----\n{}",
                self.what,
                self.log()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{eventually, free_tcp_port};

    fn shell(script: &'static str) -> impl Fn() -> Command + Send + Sync + 'static {
        move || {
            let mut command = Command::new("sh");
            command.args(["-c", script]);
            command
        }
    }

    #[test]
    fn started_again_it_runs_the_same_command_and_its_log_goes_on() {
        let mut process = Process::new("sleeper", shell("echo started; exec sleep 30"))
            .spawn()
            .unwrap();
        let once = eventually(Duration::from_secs(10), || {
            (process.log() == "started\n").then_some(())
        });
        assert!(once.is_some(), "{}", process.log());
        process.start().unwrap();
        let twice = eventually(Duration::from_secs(10), || {
            (process.log() == "started\nstarted\n").then_some(())
        });
        assert!(twice.is_some(), "{}", process.log());
        process.signal(Signal::Stop);
        process.signal(Signal::Cont);
        assert!(process.running().is_ok());
        process.signal(Signal::Term);
        assert!(process.wait_exit(Duration::from_secs(10)).is_some());
        assert!(matches!(process.running(), Err(Error::Exited { .. })));
    }

    #[test]
    fn waiting_for_its_port_ends_when_it_exits() {
        let mut process = Process::new("quitter", shell("echo leaving; exit 3"))
            .spawn()
            .unwrap();
        let error = process
            .wait_port(free_tcp_port(), Duration::from_secs(60))
            .unwrap_err();
        match error {
            Error::Exited { status, .. } => assert_eq!(status.code(), Some(3)),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_missing_program_says_what_installs_it() {
        let error = Process::new("missing", || Command::new("/nonexistent/program"))
            .hint("nothing installs it")
            .spawn()
            .err()
            .expect("no such program");
        assert!(error.to_string().contains("nothing installs it"), "{error}");
    }
}
