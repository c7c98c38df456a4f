//! The module structure README.md's "Architecture" promises, read from the sources: every
//! `crate::` and `super::` path in `src/` (outside tests and comments) is an arrow from
//! its file to the module file it names. No circle of arrows, and dependencies point one
//! way down the layers of `layer`: main → http → signalling → session → gateway, tls,
//! upload → media, metrics → registry, cluster, events, access, net, ice_servers → config,
//! stream → name, blocking, hls, hook_signature.
//! The tools (the test publisher, the benchmark, the test kit) are crates of their own,
//! outside the gateway's package.

mod common;

use common::root_path;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module path (`media::output::hls`) for each source file, and the file's text.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut inner = prefix.to_vec();
                inner.push(name);
                walk(&path, &inner, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let mut module = prefix.to_vec();
            if !["mod", "lib", "main"].contains(&name.as_str()) {
                module.push(name.clone());
            }
            let key = if name == "main" {
                "main".to_string()
            } else {
                module.join("::")
            };
            out.insert(key, std::fs::read_to_string(&path).unwrap());
        }
    }
    let mut out = BTreeMap::new();
    walk(&root_path("src"), &[], &mut out);
    out
}

/// The code of a file without its tests and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a file names, each as module segments from the crate root.
fn paths(module: &str, text: &str) -> Vec<Vec<String>> {
    let own: Vec<String> = module
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut found = Vec::new();
    for (start, base) in [("crate::", Vec::new()), ("super::", parent(&own))] {
        let mut rest = text;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            rest = &rest[at + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut segments = base.clone();
            segments.extend(head.split("::").filter(|s| !s.is_empty()).map(String::from));
            // `path::{a, b::c}`: each item of a group is a path of its own.
            let after = &rest[head.len()..];
            if head.ends_with("::") && after.starts_with('{') {
                let group = &after[1..after.find('}').unwrap_or(after.len())];
                for item in group.split(',') {
                    let mut path = segments.clone();
                    path.extend(
                        item.trim()
                            .split("::")
                            .filter(|s| !s.is_empty() && *s != "self")
                            .map(|s| s.split_whitespace().next().unwrap_or(s).to_string()),
                    );
                    found.push(path);
                }
            } else {
                found.push(segments);
            }
        }
    }
    found
}

fn parent(module: &[String]) -> Vec<String> {
    module[..module.len().saturating_sub(1)].to_vec()
}

/// Arrows between module files: the longest prefix of each path that is a module.
fn arrows() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let mut arrows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in &modules {
        let targets = arrows.entry(module.clone()).or_default();
        for path in paths(module, &code(text)) {
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target
                && target != *module
            {
                targets.insert(target);
            }
        }
    }
    arrows
}

#[test]
fn the_modules_import_each_other_in_no_circle() {
    let arrows = arrows();
    // Depth-first search; a module met again on the current path closes a circle.
    fn visit(
        module: &str,
        arrows: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("import circle: {} -> {module}", path[at..].join(" -> "));
        }
        if done.contains(module) {
            return;
        }
        path.push(module.to_string());
        for target in arrows.get(module).into_iter().flatten() {
            visit(target, arrows, path, done);
        }
        path.pop();
        done.insert(module.to_string());
    }
    let mut done = BTreeSet::new();
    for module in arrows.keys() {
        visit(module, &arrows, &mut Vec::new(), &mut done);
    }
    assert!(arrows.len() > 30, "too few modules read: {arrows:?}");
}

/// The layer of a module, from the top (main) down.
fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or(module);
    let layers: [&[&str]; 9] = [
        &["main"],
        &["http"],
        &["signalling"],
        &["session"],
        &["gateway", "tls", "upload"],
        &["media", "metrics"],
        &[
            "registry",
            "cluster",
            "events",
            "access",
            "net",
            "ice_servers",
        ],
        &["config", "stream"],
        &["name", "blocking", "hls", "hook_signature", ""],
    ];
    layers
        .iter()
        .position(|names| names.contains(&top))
        .unwrap_or_else(|| panic!("{module} has no layer: add it to this test and README.md"))
}

