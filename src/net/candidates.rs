//! The candidates a publisher is told: the ICE agent makes its host candidates of the
//! addresses it bound (an ephemeral port each), and the publisher must instead reach the
//! shared ports, on the public address behind a 1:1 NAT. Plain text in, text out.

use std::net::IpAddr;

/// What the publisher's candidates say instead of what the agent bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandidatePorts {
    /// UDP host candidates: this port (`webrtc.udp_port`).
    pub udp: Option<u16>,
    /// TCP passive host candidates: this port (`webrtc.tcp_port`).
    pub tcp: Option<u16>,
    /// And one more on the HTTP listener's port (`webrtc.ice_on_http`).
    pub http: Option<u16>,
    /// Host candidates on these addresses instead (`webrtc.nat_1to1_ips`), by family.
    pub nat_ips: Vec<IpAddr>,
}

/// One candidate (`candidate:...`, with or without `a=`) as the publisher is to see it:
/// none (an active TCP candidate, which a server has no use for), one, or two (a passive
/// TCP candidate on the ICE port and on the HTTP port).
pub fn rewrite_candidate(line: &str, ports: &CandidatePorts) -> Vec<String> {
    let (prefix, value) = match line.strip_prefix("a=") {
        Some(value) => ("a=", value),
        None => ("", line),
    };
    let mut fields: Vec<String> = value.split(' ').map(str::to_owned).collect();
    if fields.len() < 8 || fields[6] != "typ" {
        return vec![line.to_owned()];
    }
    let tcp_type = fields
        .iter()
        .skip(8)
        .step_by(2)
        .position(|key| key == "tcptype")
        .and_then(|i| fields.get(8 + 2 * i + 1))
        .cloned();
    if fields[7] != "host" {
        return vec![line.to_owned()];
    }
    if let Ok(address) = fields[4].parse::<IpAddr>()
        && let Some(public) = ports
            .nat_ips
            .iter()
            .find(|ip| ip.is_ipv4() == address.is_ipv4())
    {
        fields[4] = public.to_string();
    }
    let transport = fields[2].to_ascii_lowercase();
    let join = |fields: &[String]| format!("{prefix}{}", fields.join(" "));
    match transport.as_str() {
        "udp" => {
            if let Some(port) = ports.udp {
                fields[5] = port.to_string();
            }
            vec![join(&fields)]
        }
        "tcp" => {
            if tcp_type.as_deref() != Some("passive") {
                return vec![];
            }
            let mut out = Vec::new();
            if let Some(port) = ports.tcp {
                fields[5] = port.to_string();
                out.push(join(&fields));
            }
            if let Some(port) = ports.http {
                // Its own foundation, and a step below the ICE port in preference.
                fields[0] = format!("{}h", fields[0]);
                if let Ok(priority) = fields[3].parse::<u32>() {
                    fields[3] = priority.saturating_sub(256).to_string();
                }
                fields[5] = port.to_string();
                out.push(join(&fields));
            }
            out
        }
        _ => vec![line.to_owned()],
    }
}

/// An SDP with each candidate line rewritten.
pub fn rewrite_sdp(sdp: &str, ports: &CandidatePorts) -> String {
    let mut out = String::with_capacity(sdp.len() + 128);
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end_matches(['\r', '\n']);
        if text.starts_with("a=candidate:") {
            let ending = &line[text.len()..];
            for rewritten in rewrite_candidate(text, ports) {
                out.push_str(&rewritten);
                out.push_str(if ending.is_empty() { "\r\n" } else { ending });
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> CandidatePorts {
        CandidatePorts {
            udp: Some(8189),
            tcp: Some(8190),
            http: Some(8080),
            nat_ips: vec![],
        }
    }

    #[test]
    fn udp_host_candidates_name_the_shared_port() {
        let line = "candidate:1 1 udp 2130706431 10.0.0.5 40123 typ host";
        assert_eq!(
            rewrite_candidate(line, &ports()),
            ["candidate:1 1 udp 2130706431 10.0.0.5 8189 typ host"]
        );
        let line = "a=candidate:1 1 UDP 2130706431 10.0.0.5 40123 typ host generation 0";
        assert_eq!(
            rewrite_candidate(line, &ports()),
            ["a=candidate:1 1 UDP 2130706431 10.0.0.5 8189 typ host generation 0"]
        );
    }

    #[test]
    fn a_passive_tcp_candidate_is_on_the_ice_port_and_the_http_port() {
        let line = "candidate:2 1 tcp 1671430143 10.0.0.5 40124 typ host tcptype passive";
        assert_eq!(
            rewrite_candidate(line, &ports()),
            [
                "candidate:2 1 tcp 1671430143 10.0.0.5 8190 typ host tcptype passive",
                "candidate:2h 1 tcp 1671429887 10.0.0.5 8080 typ host tcptype passive",
            ]
        );
        let http_only = CandidatePorts {
            tcp: None,
            ..ports()
        };
        assert_eq!(
            rewrite_candidate(line, &http_only),
            ["candidate:2h 1 tcp 1671429887 10.0.0.5 8080 typ host tcptype passive"]
        );
        let none = CandidatePorts {
            tcp: None,
            http: None,
            ..ports()
        };
        assert!(rewrite_candidate(line, &none).is_empty());
    }

    #[test]
    fn active_tcp_candidates_are_left_out() {
        let line = "candidate:3 1 tcp 1671430143 10.0.0.5 9 typ host tcptype active";
        assert!(rewrite_candidate(line, &ports()).is_empty());
    }

    #[test]
    fn behind_a_1to1_nat_host_candidates_say_the_public_address() {
        let nat = CandidatePorts {
            nat_ips: vec![
                "203.0.113.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
            ..ports()
        };
        assert_eq!(
            rewrite_candidate("candidate:1 1 udp 5 10.0.0.5 40123 typ host", &nat),
            ["candidate:1 1 udp 5 203.0.113.7 8189 typ host"]
        );
        assert_eq!(
            rewrite_candidate("candidate:1 1 udp 5 fd00::5 40123 typ host", &nat),
            ["candidate:1 1 udp 5 2001:db8::7 8189 typ host"]
        );
    }

    #[test]
    fn other_candidates_and_lines_stay_as_they_are() {
        let srflx =
            "candidate:4 1 udp 1694498815 198.51.100.2 50000 typ srflx raddr 0.0.0.0 rport 40123";
        assert_eq!(rewrite_candidate(srflx, &ports()), [srflx]);
        assert_eq!(
            rewrite_candidate("candidate:junk", &ports()),
            ["candidate:junk"]
        );
        assert_eq!(rewrite_candidate("", &ports()), [""]);
    }

    #[test]
    fn an_answer_is_rewritten_line_by_line() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 40123 typ host\r\n\
                   a=candidate:3 1 tcp 1671430143 127.0.0.1 9 typ host tcptype active\r\n\
                   a=candidate:2 1 tcp 1671430143 127.0.0.1 40124 typ host tcptype passive\r\n\
                   a=end-of-candidates\r\n";
        assert_eq!(
            rewrite_sdp(sdp, &ports()),
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 8189 typ host\r\n\
             a=candidate:2 1 tcp 1671430143 127.0.0.1 8190 typ host tcptype passive\r\n\
             a=candidate:2h 1 tcp 1671429887 127.0.0.1 8080 typ host tcptype passive\r\n\
             a=end-of-candidates\r\n"
        );
    }
}
