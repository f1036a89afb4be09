//! Redelivery on demand, against the real API server with the operator under the chart's
//! RBAC: a `StatusedRedelivery` request, created by `statused-operator redeliver` and by the
//! same binary as a kubectl plugin (`kubectl statused redeliver`), by an admin and by a team
//! member whose only rights are the chart's roles aggregated into `edit`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use statused_operator::api::fixtures::{route, rule, webhook};
use statused_operator::api::{DeliveryPhase, StatusedDelivery, StatusedRedelivery};
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

/// The request `statused-operator redeliver` printed it made for `delivery`.
fn request_made(out: &str, delivery: &str) -> String {
    let prefix = format!("statuseddelivery/{delivery} redelivery requested: statusedredelivery/");
    out.trim()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{out:?} does not start with {prefix:?}"))
        .to_string()
}

async fn wait_answered(env: &TestEnv, name: &str) -> StatusedRedelivery {
    let requests: Api<StatusedRedelivery> = Api::namespaced(env.admin.clone(), &env.ns);
    eventually(&format!("request {name} answered"), || async {
        let r = requests.get(name).await.ok()?;
        let accepted = r
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Accepted")?;
        (accepted.status != "Unknown").then_some(r)
    })
    .await
}

fn accepted(r: &StatusedRedelivery) -> (String, String) {
    let c = &r.status.as_ref().unwrap().conditions[0];
    (c.status.clone(), c.reason.clone())
}

/// A namespace whose route `r` sends to a sink that answered 404 once, and the failed
/// delivery of event `id` (the sink answers 204 from then on).
async fn a_failed_delivery(
    prefix: &str,
    id: &str,
) -> (Sink, TestEnv, statused_operator::operator::Running, String) {
    let sink = Sink::start(204).await;
    sink.answer_with(&[404]);
    let env = TestEnv::new(prefix).await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env.operator_with_route("r", spec(&sink)).await;
    let failed = env
        .deliver(&op, "r", &sample_with_id("build-valid.json", id))
        .await;
    assert_eq!(phase(&failed), Some(DeliveryPhase::Failed));
    let name = failed.metadata.name.clone().unwrap();
    (sink, env, op, name)
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_fixed_target_is_delivered_once_per_request() {
    let (sink, env, op, name) = a_failed_delivery("redeliver", "ev-404").await;
    assert_eq!(sink.requests_to("/hook").len(), 1);

    // The target is fixed (it answers 204 from now on); ask for a redelivery.
    let request = request_made(&cli(&["redeliver", &name, "-n", &env.ns]), &name);
    let done = wait_for(&env, &name, "redelivered", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.redeliveries == 1 && s.phase == DeliveryPhase::Succeeded)
    })
    .await;
    assert_eq!(sink.requests_to("/hook").len(), 2, "delivered once more");
    let status = done.status.unwrap();
    assert_eq!(status.targets[0].attempts, 1);
    assert_eq!(status.targets[0].last_error, None);

    // The request says what happened, is the token the delivery honoured, and is owned by
    // the delivery (it goes when the delivery is pruned).
    let answered = wait_answered(&env, &request).await;
    assert_eq!(
        accepted(&answered),
        ("True".to_string(), "Redelivering".to_string())
    );
    assert_eq!(answered.status.as_ref().unwrap().round, Some(1));
    assert_eq!(answered.spec.delivery, name);
    assert_eq!(
        status.recent_redelivery_requests,
        vec![answered.metadata.uid.clone().unwrap()]
    );
    assert_eq!(status.redelivery_requests, 1);
    assert_eq!(answered.status.as_ref().unwrap().claim, Some(1));
    let owners = answered.metadata.owner_references.clone().unwrap();
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("StatusedDelivery", done.metadata.uid.as_deref().unwrap())
    );

    // The same request again (touched, so the operator looks): nothing happens.
    let requests: Api<StatusedRedelivery> = Api::namespaced(env.admin.clone(), &env.ns);
    requests
        .patch(
            &request,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"example.com/touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = env.deliveries().get(&name).await.unwrap();
    assert_eq!(after.status.unwrap().redeliveries, 1);
    assert_eq!(
        sink.requests_to("/hook").len(),
        2,
        "a request is honoured once"
    );

    // A request for a delivery that does not exist is answered so.
    let missing = request_made(
        &cli(&["redeliver", "no-such-delivery", "-n", &env.ns]),
        "no-such-delivery",
    );
    assert_eq!(
        accepted(&wait_answered(&env, &missing).await),
        ("False".to_string(), "DeliveryNotFound".to_string())
    );

    // An Event on the delivery says what happened.
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
#[ignore = "needs the local cluster: hack/just test"]
async fn an_admin_may_still_redeliver_with_the_annotation_once_per_token() {
    let (sink, env, op, name) = a_failed_delivery("redeliver-annotation", "ev-annotated").await;
    let deliveries: Api<StatusedDelivery> = env.deliveries();
    let annotate = |token: &str| {
        json!({"metadata": {"annotations": {
            "statused.dev/redeliver": token, "example.com/touched": fastrand::u32(..).to_string()}}})
    };
    deliveries
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(annotate("t1")),
        )
        .await
        .unwrap();
    wait_for(&env, &name, "redelivered", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.redeliveries == 1 && s.phase == DeliveryPhase::Succeeded)
    })
    .await;
    // The same token again: nothing happens.
    deliveries
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(annotate("t1")),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        deliveries
            .get(&name)
            .await
            .unwrap()
            .status
            .unwrap()
            .redeliveries,
        1
    );
    assert_eq!(sink.requests_to("/hook").len(), 2);
    op.shutdown().await;
}

