//! Every route under examples/ is a valid StatusedRoute that compiles against the Secrets
//! declared next to it, so the documentation cannot rot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use serde::Deserialize;
use statused_operator::api::{StatusedRoute, Target};
use statused_operator::controller::compile::compile_route;
use statused_operator::secrets::{SecretSet, SecretValue};

#[test]
fn every_example_route_compiles_against_its_secrets() {
    let dir = format!("{}/examples", env!("CARGO_MANIFEST_DIR"));
    let mut kinds = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("SINK_URL", "http://127.0.0.1:1");
        let mut secrets = None::<SecretSet>;
        let mut secret_values: Vec<String> = Vec::new();
        let mut file_routes = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            match value["kind"].as_str() {
                Some("Secret") => {
                    let ns = value["metadata"]["namespace"].as_str().unwrap_or("default");
                    let set = secrets.get_or_insert_with(|| SecretSet::new(ns));
                    let data = value["stringData"]
                        .as_mapping()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| {
                            let key = k.as_str().unwrap().to_string();
                            // The docs show a placeholder where a GitHub App's key goes.
                            let v = if key == "private-key" {
                                rsa_key()
                            } else {
                                v.as_str().unwrap().to_string()
                            };
                            secret_values.push(v.trim().to_string());
                            (key, SecretValue::new(v))
                        })
                        .collect();
                    set.insert(value["metadata"]["name"].as_str().unwrap(), data);
                }
                Some("StatusedRoute") => {
                    file_routes.push(serde_yaml::from_value::<StatusedRoute>(value).unwrap())
                }
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            }
        }
        let secrets = secrets.unwrap_or_default();
        for route in file_routes {
            let compiled = match compile_route(&route, &secrets, &BTreeSet::new()) {
                Ok(c) => c,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            // Compiled routes hold Secret values; their Debug output (what a log line would
            // show) must not.
            let debug = format!("{compiled:?}");
            for value in &secret_values {
                assert!(
                    !debug.contains(value.as_str()),
                    "{}: Debug output shows a Secret value",
                    path.display()
                );
            }
            kinds.extend(
                route
                    .spec
                    .rules
                    .iter()
                    .flat_map(|r| &r.targets)
                    .flat_map(Target::kinds),
            );
        }
    }
    let missing: Vec<_> = Target::KINDS
        .iter()
        .filter(|k| !kinds.contains(*k))
        .collect();
    assert!(missing.is_empty(), "no example for {missing:?}");
}

fn rsa_key() -> String {
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}
