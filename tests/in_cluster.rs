//! Tekton PipelineRuns and Argo Workflows created through the real API server (with stand-in
//! CRDs), exactly once per event, and the EventListener / Argo Events front doors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{SIGNING_SECRET, Sink, TestEnv, eventually, sample, sample_with_id};

fn tekton_route() -> serde_json::Value {
    json!({
        "signingSecrets": [{"name": "statused-webhook"}],
        "rules": [{
            "name": "build-valid",
            "match": {"types": ["com.statused.build.status.updated"], "statuses": ["Valid"]},
            "targets": [{"tekton": {
                "pipelineRef": {"name": "ios-release"},
                "params": [
                    {"name": "app", "value": "$(data.app_name)"},
                    {"name": "build", "value": "$(data.build_version)"},
                    {"name": "tags", "value": ["v$(data.version)", "latest"]}
                ],
                "taskRunTemplate": {"serviceAccountName": "release-bot"},
                "workspaces": [{"name": "source", "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}}}}}],
                "timeouts": {"pipeline": "1h0m0s"},
                "labels": {"team": "mobile"}
            }}]
        }]
    })
}

async fn tekton_env(prefix: &str) -> TestEnv {
    let env = TestEnv::new(prefix).await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env
}

fn pipeline_runs(env: &TestEnv) -> kube::Api<kube::api::DynamicObject> {
    env.dynamic("tekton.dev", "v1", "PipelineRun", "pipelineruns")
}

/// How many PipelineRuns the namespace holds.
async fn pipeline_run_count(env: &TestEnv) -> usize {
    pipeline_runs(env)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn valid_build_creates_exactly_one_pipeline_run() {
    let env = tekton_env("tekton").await;
    let op = env.operator_with_route("ios", tekton_route()).await;

    let body = sample("build-valid.json");
    let delivery = env.deliver(&op, "ios", &body).await;
    let stored = env.deliveries().get(&delivery.name_any()).await.unwrap();
    let target = &delivery.status.unwrap().targets[0];
    assert_eq!(
        target.phase.as_str(),
        "Succeeded",
        "{:?}",
        target.last_error
    );

    let runs = pipeline_runs(&env)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    let created = target.created.as_ref().unwrap();
    assert_eq!(
        (created.api_version.as_str(), created.kind.as_str()),
        ("tekton.dev/v1", "PipelineRun")
    );
    assert_eq!(created.name, run.name_any());
    assert_eq!(created.uid, run.uid());
    assert_eq!(run.namespace().as_deref(), Some(env.ns.as_str()));
    let labels = run.labels();
    assert_eq!(labels["statused.dev/route"], "ios");
    assert_eq!(
        labels["statused.dev/event-id"],
        "b7a1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"
    );
    assert_eq!(
        labels["statused.dev/event-type"],
        "com.statused.build.status.updated"
    );
    assert_eq!(labels["team"], "mobile");
    assert_eq!(run.annotations()["statused.dev/app"], "Markdown Email");
    assert_eq!(run.annotations()["statused.dev/status"], "Valid");
    let spec = &run.data["spec"];
    assert_eq!(spec["pipelineRef"], json!({"name": "ios-release"}));
    assert_eq!(
        spec["params"],
        json!([{"name": "app", "value": "Markdown Email"}, {"name": "build", "value": "456"},
               {"name": "tags", "value": ["v1.2.3", "latest"]}])
    );
    assert_eq!(spec["taskRunTemplate"]["serviceAccountName"], "release-bot");
    assert_eq!(spec["workspaces"][0]["name"], "source");
    assert_eq!(spec["timeouts"]["pipeline"], "1h0m0s");
    // What the operator writes is its own in managedFields, never `unknown`: the delivery
    // the receiver created and the executor wrote, and the PipelineRun.
    let managers = |m: &kube::api::ObjectMeta| -> Vec<String> {
        m.managed_fields
            .iter()
            .flatten()
            .filter_map(|f| f.manager.clone())
            .collect()
    };
    assert_eq!(managers(&run.metadata), ["statused-operator"]);
    let written = managers(&stored.metadata);
    assert!(
        !written.is_empty() && written.iter().all(|m| m == "statused-operator"),
        "{written:?}"
    );

    // Statused sends the same event again: nothing new is created.
    let (code, _) = env.post_signed(&op, "ios", &body, SIGNING_SECRET).await;
    assert_eq!(code, 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(pipeline_run_count(&env).await, 1);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_retry_after_a_crash_finds_the_pipeline_run_instead_of_creating_another() {
    let env = tekton_env("tekton-crash").await;
    // Accepted by a replica that does not deliver, then delivered by a fresh operator.
    let receiver = env.start_receiver_only().await;
    env.apply_route("ios", tekton_route()).await;
    env.wait_ready("ios", "True").await;
    let (code, answer) = env
        .post_signed(
            &receiver,
            "ios",
            &sample("build-valid.json"),
            SIGNING_SECRET,
        )
        .await;
    assert_eq!(code, 202);
    let name = answer["delivery"].as_str().unwrap().to_string();
    receiver.shutdown().await;
    let op = env.start_operator().await;
    let first = env
        .wait_delivery_finished(&name)
        .await
        .status
        .unwrap()
        .targets[0]
        .created
        .clone()
        .unwrap();
    op.shutdown().await;

    // The operator dies after creating the PipelineRun but before recording it: the status
    // is lost. The next operator tries again and must find the existing run.
    env.deliveries()
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": null})),
        )
        .await
        .unwrap();
    let op = env.start_operator().await;
    let again = env.wait_delivery_finished(&name).await.status.unwrap();
    assert_eq!(again.phase.as_str(), "Succeeded");
    assert_eq!(again.targets[0].created.as_ref(), Some(&first));
    assert_eq!(pipeline_run_count(&env).await, 1);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn argo_target_creates_one_workflow_from_the_template() {
    let env = tekton_env("argo").await;
    let op = env.start_operator().await;
    env.apply_route(
        "ios",
        json!({
            "signingSecrets": [{"name": "statused-webhook"}],
            "rules": [{"name": "live", "match": {"statuses": ["Ready for Sale"]},
                "targets": [{"argoWorkflow": {
                    "workflowTemplateRef": {"name": "announce-release"},
                    "arguments": {"parameters": [{"name": "app", "value": "$(data.app_name)"},
                                                 {"name": "version", "value": "$(data.version)"}]},
                    "serviceAccountName": "argo-workflow"}}]}]
        }),
    )
    .await;
    env.wait_ready("ios", "True").await;
    let delivery = env
        .deliver(&op, "ios", &sample("app-ready-for-distribution.json"))
        .await;
    assert_eq!(delivery.status.unwrap().phase.as_str(), "Succeeded");
    let workflows = env
        .dynamic("argoproj.io", "v1alpha1", "Workflow", "workflows")
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(workflows.len(), 1);
    assert_eq!(
        workflows[0].data["spec"],
        json!({"workflowTemplateRef": {"name": "announce-release"},
               "arguments": {"parameters": [{"name": "app", "value": "Pocket Ledger"},
                                            {"name": "version", "value": "4.0.0"}]},
               "serviceAccountName": "argo-workflow"})
    );
    assert_eq!(workflows[0].labels()["statused.dev/route"], "ios");
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn without_rbac_for_tekton_the_delivery_fails_naming_the_permission() {
    let env = tekton_env("no-rbac").await;
    let op = env.start_operator_without_tekton_rbac().await;
    env.apply_route("ios", tekton_route()).await;
    env.wait_ready("ios", "True").await;
    let (_, answer) = env
        .post_signed(&op, "ios", &sample("build-valid.json"), SIGNING_SECRET)
        .await;
    let delivery = env
        .wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    let target = &delivery.status.unwrap().targets[0];
    assert_eq!(target.phase.as_str(), "Failed");
    assert_eq!(target.attempts, 1, "a missing permission is not retried");
    let error = target.last_error.as_deref().unwrap();
    assert!(
        error.contains(&format!(
            "may not create pipelineruns.tekton.dev in namespace {}",
            env.ns
        )),
        "{error}"
    );
    assert!(error.contains("tekton.enabled=true"), "{error}");
    assert!(
        pipeline_runs(&env)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn event_listener_gets_the_signed_event_and_its_event_id_is_recorded() {
    let listener = Sink::start(202).await;
    listener.require_signature("X-Hub-Signature-256", "el-hmac-key");
    listener.answer_body(json!({"eventListener": "mobile", "namespace": "ci", "eventListenerUID": "u-1", "eventID": "el-7f3a"}));
    let env = tekton_env("listener").await;
    env.apply_secret("el-secret", &[("secret", "el-hmac-key")])
        .await;
    let op = env.start_operator().await;
    env.apply_route(
        "ios",
        json!({
            "signingSecrets": [{"name": "statused-webhook"}],
            "rules": [{"name": "all", "targets": [
                {"tektonEventListener": {"url": listener.url(), "headers": {"X-GitHub-Event": "statused"},
                                         "signature": {"secretRef": {"name": "el-secret"}}}},
                {"argoEventsWebhook": {"url": format!("{}/statused", listener.url()),
                                       "body": {"app": "$(data.app_name)", "status": "$(data.status)"},
                                       "signature": {"secretRef": {"name": "el-secret"}}}}
            ]}]
        }),
    )
    .await;
    env.wait_ready("ios", "True").await;
    let body = sample("app-rejected.json");
    let delivery = env.deliver(&op, "ios", &body).await;
    let status = delivery.status.unwrap();
    assert_eq!(status.phase.as_str(), "Succeeded", "{:?}", status.targets);
    assert_eq!(
        status.targets[0].listener_event_id.as_deref(),
        Some("el-7f3a")
    );
    assert_eq!(status.targets[1].listener_event_id, None);

    let requests = listener.requests();
    assert_eq!(requests.len(), 2);
    let el = requests.iter().find(|r| r.uri.path() == "/").unwrap();
    assert_eq!(el.header("x-github-event"), "statused");
    assert_eq!(el.json()["type"], "com.statused.app.status.updated");
    assert_eq!(el.json()["data"]["status"], "Rejected");
    let argo = requests
        .iter()
        .find(|r| r.uri.path() == "/statused")
        .unwrap();
    assert_eq!(
        argo.json(),
        json!({"app": "Markdown Email", "status": "Rejected"})
    );
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_listener_that_rejects_the_signature_fails_the_delivery() {
    let listener = Sink::start(202).await;
    listener.require_signature("X-Hub-Signature-256", "the-listeners-key");
    let env = tekton_env("listener-bad").await;
    env.apply_secret("el-secret", &[("secret", "a-different-key")])
        .await;
    let op = env.start_operator().await;
    env.apply_route(
        "ios",
        json!({
            "signingSecrets": [{"name": "statused-webhook"}],
            "rules": [{"name": "all", "targets": [
                {"tektonEventListener": {"url": listener.url(), "signature": {"secretRef": {"name": "el-secret"}}}}]}]
        }),
    )
    .await;
    env.wait_ready("ios", "True").await;
    let (_, answer) = env
        .post_signed(&op, "ios", &sample("app-rejected.json"), SIGNING_SECRET)
        .await;
    let delivery = env
        .wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    let target = &delivery.status.unwrap().targets[0];
    assert_eq!(target.phase.as_str(), "Failed");
    assert_eq!(target.last_response_code, Some(403));
    op.shutdown().await;
}

/// A redelivery round of an in-cluster target creates its own PipelineRun, still exactly
/// once per round: asking twice with the same token creates nothing more.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn each_redelivery_round_creates_its_own_pipeline_run_once() {
    let env = tekton_env("tekton-redeliver").await;
    let op = env.operator_with_route("ios", tekton_route()).await;
    let delivery = env.deliver(&op, "ios", &sample("build-valid.json")).await;
    let name = delivery.metadata.name.clone().unwrap();
    let count = || async {
        pipeline_runs(&env)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(count().await, 1);
    let redeliver = |token: &'static str| {
        let deliveries = env.deliveries();
        let name = name.clone();
        async move {
            deliveries
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {
                        "statused.dev/redeliver": token,
                        "statused.dev/redeliver-targets": "all"}}})),
                )
                .await
                .unwrap();
        }
    };
    for (round, token) in [(1u32, "round-1"), (2, "round-2")] {
        redeliver(token).await;
        let done = eventually(&format!("round {round}"), || async {
            let d = env.deliveries().get(&name).await.ok()?;
            let s = d.status?;
            (s.redeliveries == round && s.phase.is_finished()).then_some(s)
        })
        .await;
        let created = done.targets[0].created.clone().unwrap();
        assert_eq!(
            count().await,
            1 + round as usize,
            "one new PipelineRun per round"
        );
        let run = pipeline_runs(&env).get(&created.name).await.unwrap();
        assert_eq!(created.uid, run.uid());
    }
    // The same token again: honoured once, nothing more is created.
    redeliver("round-2").await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(count().await, 3);
    op.shutdown().await;
}

/// The route of `tekton_route`, its target following the PipelineRun it creates.
fn followed_tekton_route() -> serde_json::Value {
    let mut route = tekton_route();
    route["rules"][0]["targets"][0]["follow"] = json!({"timeoutSeconds": 600});
    route
}

/// Sets the PipelineRun's status as Tekton's controller would: started, then ended with
/// its `Succeeded` condition `status` and `reason`.
async fn end_pipeline_run(env: &TestEnv, name: &str, status: &str, reason: &str) {
    let patch = json!({"status": {
        "startTime": "2027-01-15T08:00:00Z", "completionTime": "2027-01-15T08:10:00Z",
        "conditions": [{"type": "Succeeded", "status": status, "reason": reason,
                        "message": format!("Tasks Completed: 2 (Failed: {})", u8::from(status == "False"))}],
    }});
    pipeline_runs(env)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Waits until delivery `name` follows its first target's run and has read it once: the
/// name of the object that run is.
async fn followed_run(env: &TestEnv, name: &str) -> String {
    let deliveries = env.deliveries();
    eventually(&format!("the run of {name} followed"), || async {
        let d = deliveries.get(name).await.ok()?;
        let t = d.status?.targets.first()?.clone();
        (t.run.as_ref()?.reads >= 1).then_some(t.created?.name)
    })
    .await
}

/// Waits for an Event with `reason` on delivery `name`.
async fn wait_event(env: &TestEnv, name: &str, reason: &str) {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.admin.clone(), &env.ns);
    eventually(&format!("the {reason} Event on {name}"), || async {
        let items = events.list(&Default::default()).await.ok()?.items;
        items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                    && e.reason.as_deref() == Some(reason)
            })
            .then_some(())
    })
    .await;
}

/// A target with `follow` stays Running while its PipelineRun runs, through an operator
/// restart (the follow's state is in the delivery's status), and ends with the run: a run
/// that succeeded makes the delivery Succeeded, one that failed makes it Failed with the
/// run's reason, each with its Event.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_followed_pipeline_run_ends_its_target_with_the_run() {
    let env = tekton_env("follow").await;
    let op = env
        .operator_with_route("ios", followed_tekton_route())
        .await;
    let body = sample("build-valid.json");
    let name = env.accept(&op, "ios", &body).await;
    let deliveries = env.deliveries();
    let running = eventually("the PipelineRun created and followed", || async {
        let d = deliveries.get(&name).await.ok()?;
        let t = d.status.as_ref()?.targets.first()?.clone();
        (t.created.is_some() && t.run.as_ref()?.reads >= 1).then_some(d)
    })
    .await;
    let status = running.status.unwrap();
    assert_eq!(
        status.phase.as_str(),
        "Running",
        "the delivery waits for its run"
    );
    let target = &status.targets[0];
    assert_eq!(target.phase.as_str(), "Running");
    assert_eq!(target.run.as_ref().unwrap().phase.as_str(), "Running");
    let run_name = target.created.as_ref().unwrap().name.clone();

    // The operator stops while the run goes on; the next one carries on from the status.
    op.shutdown().await;
    end_pipeline_run(&env, &run_name, "True", "Succeeded").await;
    let op = env.start_operator().await;
    let done = env.wait_delivery_finished(&name).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase.as_str(), "Succeeded");
    let run = status.targets[0].run.clone().unwrap();
    assert_eq!(run.phase.as_str(), "Succeeded");
    assert_eq!(
        run.started_at.map(|t| t.0.to_string()).as_deref(),
        Some("2027-01-15T08:00:00Z")
    );
    assert_eq!(
        run.completed_at.map(|t| t.0.to_string()).as_deref(),
        Some("2027-01-15T08:10:00Z")
    );
    wait_event(&env, &name, "Delivered").await;

    // A second build's run fails: the target fails with the run's reason.
    let second = sample_with_id("build-valid.json", "followed-second");
    let name = env.accept(&op, "ios", &second).await;
    let run_name = followed_run(&env, &name).await;
    end_pipeline_run(&env, &run_name, "False", "Failed").await;
    let failed = env.wait_delivery_finished(&name).await.status.unwrap();
    assert_eq!(failed.phase.as_str(), "Failed");
    let t = &failed.targets[0];
    assert_eq!(t.run.as_ref().unwrap().phase.as_str(), "Failed");
    let error = t.last_error.as_deref().unwrap();
    assert!(
        error.starts_with(&format!(
            "PipelineRun {run_name} Failed: Failed: Tasks Completed: 2 (Failed: 1)"
        )),
        "{error}"
    );
    assert_eq!(t.attempts, 1, "the trigger was not called again");
    assert_eq!(
        pipeline_run_count(&env).await,
        2,
        "one PipelineRun per event"
    );
    wait_event(&env, &name, "DeliveryFailed").await;
    op.shutdown().await;
}

