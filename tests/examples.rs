//! Every route under examples/ is a valid StatusedRoute that compiles against the Secrets
//! declared next to it, every target kind has an example (and names itself as its YAML key
//! does), and a compiled route's Debug output (what a log line would show) holds none of its
//! Secrets' values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use kube::ResourceExt;
use statused_operator::api::route::TargetKind;
use statused_operator::cli::route_test::Manifests;
use statused_operator::route::compile::compile_route;

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
        let mut m = Manifests::default();
        m.load(&text).unwrap();
        assert!(!m.routes.is_empty(), "{}: no route", path.display());
        // The docs show a placeholder where a GitHub App's key goes.
        for secret in &mut m.secrets {
            if let Some(key) = secret
                .string_data
                .as_mut()
                .and_then(|d| d.get_mut("private-key"))
            {
                *key = rsa_key();
            }
        }
        let secret_values: Vec<String> = m
            .secrets
            .iter()
            .flat_map(|s| s.string_data.clone().unwrap_or_default().into_values())
            .map(|v| v.trim().to_string())
            .collect();
        for route in &m.routes {
            let ns = route.namespace().unwrap_or_else(|| "default".into());
            let compiled = match compile_route(route, &m.secret_set(&ns), &BTreeSet::new()) {
                Ok(c) => c,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            let debug = format!("{compiled:?}");
            for value in &secret_values {
                assert!(
                    !debug.contains(value.as_str()),
                    "{}: Debug output shows a Secret value",
                    path.display()
                );
            }
            for target in route.spec.rules.iter().flat_map(|r| &r.targets) {
                // What the kind calls itself (in field paths, logs and metrics) is its YAML key.
                let name = target.kind.name();
                let yaml = serde_json::to_value(&target.kind).unwrap();
                assert!(yaml.get(name).is_some(), "{name} is spelled {yaml} in YAML");
                kinds.insert(name);
            }
        }
    }
    let missing: Vec<_> = TargetKind::names()
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

/// `statused-operator route test examples/ROUTE tests/fixtures/FIXTURE`: what it prints.
fn route_test(route: &str, fixture: &str) -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_statused-operator"))
        .args([
            "route",
            "test",
            &format!("{dir}/examples/{route}"),
            &format!("{dir}/tests/fixtures/{fixture}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `statused-operator route test examples/seed-handlers.yaml EVENT` for every sample: each
/// handler of the seed plans exactly the request its service documents.
#[test]
fn the_seed_handlers_route_plans_what_each_sample_should_trigger() {
    let plan = |sample: &str| route_test("seed-handlers.yaml", &format!("samples/{sample}"));
    let cases: [(&str, &[&str]); 7] = [
        (
            "app-ready-for-sale.json",
            &[
                "rule notify-live, target 0 (slack)",
                "POST https://hooks.slack.com",
                "is live!",
                "rule flag-follows-review, target 0 (launchdarkly)",
                "ordered: latestWins, key \"Markdown Email\"",
                "\"kind\": \"turnFlagOn\"",
            ],
        ),
        (
            "app-ready-for-distribution.json",
            &[
                "rule notify-live, target 0 (slack)",
                "\"kind\": \"turnFlagOn\"",
            ],
        ),
        (
            "app-in-review.json",
            &[
                "rule flag-follows-review, target 0 (launchdarkly)",
                "ordered: latestWins, key \"Markdown Email\"",
                "PATCH https://app.launchdarkly.com/api/v2/flags/mobile/new-onboarding",
                "content-type: application/json; domain-model=launchdarkly.semanticpatch",
                "\"kind\": \"turnFlagOff\"",
                "\"environmentKey\": \"production\"",
            ],
        ),
        (
            "app-rejected.json",
            &[
                "rule incident-on-rejection, target 0 (pagerduty)",
                "POST https://events.pagerduty.com/v2/enqueue",
                "\"event_action\": \"trigger\"",
                "\"severity\": \"error\"",
                "\"dedup_key\": \"statused/mobile-ci/seed-handlers/Markdown Email/",
            ],
        ),
        (
            "build-valid.json",
            &[
                "rule ship-valid-build, target 0 (githubDispatch)",
                "POST https://api.github.com/repos/acme/ios-app/dispatches",
                "\"event_type\": \"submit-for-review\"",
            ],
        ),
        (
            "build-invalid.json",
            &[
                "rule warn-failed-build, target 0 (slack)",
                ":warning: Markdown Email build 457 failed processing",
            ],
        ),
        ("account-agreement.json", &["no rule matches"]),
    ];
    for (sample, expected) in cases {
        let out = plan(sample);
        for line in expected {
            assert!(out.contains(line), "{sample}: no {line:?} in\n{out}");
        }
        // Going live also turns the flag back on; every other event has one handler.
        let handlers = match sample {
            "account-agreement.json" => 0,
            s if s.starts_with("app-ready-for") => 2,
            _ => 1,
        };
        assert_eq!(
            out.matches("\nrule ").count(),
            handlers,
            "{sample}: its handlers\n{out}"
        );
        assert!(
            !out.contains("<the "),
            "{sample}: a Secret value was shown\n{out}"
        );
    }
}

/// The App Store Connect example plans what each of Apple's notifications should trigger, read
/// with Apple's field names; the ping triggers nothing.
#[test]
fn the_app_store_connect_example_plans_what_each_notification_should_trigger() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "app-version-ready-for-distribution.json",
            &[
                "event 5e2b7c1d-9a4f-4f0b-8c3e-7d1a2b3c4d02 (appStoreVersionAppVersionStateUpdated)",
                "rule released, target 0 (githubDispatch)",
                "\"version_id\": \"ad7e6298-7b4a-4c4e-a3a1-0f1a5c2d9b11\"",
                "\"from\": \"PENDING_DEVELOPER_RELEASE\"",
            ],
        ),
        ("app-version-in-review.json", &["no rule matches"]),
        (
            "build-upload-complete.json",
            &[
                "rule build-processed, target 0 (slack)",
                "Build upload 4f8e2a6c-1d3b-4a5e-8f7c-9b0a1c2d3e44: PROCESSING → COMPLETE",
            ],
        ),
        (
            "build-beta-approved.json",
            &[
                "rule beta-review, target 0 (slack)",
                "TestFlight external review: BETA_APPROVED",
            ],
        ),
        ("beta-feedback-screenshot.json", &["no rule matches"]),
        (
            "ping.json",
            &["ping from App Store Connect", "trigger nothing"],
        ),
    ];
    for (fixture, expected) in cases {
        let out = route_test(
            "app-store-connect.yaml",
            &format!("app-store-connect/{fixture}"),
        );
        for line in expected {
            assert!(out.contains(line), "{fixture}: no {line:?} in\n{out}");
        }
        assert!(
            !out.contains("<the "),
            "{fixture}: a Secret value was shown\n{out}"
        );
    }
}
