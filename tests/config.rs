//! The program's configuration and startup: check-config, the shipped gateway.toml,
//! the pipeline templates, and startup failures that name their cause.

mod common;

use common::{GATEWAY, root_path};
use std::net::TcpListener;
use std::process::{Command, Output};
use webrtc_gateway::config::Config;
use webrtc_gateway::media::PipelineFactory;

fn run(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(GATEWAY)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_config_without_a_file_prints_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), &["check-config"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("listen = \"0.0.0.0:8080\""), "{printed}");
    assert_eq!(Config::parse(&printed).unwrap(), Config::default());
}

#[test]
fn the_shipped_gateway_toml_lists_every_key_with_its_default() {
    let shipped = std::fs::read_to_string(root_path("gateway.toml")).unwrap();
    assert_eq!(Config::parse(&shipped).unwrap(), Config::default());
    // Every key of the effective configuration appears in the shipped file.
    let defaults: toml::Table = toml::from_str(&Config::default().to_toml()).unwrap();
    let shipped: toml::Table = toml::from_str(&shipped).unwrap();
    for (section, keys) in &defaults {
        for key in keys.as_table().unwrap().keys() {
            assert!(
                shipped[section].as_table().unwrap().contains_key(key),
                "gateway.toml lacks {section}.{key}"
            );
        }
    }
    let output = run(
        &root_path(""),
        &["check-config", "--config", "gateway.toml"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn an_invalid_file_gets_one_line_per_problem_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[hls]\nsegment_duration_s = 0\n[transcode]\nx264_preset = \"slow\"\n",
    )
    .unwrap();
    let output = run(
        dir.path(),
        &["check-config", "--config", path.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output),
        "hls.segment_duration_s: must be between 1 and 10, got 0\n\
         transcode.x264_preset: must be one of ultrafast, superfast, veryfast, faster, fast, medium, got \"slow\"\n"
    );
    std::fs::write(&path, "[http]\nlisten = \"127.0.0.1:1\"\nport = 3\n").unwrap();
    let output = run(dir.path(), &["--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr(&output), "http.port: unknown key\n");

    let output = run(dir.path(), &["check-config", "--config", "missing.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).starts_with("cannot read missing.toml: "));
}

#[test]
fn every_pipeline_template_parses() {
    let config = Config::default();
    PipelineFactory::new(
        &root_path("pipelines"),
        config.transcode.clone(),
        config.rtp.clone(),
    )
    .expect("the shipped templates parse and name their elements");
}

fn start_with(dir: &std::path::Path, config: &str) -> Output {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    run(dir, &["--config", path.to_str().unwrap()])
}

#[test]
fn startup_failures_name_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let pipelines = root_path("pipelines");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let output = start_with(
        dir.path(),
        &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[transcode]\npipelines_dir = \"{}\"\n",
            pipelines.display()
        ),
    );
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "error: cannot listen on 127.0.0.1:{port} (http.listen): "
        )),
        "{text}"
    );

    let output = start_with(
        dir.path(),
        &format!(
            "[rtp]\nsdp_dir = \"/dev/null/sdp\"\n[transcode]\npipelines_dir = \"{}\"\n",
            pipelines.display()
        ),
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("error: rtp.sdp_dir: cannot create directory /dev/null/sdp"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn broken_templates_name_the_file_element_or_name() {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("pipelines");
    std::fs::create_dir(&templates).unwrap();
    for entry in std::fs::read_dir(root_path("pipelines")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), templates.join(entry.file_name())).unwrap();
    }
    let config = format!("[transcode]\npipelines_dir = \"{}\"\n", templates.display());
    let video = templates.join("video.pipeline");
    let original = std::fs::read_to_string(&video).unwrap();

    std::fs::write(&video, original.replace("x264enc", "nosuchenc")).unwrap();
    let output = start_with(dir.path(), &config);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(
            "error: GStreamer element \"nosuchenc\" is missing: no known Debian package ships it"
        ),
        "{}",
        stderr(&output)
    );

    std::fs::write(&video, original.replace("name=video_parse", "")).unwrap();
    let output = start_with(dir.path(), &config);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!(
            "error: pipeline template {} has no element named \"video_parse\"",
            video.display()
        )),
        "{}",
        stderr(&output)
    );

    std::fs::write(&video, original.replace("{width}", "{wdith}")).unwrap();
    let output = start_with(dir.path(), &config);
    assert!(
        stderr(&output).contains("uses unknown placeholder {wdith}"),
        "{}",
        stderr(&output)
    );
}