/// The mobile team's route: the release pipeline is followed, and a rule with `after`
/// tells the chat (a stand-in) when it did not succeed, with the run's name and phase;
/// a run that succeeds tells no one (the chat target ends Skipped).
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_rule_after_a_followed_run_is_sent_once_on_its_result() {
    let env = tekton_env("after-run").await;
    let chat = Sink::start(200).await;
    let mut route = followed_tekton_route();
    route["rules"].as_array_mut().unwrap().push(json!({
        "name": "tell-chat",
        "after": {"rule": "build-valid", "phases": ["Failed", "TimedOut", "Cancelled"]},
        "targets": [{"webhook": {"url": chat.url(), "body": {
            "text": "Release of $(data.app_name) $(run.phase): $(run.name) ($(run.message))"}}}]
    }));
    let op = env.operator_with_route("ios", route).await;

    // A run that fails: the chat hears of it, once.
    let failing = env.accept(&op, "ios", &sample("build-valid.json")).await;
    let run = followed_run(&env, &failing).await;
    assert!(
        chat.requests().is_empty(),
        "nothing is sent while the run runs"
    );
    end_pipeline_run(&env, &run, "False", "Failed").await;
    let done = env.wait_delivery_finished(&failing).await.status.unwrap();
    assert_eq!(done.phase.as_str(), "Failed", "the release failed");
    assert_eq!(
        done.targets[1].phase.as_str(),
        "Succeeded",
        "{:?}",
        done.targets[1]
    );
    let sent = chat.requests();
    assert_eq!(sent.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(
        body["text"],
        format!("Release of Markdown Email Failed: {run} (Failed: Tasks Completed: 2 (Failed: 1))")
    );

    // A run that succeeds: no message, the chat target Skipped.
    let (code, answer) = env
        .post_signed(
            &op,
            "ios",
            &sample_with_id("build-valid.json", "after-ok"),
            SIGNING_SECRET,
        )
        .await;
    assert_eq!(code, 202, "{answer}");
    let passing = answer["delivery"].as_str().unwrap().to_string();
    let run = followed_run(&env, &passing).await;
    end_pipeline_run(&env, &run, "True", "Succeeded").await;
    let done = env.wait_delivery_finished(&passing).await.status.unwrap();
    assert_eq!(done.phase.as_str(), "Succeeded");
    assert_eq!(done.targets[1].phase.as_str(), "Skipped");
    assert_eq!(chat.requests().len(), 1, "still the one message");
    op.shutdown().await;
}

/// `latestWins` with `follow.cancelSuperseded`: a newer build's release run starts while the
/// older one's still runs, and the older run is cancelled (`spec.status: Cancelled`, as
/// Tekton documents); once Tekton says it stopped, the older target ends Superseded by the
/// newer delivery, and the newer one goes on.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_newer_run_cancels_the_superseded_one() {
    let env = tekton_env("cancel-superseded").await;
    let mut route = followed_tekton_route();
    route["rules"][0]["targets"][0]["follow"]["cancelSuperseded"] = true.into();
    route["rules"][0]["targets"][0]["ordering"] =
        json!({"key": "$(data.app_name)", "policy": "latestWins"});
    let op = env.operator_with_route("ios", route).await;
    let older = env
        .accept(
            &op,
            "ios",
            &sample_with_id("build-valid.json", "older-build"),
        )
        .await;
    let older_run = followed_run(&env, &older).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let newer = env
        .accept(
            &op,
            "ios",
            &sample_with_id("build-valid.json", "newer-build"),
        )
        .await;
    let newer_run = followed_run(&env, &newer).await;
    assert_ne!(older_run, newer_run);

    // The older run is asked to stop, once, and its target says by whom.
    eventually("the older PipelineRun cancelled", || async {
        let run = pipeline_runs(&env).get(&older_run).await.ok()?;
        (run.data["spec"]["status"] == "Cancelled").then_some(())
    })
    .await;
    let newer_spec = pipeline_runs(&env).get(&newer_run).await.unwrap().data["spec"].clone();
    assert_eq!(
        newer_spec["status"],
        serde_json::Value::Null,
        "the newer run goes on"
    );
    end_pipeline_run(&env, &older_run, "False", "Cancelled").await;
    let done = env.wait_delivery_finished(&older).await.status.unwrap();
    let t = &done.targets[0];
    assert_eq!(t.phase.as_str(), "Superseded", "{t:?}");
    assert_eq!(t.superseded_by.as_deref(), Some(newer.as_str()));
    assert_eq!(t.run.as_ref().unwrap().phase.as_str(), "Cancelled");

    end_pipeline_run(&env, &newer_run, "True", "Succeeded").await;
    let done = env.wait_delivery_finished(&newer).await.status.unwrap();
    assert_eq!(done.phase.as_str(), "Succeeded");
    op.shutdown().await;
}

