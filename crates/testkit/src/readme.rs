//! The configurations README.md shows, as the tests and the benchmark run them: each is
//! read out of its fenced block and moved to the ports of the run, nothing else changed.

use crate::{Error, root_path};

/// The README's text.
pub fn readme() -> Result<String, Error> {
    std::fs::read_to_string(root_path("README.md")).map_err(Error::io("README.md"))
}

/// The first fenced block of `language` in the README.
pub fn block(language: &str) -> Result<String, Error> {
    let readme = readme()?;
    readme
        .split(&format!("```{language}\n"))
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .map(str::to_string)
        .ok_or_else(|| Error::Readme(format!("no ```{language} block")))
}

/// The README's Varnish configuration, its backend set to `backend_port` on loopback.
pub fn varnish_vcl(backend_port: u16) -> Result<String, Error> {
    vcl_for(&block("vcl")?, backend_port)
}

fn vcl_for(vcl: &str, backend_port: u16) -> Result<String, Error> {
    const PORT: &str = ".port = \"8080\";";
    if !vcl.contains(PORT) {
        return Err(Error::Readme(format!(
            "the Varnish configuration has no `{PORT}`:\n{vcl}"
        )));
    }
    Ok(vcl.replace(PORT, &format!(".port = \"{backend_port}\";")))
}

/// The README's HAProxy configuration, listening on `port` on loopback, its servers the
/// gateways on `backends` (each with the options the README gives its servers).
pub fn haproxy_config(port: u16, backends: &[u16]) -> Result<String, Error> {
    haproxy_for(&block("haproxy")?, port, backends)
}

fn haproxy_for(config: &str, port: u16, backends: &[u16]) -> Result<String, Error> {
    let mut out = String::new();
    let mut servers_written = false;
    for line in config.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("bind ") {
            out.push_str(&format!("    bind 127.0.0.1:{port}\n"));
        } else if let Some(rest) = trimmed.strip_prefix("server ") {
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
    if !servers_written {
        return Err(Error::Readme(format!(
            "the HAProxy configuration has no `server` line:\n{config}"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_servers_become_the_backends_with_the_readmes_options() {
        let config = "frontend f\n    bind :80\nbackend b\n    server gw1 10.0.0.1:8080 check inter 1s\n    server gw2 10.0.0.2:8080 check inter 1s\n";
        let out = haproxy_for(config, 9000, &[1, 2, 3]).unwrap();
        assert_eq!(
            out,
            "frontend f\n    bind 127.0.0.1:9000\nbackend b\n    server gw1 127.0.0.1:1 check inter 1s\n    server gw2 127.0.0.1:2 check inter 1s\n    server gw3 127.0.0.1:3 check inter 1s\n"
        );
        assert!(haproxy_for("frontend f\n", 1, &[2]).is_err());
    }

    #[test]
    fn the_vcl_backend_moves_to_the_given_port() {
        let vcl = "backend default { .host = \"127.0.0.1\"; .port = \"8080\"; }";
        assert_eq!(
            vcl_for(vcl, 1234).unwrap(),
            "backend default { .host = \"127.0.0.1\"; .port = \"1234\"; }"
        );
        assert!(vcl_for("backend default {}", 1).is_err());
    }

    #[test]
    fn the_readme_shows_both() {
        varnish_vcl(1).unwrap();
        haproxy_config(1, &[2]).unwrap();
    }
}
