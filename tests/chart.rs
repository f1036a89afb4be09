//! The Helm chart, rendered by the real `helm`, is accepted by the real API server
//! (server-side dry run), with its defaults and with the in-cluster targets switched off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

fn tool(name: &str) -> String {
    let cached = format!(
        "{}/.cache/statused-operator/bin/{name}",
        std::env::var("HOME").unwrap()
    );
    if std::path::Path::new(&cached).exists() {
        cached
    } else {
        name.to_string()
    }
}

fn render(extra: &[&str]) -> String {
    let chart = format!("{}/charts/statused-operator", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(tool("helm"))
        .args([
            "template",
            "statused-operator",
            &chart,
            "--namespace",
            "statused-system",
            "--include-crds",
        ])
        .args(extra)
        .output()
        .expect("helm runs (installed by hack/install-tools.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn server_dry_run(manifests: &str) -> String {
    let kubeconfig = std::env::var("STATUSED_TEST_ADMIN_KUBECONFIG")
        .expect("run through `just test` (hack/cluster.sh starts the API server)");
    let mut child = Command::new(tool("kubectl"))
        .args([
            "--kubeconfig",
            &kubeconfig,
            "apply",
            "--dry-run=server",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifests.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn chart_defaults_are_accepted_by_the_api_server() {
    let manifests = render(&[]);
    let applied = server_dry_run(&manifests);
    for kind in [
        "customresourcedefinition.apiextensions.k8s.io/statusedroutes.statused.dev",
        "serviceaccount/statused-operator",
        "clusterrole.rbac.authorization.k8s.io/statused-operator",
        "role.rbac.authorization.k8s.io/statused-operator-leader-election",
        "deployment.apps/statused-operator",
        "service/statused-operator",
    ] {
        assert!(applied.contains(kind), "{kind} missing from:\n{applied}");
    }
    assert!(manifests.contains("replicas: 2"));
    assert!(
        manifests.contains("name: STATUSED_LEADER_ELECTION\n              value: \"true\""),
        "{manifests}"
    );
}

#[test]
fn switching_off_tekton_and_argo_removes_exactly_their_permissions() {
    let on = render(&[]);
    let off = render(&[
        "--set",
        "tekton.enabled=false",
        "--set",
        "argo.enabled=false",
    ]);
    assert!(on.contains("tekton.dev") && on.contains("argoproj.io"));
    assert!(!off.contains("apiGroups: [tekton.dev]") && !off.contains("apiGroups: [argoproj.io]"));
    server_dry_run(&off);
}