#[test]
fn dependencies_point_one_way_down_the_layers() {
    for (module, targets) in arrows() {
        for target in targets {
            let same_top = module.split("::").next() == target.split("::").next();
            assert!(
                same_top || layer(&target) > layer(&module),
                "{module} imports {target}, which is not below it"
            );
        }
    }
}

#[test]
fn media_knows_nothing_of_webrtc_and_the_registry_is_a_leaf() {
    for (module, text) in modules() {
        let code = code(&text);
        if module.starts_with("media") {
            for webrtc in ["webrtc::", "rtc::"] {
                assert!(
                    !code.contains(&format!("use {webrtc}")),
                    "{module} uses {webrtc}"
                );
            }
        }
    }
    let arrows = arrows();
    let allowed: BTreeSet<String> = ["name", "stream", "hls"].map(String::from).into();
    assert!(
        arrows["registry"]
            .iter()
            .all(|target| allowed.contains(target.split("::").next().unwrap_or(target))),
        "registry imports {:?}",
        arrows["registry"]
    );
    assert!(
        arrows["name"].is_empty(),
        "name imports {:?}",
        arrows["name"]
    );
}

/// The crate a dependency of the gateway's manifest is named by in code.
fn crate_name(dependency: &str) -> String {
    match dependency {
        "gst-plugin-fmp4" => "gstfmp4".to_string(),
        other => other.replace('-', "_"),
    }
}

#[test]
fn the_tools_live_outside_the_gateway_crate() {
    // The gateway's package builds the gateway only: the publisher, the benchmark and
    // the test kit are crates of the workspace.
    assert!(
        !root_path("src/bin").exists(),
        "src/bin holds programs: the tools are crates of their own under crates/"
    );
    for tool in ["publish", "bench", "testkit"] {
        assert!(
            root_path(&format!("crates/{tool}/Cargo.toml")).is_file(),
            "crates/{tool} is missing"
        );
    }
    let lib = std::fs::read_to_string(root_path("src/lib.rs")).unwrap();
    assert!(
        !code(&lib).contains("mod client"),
        "the gateway's library serves the tools (`client` belongs to crates/publish)"
    );

    // Every crate the gateway depends on is named by its sources: one only the tools use
    // belongs in their manifests, and no crate of the workspace is a dependency.
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root_path("Cargo.toml")).unwrap()).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    assert_eq!(members, &[toml::Value::from("crates/*")]);
    let sources: String = modules().values().map(|text| code(text)).collect();
    let dependencies = manifest["dependencies"].as_table().unwrap();
    for (dependency, spec) in dependencies {
        assert!(
            spec.get("path").is_none(),
            "the gateway depends on {dependency}, a crate of the workspace"
        );
        let name = crate_name(dependency);
        // `name::...` or `use name as ...`; `rtc::` inside `webrtc::` is not a use of rtc.
        let named = sources.match_indices(&name).any(|(at, _)| {
            let after = &sources[at + name.len()..];
            let whole = !sources[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            whole && (after.starts_with("::") || after.starts_with(" as "))
        });
        assert!(
            named,
            "the gateway depends on {dependency}, which src/ never names: a tool's?"
        );
    }
}

#[test]
fn nothing_above_the_cluster_asks_whether_there_is_one() {
    let above = ["session", "http", "signalling", "gateway", "metrics"];
    for (module, text) in modules() {
        let top = module.split("::").next().unwrap_or(&module);
        if !above.contains(&top) {
            continue;
        }
        let code = code(&text);
        let flat: String = code.split_whitespace().collect();
        for asked in [
            "cluster.is_some()",
            "cluster.is_none()",
            "cluster.as_ref()?",
            "ifletSome(cluster)",
            "letSome(cluster)=",
        ] {
            assert!(
                !flat.contains(asked),
                "{module} asks whether there is a cluster ({asked}): ask the cluster::Cluster trait"
            );
        }
        for (at, _) in flat.match_indices("Option<") {
            let inner: String = flat[at..].chars().take(60).collect();
            let inner = inner.split('>').next().unwrap_or_default();
            assert!(
                !inner.contains("Membership") && !inner.contains("dynCluster"),
                "{module} holds an optional cluster ({inner}): Gateway.cluster is always one"
            );
        }
    }
}
