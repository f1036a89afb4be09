//! Redelivery on demand, against the real API server with the operator under the chart's
//! RBAC: the `statused.dev/redeliver` annotation, set by `statused-operator redeliver` and by
//! the same binary as a kubectl plugin (`kubectl statused redeliver`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use statused_operator::api::fixtures::{route, rule, webhook};
use statused_operator::api::{DeliveryPhase, StatusedDelivery};
use support::{SIGNING_SECRET, Sink, TestEnv, eventually, run_as_admin, sample_with_id, tool};

fn spec(sink: &Sink) -> serde_json::Value {
    let r = route("unused", "r")
        .rule(
            rule("builds")
                .types(&["com.statused.build.status.updated"])
                .target(webhook(&format!("{}/hook", sink.url()))),
        )
        .build();
    serde_json::to_value(r.spec).unwrap()
}

/// Runs `statused-operator ARGS` as the test cluster's admin; returns its standard output.
fn cli(args: &[&str]) -> String {
    run_as_admin(Command::new(env!("CARGO_BIN_EXE_statused-operator")).args(args))
}

/// Runs `kubectl statused ARGS`: the binary installed as the plugin `kubectl-statused`.
fn kubectl_statused(args: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("statused-plugin-{:08x}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_statused-operator"),
        dir.join("kubectl-statused"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run_as_admin(
        Command::new(tool("kubectl"))
            .arg("statused")
            .args(args)
            .env("PATH", path),
    );
    let _ = std::fs::remove_dir_all(&dir);
    out
}

async fn wait_for(
    env: &TestEnv,
    name: &str,
    what: &str,
    check: impl Fn(&StatusedDelivery) -> bool,
) -> StatusedDelivery {
    eventually(&format!("delivery {name}: {what}"), || async {
        let d = env.deliveries().get(name).await.ok()?;
        check(&d).then_some(d)
    })
    .await
}

fn phase(d: &StatusedDelivery) -> Option<DeliveryPhase> {
    d.status.as_ref().map(|s| s.phase)
}

#[tokio::test]
async fn a_fixed_target_is_delivered_once_per_token() {
    let sink = Sink::start(204).await;
    sink.answer_with(&[404]);
    let env = TestEnv::new("redeliver").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env.operator_with_route("r", spec(&sink)).await;
    let failed = env
        .deliver(&op, "r", &sample_with_id("build-valid.json", "ev-404"))
        .await;
    assert_eq!(phase(&failed), Some(DeliveryPhase::Failed));
    let name = failed.metadata.name.clone().unwrap();
    assert_eq!(sink.requests_to("/hook").len(), 1);

    // The target is fixed (it answers 204 from now on); ask for a redelivery.
    let out = cli(&["redeliver", &name, "-n", &env.ns]);
    assert_eq!(
        out.trim(),
        format!("statuseddelivery/{name} redelivery requested")
    );
    let done = wait_for(&env, &name, "redelivered", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.redeliveries == 1 && s.phase == DeliveryPhase::Succeeded)
    })
    .await;
    assert_eq!(sink.requests_to("/hook").len(), 2, "delivered once more");
    let status = done.status.unwrap();
    let token = done.metadata.annotations.unwrap()["statused.dev/redeliver"].clone();
    assert_eq!(status.redelivery_token.as_deref(), Some(token.as_str()));
    assert_eq!(status.targets[0].attempts, 1);
    assert_eq!(status.targets[0].last_error, None);

    // The same token again (with another change so the operator looks): nothing happens.
    let deliveries: Api<StatusedDelivery> = env.deliveries();
    deliveries
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "statused.dev/redeliver": token, "example.com/touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = deliveries.get(&name).await.unwrap();
    assert_eq!(after.status.unwrap().redeliveries, 1);
    assert_eq!(
        sink.requests_to("/hook").len(),
        2,
        "a token is honoured once"
    );

    // An Event says what happened.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.admin.clone(), &env.ns);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()))
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"Redelivering".to_string()), "{reasons:?}");
    op.shutdown().await;
}

#[tokio::test]
async fn failed_since_picks_exactly_the_route_failures_in_the_window() {
    let sink = Sink::start(404).await;
    let env = TestEnv::new("redeliver-bulk").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env.operator_with_route("r", spec(&sink)).await;
    let mut names = Vec::new();
    for id in ["ev-a", "ev-b"] {
        let d = env
            .deliver(&op, "r", &sample_with_id("build-valid.json", id))
            .await;
        names.push(d.metadata.name.unwrap());
    }
    // Outside a 3 s window from here on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let recent = env
        .deliver(&op, "r", &sample_with_id("build-valid.json", "ev-c"))
        .await;
    assert_eq!(phase(&recent), Some(DeliveryPhase::Failed));
    sink.answer_with(&[204]);
    let ok = env
        .deliver(&op, "r", &sample_with_id("build-valid.json", "ev-d"))
        .await;
    assert_eq!(phase(&ok), Some(DeliveryPhase::Succeeded));

    let recent_name = recent.metadata.name.unwrap();
    let out = kubectl_statused(&[
        "redeliver",
        "--route",
        "r",
        "--failed-since",
        "3s",
        "-n",
        &env.ns,
    ]);
    assert_eq!(
        out.trim(),
        format!("statuseddelivery/{recent_name} redelivery requested"),
        "exactly the route's failure inside the window"
    );
    wait_for(&env, &recent_name, "redelivered", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.redeliveries == 1 && s.phase.is_finished())
    })
    .await;
    for name in names.iter().chain([&ok.metadata.name.unwrap()]) {
        let d = env.deliveries().get(name).await.unwrap();
        assert_eq!(
            d.status.unwrap().redeliveries,
            0,
            "{name} was not asked for"
        );
    }
    op.shutdown().await;
}
