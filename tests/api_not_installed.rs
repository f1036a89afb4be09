//! Run against a cluster without Tekton or Argo (`hack/cluster.sh exec --bare`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{SIGNING_SECRET, TestEnv};

#[tokio::test]
#[ignore = "needs the local cluster without Tekton and Argo: hack/just test"]
async fn routes_needing_tekton_or_argo_report_it_and_recover_once_installed() {
    let env = TestEnv::new("no-api").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env.start_operator().await;
    env.apply_route(
        "ios",
        json!({"signingSecrets": [{"name": "statused-webhook"}],
               "rules": [{"name": "r", "targets": [{"tekton": {"pipelineRef": {"name": "p"}}}]}]}),
    )
    .await;
    env.apply_route(
        "argo",
        json!({"signingSecrets": [{"name": "statused-webhook"}],
               "rules": [{"name": "r", "targets": [{"argoWorkflow": {"workflowTemplateRef": {"name": "t"}}}]}]}),
    )
    .await;
    let (reason, message) = env.wait_ready("ios", "False").await;
    assert_eq!(reason, "TargetAPINotInstalled");
    assert!(message.contains("tekton.dev/v1 pipelineruns"), "{message}");
    let (reason, message) = env.wait_ready("argo", "False").await;
    assert_eq!(reason, "TargetAPINotInstalled");
    assert!(
        message.contains("argoproj.io/v1alpha1 workflows"),
        "{message}"
    );

    // Installing them later is noticed without touching the routes.
    env.install_stand_in_crds().await;
    env.wait_ready("ios", "True").await;
    env.wait_ready("argo", "True").await;
    op.shutdown().await;
}