/// A client for the test cluster's `statused-team-user`, who has no rights of its own.
async fn team_client() -> Client {
    let path = std::env::var("STATUSED_TEST_TEAM_KUBECONFIG").unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Binds `statused-team-user` in `env`'s namespace to every role of the chart that
/// aggregates into `edit`: what the built-in `edit` role gives for statused.dev once the
/// cluster's aggregation controller has run (the test API server runs none).
async fn bind_team_user_to_edit(env: &TestEnv) -> Vec<String> {
    let roles: Api<ClusterRole> = Api::all(env.admin.clone());
    let aggregated: Vec<String> = roles
        .list(&ListParams::default().labels(
            "rbac.authorization.k8s.io/aggregate-to-edit=true,app.kubernetes.io/instance=statused-operator",
        ))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .collect();
    let bindings: Api<RoleBinding> = Api::namespaced(env.admin.clone(), &env.ns);
    for role in &aggregated {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("team-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "statused-team-user"}],
        }))
        .unwrap();
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
    aggregated
}

/// Runs `statused-operator ARGS` as `statused-team-user`; returns its standard output.
fn cli_as_team(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_statused-operator"))
        .args(args)
        .env(
            "KUBECONFIG",
            std::env::var("STATUSED_TEST_TEAM_KUBECONFIG").unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_team_member_with_edit_can_redeliver_but_cannot_write_deliveries() {
    let (sink, env, op, name) = a_failed_delivery("redeliver-team", "ev-team").await;

    let roles = bind_team_user_to_edit(&env).await;
    assert_eq!(
        roles.len(),
        3,
        "the chart's view, edit and redeliver roles aggregate into edit: {roles:?}"
    );
    let team = team_client().await;
    let deliveries: Api<StatusedDelivery> = Api::namespaced(team.clone(), &env.ns);
    // RBAC caches take a moment to see the new bindings.
    let mut seen = eventually("the team user's bindings in effect", || async {
        deliveries.get(&name).await.ok()
    })
    .await;

    // It cannot write a delivery in any way that could trigger or change a target.
    let mut forged = seen.clone();
    forged.metadata = kube::api::ObjectMeta {
        name: Some("forged".into()),
        ..Default::default()
    };
    forged.status = None;
    forbidden(
        deliveries.create(&PostParams::default(), &forged).await,
        "create a delivery",
    );
    let redeliver = json!({"metadata": {"annotations": {"statused.dev/redeliver": "mine"}}});
    forbidden(
        deliveries
            .patch(&name, &PatchParams::default(), &Patch::Merge(&redeliver))
            .await,
        "patch a delivery (annotation)",
    );
    let strip = json!({"metadata": {"ownerReferences": null, "labels": null}});
    forbidden(
        deliveries
            .patch(&name, &PatchParams::default(), &Patch::Merge(&strip))
            .await,
        "patch a delivery's metadata",
    );
    seen.spec.event.data = json!({"app_name": "made up"});
    forbidden(
        deliveries
            .replace(&name, &PostParams::default(), &seen)
            .await,
        "update a delivery's spec",
    );
    let reopen = json!({"status": {"phase": "Pending", "targets": []}});
    forbidden(
        deliveries
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&reopen))
            .await,
        "write a delivery's status",
    );
    forbidden(
        deliveries.delete(&name, &Default::default()).await,
        "delete a delivery (its dedup record)",
    );

    // It can ask for a redelivery, with the CLI, and the failed target runs again once.
    sink.answer_with(&[204]);
    let request = request_made(&cli_as_team(&["redeliver", &name, "-n", &env.ns]), &name);
    wait_for(&env, &name, "redelivered", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.redeliveries == 1 && s.phase == DeliveryPhase::Succeeded)
    })
    .await;
    let requests: Api<StatusedRedelivery> = Api::namespaced(team.clone(), &env.ns);
    let answered = eventually("the request answered", || async {
        let r = requests.get(&request).await.ok()?;
        r.status.as_ref().filter(|s| !s.conditions.is_empty())?;
        Some(r)
    })
    .await;
    assert_eq!(
        accepted(&answered),
        ("True".to_string(), "Redelivering".to_string())
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.requests_to("/hook").len(), 2, "once more, not twice");

    // A request cannot be changed, nor its answer forged.
    forbidden(
        requests
            .patch(
                &request,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"targets": "All"}})),
            )
            .await,
        "patch a request",
    );
    forbidden(
        requests
            .patch_status(
                &request,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"round": 7}})),
            )
            .await,
        "write a request's status",
    );
    // It may delete its own requests (housekeeping), which undoes nothing.
    requests
        .delete(&request, &Default::default())
        .await
        .unwrap();
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
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
        out.trim().lines().count(),
        1,
        "exactly the route's failure inside the window: {out}"
    );
    request_made(&out, &recent_name);
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
