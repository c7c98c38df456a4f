//! The Python tools in `tests/tools`, run with the virtual environment `make test-deps`
//! makes (`target/venv`): aiortc as a WHIP publisher that is not ours, simulated
//! low-latency viewers, a Prometheus parser.

use crate::netns::Namespace;
use crate::{Error, Process, root_path};
use std::io::{BufRead, BufReader, Lines};
use std::process::{ChildStdout, Command};

/// `tests/tools/NAME` run by the virtual environment's Python, with `args`.
pub fn tool(name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(root_path("target/venv/bin/python"));
    command.arg(root_path("tests/tools").join(name)).args(args);
    command
}

/// What to say when the virtual environment is missing.
pub const HINT: &str =
    "make test-deps installs aiortc, aiohttp and prometheus-client in target/venv";

/// aiortc publishing over WHIP to `url` (`tests/tools/aiortc_whip.py`, with no ICE
/// server: nothing past this machine), with `args` (`--seconds`, `--token`,
/// `--codec`); the JSON lines it prints, one per step.
pub fn aiortc_whip(
    url: &str,
    args: &[&str],
) -> Result<(Process, Lines<BufReader<ChildStdout>>), Error> {
    aiortc_whip_in(None, url, args)
}

/// The same, inside `namespace` when one is given (a publisher behind a NAT).
pub fn aiortc_whip_in(
    namespace: Option<&Namespace>,
    url: &str,
    args: &[&str],
) -> Result<(Process, Lines<BufReader<ChildStdout>>), Error> {
    let (url, args) = (
        url.to_string(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    let make = move || {
        let mut command = tool("aiortc_whip.py", &[&url]);
        command.args(&args);
        command
    };
    let process = match namespace {
        Some(namespace) => namespace.process("aiortc", make),
        None => Process::new("aiortc", make),
    };
    let mut process = process.hint(HINT).stdout_piped().spawn()?;
    let stdout = process.take_stdout().ok_or_else(|| Error::NotRunning {
        what: "aiortc".into(),
    })?;
    Ok((process, BufReader::new(stdout).lines()))
}