/// The leader dies (its Lease left to expire) while it follows a run: the replica that
/// takes over carries the follow on from the delivery's status, and the run's result is
/// reported once: one message from the rule after it, one Event.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_new_leader_carries_on_a_follow_and_reports_the_result_once() {
    let env = tekton_env("follow-leader").await;
    let chat = Sink::start(200).await;
    let mut route = followed_tekton_route();
    route["rules"].as_array_mut().unwrap().push(json!({
        "name": "tell-chat",
        "after": {"rule": "build-valid", "phases": ["Failed"]},
        "targets": [{"webhook": {"url": chat.url(), "body": {"text": "$(run.phase)"}}}]
    }));
    let lease = format!("lease-{}", env.ns);
    let a = env.start_replica(&lease, "replica-a").await;
    eventually("a leads", || async { a.context.is_leader().then_some(()) }).await;
    let b = env.start_replica(&lease, "replica-b").await;
    env.apply_route("ios", route).await;
    env.wait_ready("ios", "True").await;
    let name = env.accept(&a, "ios", &sample("build-valid.json")).await;
    let run = followed_run(&env, &name).await;

    a.kill().await;
    end_pipeline_run(&env, &run, "False", "Failed").await;
    eventually("b takes over", || async {
        b.context.is_leader().then_some(())
    })
    .await;
    let done = env.wait_delivery_finished(&name).await.status.unwrap();
    assert_eq!(
        done.targets[0].run.as_ref().unwrap().phase.as_str(),
        "Failed"
    );
    assert_eq!(done.targets[1].phase.as_str(), "Succeeded");
    wait_event(&env, &name, "DeliveryFailed").await;
    // Late repeats would show by now.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(chat.requests().len(), 1, "the result is told once");
    assert_eq!(
        pipeline_run_count(&env).await,
        1,
        "the run is not started again"
    );
    b.shutdown().await;
}

/// `--max-follows-per-namespace`: beyond it, an accepted trigger's run is not followed (its
/// target Succeeded, saying NotFollowed); once a followed run ended, its room is free again.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn follows_beyond_the_namespace_bound_are_not_followed_and_say_so() {
    let env = tekton_env("follow-bound").await;
    let op = env
        .start_operator_with(|c| c.max_follows_per_namespace = 1)
        .await;
    env.apply_route("ios", followed_tekton_route()).await;
    env.wait_ready("ios", "True").await;
    let send = |id: &'static str| {
        let (env, op) = (&env, &op);
        async move {
            env.accept(op, "ios", &sample_with_id("build-valid.json", id))
                .await
        }
    };
    let deliveries = env.deliveries();
    let first = send("bound-first").await;
    let run = followed_run(&env, &first).await;

    let second = send("bound-second").await;
    let done = env.wait_delivery_finished(&second).await.status.unwrap();
    let t = &done.targets[0];
    assert_eq!(t.phase.as_str(), "Succeeded");
    assert!(t.run.is_none(), "{t:?}");
    assert!(
        t.last_error
            .as_deref()
            .unwrap_or_default()
            .starts_with("NotFollowed: "),
        "{t:?}"
    );

    end_pipeline_run(&env, &run, "True", "Succeeded").await;
    env.wait_delivery_finished(&first).await;
    let third = send("bound-third").await;
    eventually("the third run followed, the room free again", || async {
        let d = deliveries.get(&third).await.ok()?;
        d.status?.targets.first()?.run.as_ref().map(|_| ())
    })
    .await;
    op.shutdown().await;
}
