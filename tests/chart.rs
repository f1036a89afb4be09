//! The Helm chart, rendered by the real `helm`, is accepted by the real API server
//! (server-side dry run), with its defaults and with the in-cluster targets switched off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

mod support;
use support::{run_as_admin, tool};

fn render(extra: &[&str]) -> String {
    try_render(extra).unwrap()
}

fn try_render(extra: &[&str]) -> Result<String, String> {
    // The test API server's version: version-dependent templates (the PDB's API) render
    // for it.
    try_render_for("1.20.2", extra)
}

fn try_render_for(kube_version: &str, extra: &[&str]) -> Result<String, String> {
    let chart = format!("{}/charts/statused-operator", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(tool("helm"))
        .args([
            "template",
            "statused-operator",
            &chart,
            "--namespace",
            "statused-system",
            "--include-crds",
            "--kube-version",
            kube_version,
        ])
        .args(extra)
        .output()
        .expect("helm runs (installed by hack/install-tools.sh)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    Ok(String::from_utf8(out.stdout).unwrap())
}

/// The rules of the operator's ClusterRole in a rendering.
fn cluster_role_rules(manifests: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(manifests)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == "ClusterRole" && v["metadata"]["name"] == "statused-operator")
        .map(|v| v["rules"].as_sequence().unwrap().clone())
        .unwrap()
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
#[ignore = "needs the local cluster: hack/just test"]
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
        "service/statused-operator-metrics",
        "poddisruptionbudget.policy/statused-operator",
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
#[ignore = "needs the local cluster: hack/just test"]
fn switching_off_tekton_and_argo_removes_exactly_their_permissions() {
    let on = render(&[]);
    let off = render(&[
        "--set",
        "tekton.enabled=false",
        "--set",
        "argo.enabled=false",
    ]);
    let group = |rule: &serde_yaml::Value| rule["apiGroups"][0].as_str().unwrap().to_string();
    let (rules_on, rules_off) = (cluster_role_rules(&on), cluster_role_rules(&off));
    let removed: Vec<_> = rules_on
        .iter()
        .filter(|r| !rules_off.contains(r))
        .map(group)
        .collect();
    assert_eq!(removed, ["tekton.dev", "argoproj.io"]);
    assert!(
        rules_off.iter().all(|r| rules_on.contains(r)),
        "switching off adds nothing"
    );
    server_dry_run(&off);
}

#[test]
#[ignore = "needs helm: hack/just test"]
fn several_replicas_without_leader_election_are_refused() {
    let err = try_render(&["--set", "leaderElection.enabled=false"]).unwrap_err();
    assert!(err.contains("needs leaderElection.enabled=true"), "{err}");
    assert!(
        try_render(&[
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "replicaCount=1"
        ])
        .is_ok()
    );
}

#[test]
#[ignore = "needs the local cluster: hack/just test"]
fn a_single_watched_namespace_gets_a_role_there_instead_of_cluster_wide_rights() {
    let manifests = render(&["--set", "watchNamespace=default"]);
    let kinds: Vec<(String, String)> = {
        use serde::Deserialize;
        serde_yaml::Deserializer::from_str(&manifests)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .filter(|v| {
                v["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("Role") || k.starts_with("ClusterRole"))
            })
            // The roles aggregated into view/edit/admin are for namespace users, not the
            // operator's own rights.
            .filter(|v| !is_aggregated(v))
            .map(|v| {
                (
                    v["kind"].as_str().unwrap().to_string(),
                    v["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    };
    assert!(
        !kinds.iter().any(|(k, _)| k.starts_with("Cluster")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("Role".to_string(), "default".to_string())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("RoleBinding".to_string(), "default".to_string())),
        "{kinds:?}"
    );
    assert!(manifests.contains("name: STATUSED_NAMESPACE"));
    server_dry_run(&manifests);
}

#[test]
#[ignore = "needs helm: hack/just test"]
fn traces_are_off_by_default_and_the_value_sets_the_otlp_endpoint() {
    assert!(!render(&[]).contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let manifests = render(&[
        "--set",
        "tracing.otlpEndpoint=http://otel-collector.observability:4318",
    ]);
    assert!(
        manifests.contains(
            "- name: OTEL_EXPORTER_OTLP_ENDPOINT\n              value: \"http://otel-collector.observability:4318\""
        ),
        "{manifests}"
    );
}

#[test]
#[ignore = "needs helm: hack/just test"]
fn bad_values_are_refused_with_the_field_named() {
    for (value, field) in [
        ("logFormat=yaml", "logFormat"),
        ("publicURL=hooks.example.com", "publicURL"),
        ("replicaCount=0", "replicaCount"),
        // A typo is refused, not rendered silently.
        ("replicas=3", "replicas"),
        ("executor.concurency=3", "concurency"),
        ("image.digest=latest", "digest"),
        ("tracing.otlpEndpoint=collector:4318", "otlpEndpoint"),
    ] {
        let err = try_render(&["--set", value]).unwrap_err();
        assert!(err.contains(field), "{value}: {err}");
    }
}

fn is_aggregated(v: &serde_yaml::Value) -> bool {
    v["metadata"]["labels"].as_mapping().is_some_and(|l| {
        l.keys()
            .any(|k| k.as_str().unwrap().contains("aggregate-to-"))
    })
}

/// Every Service in a rendering: (name, type, port names).
fn services(manifests: &str) -> Vec<(String, String, Vec<String>)> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(manifests)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| v["kind"] == "Service")
        .map(|v| {
            let ports = v["spec"]["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            (
                v["metadata"]["name"].as_str().unwrap().to_string(),
                v["spec"]["type"].as_str().unwrap().to_string(),
                ports,
            )
        })
        .collect()
}

#[test]
#[ignore = "needs helm: hack/just test"]
fn exposing_the_receiver_never_exposes_metrics() {
    let manifests = render(&["--set", "service.type=LoadBalancer"]);
    let mut found = services(&manifests);
    found.sort();
    assert_eq!(
        found,
        [
            (
                "statused-operator".to_string(),
                "LoadBalancer".to_string(),
                vec!["webhook".to_string()]
            ),
            (
                "statused-operator-metrics".to_string(),
                "ClusterIP".to_string(),
                vec!["metrics".to_string()]
            ),
        ]
    );
}

#[test]
#[ignore = "needs helm: hack/just test"]
fn one_replica_gets_no_disruption_budget_and_spreading_is_soft() {
    let single = render(&[
        "--set",
        "replicaCount=1",
        "--set",
        "leaderElection.enabled=false",
    ]);
    assert!(!single.contains("kind: PodDisruptionBudget"));
    let spread = render(&[]);
    assert!(spread.contains("preferredDuringSchedulingIgnoredDuringExecution"));
    assert!(spread.contains("whenUnsatisfiable: ScheduleAnyway"));
    assert!(!spread.contains("requiredDuringScheduling"));
    let digest = format!("sha256:{}", "a".repeat(64));
    let pinned = render(&["--set", &format!("image.digest={digest}")]);
    assert!(pinned.contains(&format!("statused-operator@{digest}")));
}

#[test]
#[ignore = "needs the local cluster: hack/just test"]
fn namespace_users_can_read_deliveries_but_only_the_operator_writes_them() {
    use serde::Deserialize;
    let manifests = render(&[]);
    let aggregated: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&manifests)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| {
            v["kind"] == "ClusterRole"
                && v["metadata"]["labels"].as_mapping().is_some_and(|l| {
                    l.keys()
                        .any(|k| k.as_str().unwrap().contains("aggregate-to-"))
                })
        })
        .collect();
    assert_eq!(aggregated.len(), 3, "view, edit and redeliver");
    let mut reads_deliveries = false;
    for role in &aggregated {
        for rule in role["rules"].as_sequence().unwrap() {
            let resources: Vec<&str> = rule["resources"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let verbs: Vec<&str> = rule["verbs"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            if resources.contains(&"statuseddeliveries") {
                reads_deliveries |= verbs.contains(&"list");
                assert!(
                    verbs.iter().all(|v| ["get", "list", "watch"].contains(v)),
                    "deliveries writable through an aggregated role: {verbs:?}"
                );
            }
        }
    }
    assert!(reads_deliveries);
    server_dry_run(&manifests);
}

/// `kubernetes-validate` (PyPI, installed by hack/install-tools.sh) on a rendering, for one
/// Kubernetes version (`None`: the newest it knows).
fn strictly_valid(manifests: &str, version: Option<&str>) -> Result<(), String> {
    let path = std::env::temp_dir().join(format!("statused-chart-{:08x}.yaml", fastrand::u32(..)));
    std::fs::write(&path, manifests).unwrap();
    let mut cmd = Command::new("kubernetes-validate");
    cmd.args(["--strict", "--quiet"]);
    if let Some(v) = version {
        cmd.args(["-k", v]);
    }
    let out = cmd
        .arg(&path)
        .output()
        .expect("kubernetes-validate runs (installed by hack/install-tools.sh)");
    let _ = std::fs::remove_file(&path);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
#[ignore = "needs helm and kubernetes-validate: hack/just test"]
fn renderings_pass_strict_schema_validation_for_1_30_and_the_newest_kubernetes() {
    let combos: [&[&str]; 5] = [
        &[],
        &["--set", "watchNamespace=mobile-ci"],
        &[
            "--set",
            "replicaCount=1",
            "--set",
            "leaderElection.enabled=false",
        ],
        &["--set", "replicaCount=3"],
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "ingress.enabled=true",
            "--set",
            "priorityClassName=high",
            "--set",
            "service.type=LoadBalancer",
        ],
    ];
    for version in ["1.30.0", "1.37.0"] {
        for values in combos {
            let manifests = try_render_for(version, values).unwrap();
            if let Err(e) = strictly_valid(&manifests, Some(version)) {
                panic!("Kubernetes {version}, values {values:?}:\n{e}");
            }
        }
    }
}

#[test]
#[ignore = "needs helm: hack/just test"]
fn crds_are_templates_that_upgrade_with_the_release_and_are_kept_on_uninstall() {
    use serde::Deserialize;
    // No --include-crds: Helm's crds/ directory is never upgraded, so the chart has none.
    let chart = format!("{}/charts/statused-operator", env!("CARGO_MANIFEST_DIR"));
    assert!(!std::path::Path::new(&format!("{chart}/crds")).exists());
    let crds = |extra: &[&str]| -> Vec<serde_yaml::Value> {
        serde_yaml::Deserializer::from_str(&render(extra))
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .filter(|v| v["kind"] == "CustomResourceDefinition")
            .collect()
    };
    let installed = crds(&[]);
    assert_eq!(
        installed.len(),
        3,
        "routes, deliveries, redelivery requests"
    );
    for crd in &installed {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{crd:?}"
        );
    }
    assert!(crds(&["--set", "crds.install=false"]).is_empty());
}

#[test]
#[ignore = "needs helm: hack/just test"]
fn alerts_and_the_dashboard_use_only_metrics_the_operator_exports() {
    let manifests = render(&[
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set",
        "monitoring.dashboard.enabled=true",
        "--set",
        "monitoring.podMonitor.enabled=true",
    ]);
    assert!(manifests.contains("kind: PrometheusRule"));
    assert!(manifests.contains("kind: PodMonitor"));
    assert!(manifests.contains("grafana_dashboard: \"1\""));
    // Every family the operator registers, with its type, from its own exposition.
    let exposition = support::every_metric_family();
    let families: std::collections::HashMap<&str, &str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let exported = |name: &str| {
        families.contains_key(name)
            || [
                ("_total", "counter"),
                ("_bucket", "histogram"),
                ("_sum", "histogram"),
                ("_count", "histogram"),
            ]
            .iter()
            .any(|(suffix, kind)| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| families.get(base) == Some(kind))
            })
    };
    let mut used = std::collections::BTreeSet::new();
    for (i, _) in manifests.match_indices("statused_") {
        let name: String = manifests[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        // Only metric names in expressions (`statused_...{` / `statused_...[` / `statused_...)`).
        let after = manifests[i + name.len()..].chars().next();
        if matches!(after, Some('{' | '[' | ')')) {
            used.insert(name);
        }
    }
    assert!(used.len() >= 8, "expressions found: {used:?}");
    let missing: Vec<_> = used.iter().filter(|n| !exported(n)).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?} (exported: {families:?})"
    );
}

#[test]
fn the_chart_and_the_operator_have_one_version() {
    let root = env!("CARGO_MANIFEST_DIR");
    let chart =
        std::fs::read_to_string(format!("{root}/charts/statused-operator/Chart.yaml")).unwrap();
    let field = |name: &str| {
        chart
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(field("version:"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("appVersion:"), env!("CARGO_PKG_VERSION"));
}

/// Runs `helm` or `kubectl` as the test API server's admin; fails the test on an error.
fn admin(tool_name: &str, args: &[&str]) -> String {
    run_as_admin(Command::new(tool(tool_name)).args(args))
}

fn kubectl(args: &[&str]) -> String {
    admin("kubectl", args)
}

fn helm(args: &[&str]) {
    admin("helm", args);
}

fn delivery_short_names() -> String {
    kubectl(&[
        "get",
        "crd",
        "statuseddeliveries.statused.dev",
        "-o",
        "jsonpath={.spec.names.shortNames}",
    ])
}

#[test]
#[ignore = "needs the local cluster: hack/just test"]
fn helm_upgrade_upgrades_the_crds_and_uninstall_keeps_them() {
    let ns = format!("helm-{:08x}", fastrand::u32(..));
    let release = format!("it-{:06x}", fastrand::u32(..) & 0xffffff);
    kubectl(&["create", "namespace", &ns]);
    // The test API server already has the CRDs (hack/cluster.sh): let this release adopt
    // them, as `helm install` adopts resources labelled and annotated for it.
    for crd in [
        "statusedroutes.statused.dev",
        "statuseddeliveries.statused.dev",
        "statusedredeliveries.statused.dev",
    ] {
        kubectl(&[
            "annotate",
            "crd",
            crd,
            "--overwrite",
            &format!("meta.helm.sh/release-name={release}"),
            &format!("meta.helm.sh/release-namespace={ns}"),
        ]);
        kubectl(&[
            "label",
            "crd",
            crd,
            "--overwrite",
            "app.kubernetes.io/managed-by=Helm",
        ]);
    }
    // "The previous version": the same chart whose delivery CRD lacks the sdel short name.
    let chart = format!("{}/charts/statused-operator", env!("CARGO_MANIFEST_DIR"));
    let old = std::env::temp_dir().join(format!("statused-chart-{release}"));
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&chart)
        .arg(&old)
        .status()
        .unwrap();
    assert!(copied.success());
    let crds = old.join("templates/crds.yaml");
    let text = std::fs::read_to_string(&crds).unwrap();
    std::fs::write(&crds, text.replace("    shortNames:\n    - sdel\n", "")).unwrap();

    // The cluster as that version left it.
    kubectl(&[
        "patch",
        "crd",
        "statuseddeliveries.statused.dev",
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/spec/names/shortNames"}]"#,
    ]);
    helm(&["install", &release, old.to_str().unwrap(), "-n", &ns]);
    assert!(!delivery_short_names().contains("sdel"));
    helm(&["upgrade", &release, &chart, "-n", &ns, "--reuse-values"]);
    assert!(
        delivery_short_names().contains("sdel"),
        "the upgrade upgraded the CRD"
    );
    helm(&["uninstall", &release, "-n", &ns]);
    assert!(
        delivery_short_names().contains("sdel"),
        "the CRD outlives the release"
    );
    let _ = std::fs::remove_dir_all(&old);
}

#[test]
#[ignore = "needs helm and checkov: hack/just test"]
fn the_policy_linter_finds_nothing_it_was_not_told_why() {
    let digest = format!("image.digest=sha256:{}", "a".repeat(64));
    let combos: [&[&str]; 3] = [
        &[],
        &["--set", "watchNamespace=mobile-ci"],
        &["--set", "networkPolicy.enabled=true", "--set", &digest],
    ];
    for values in combos {
        let path =
            std::env::temp_dir().join(format!("statused-checkov-{:08x}.yaml", fastrand::u32(..)));
        std::fs::write(&path, render(values)).unwrap();
        // --skip-download: checkov's policies ship with it; nothing leaves this machine.
        let out = Command::new("checkov")
            .args([
                "--framework",
                "kubernetes",
                "--compact",
                "--skip-download",
                "-f",
            ])
            .arg(&path)
            .output()
            .expect("checkov runs (installed by hack/install-tools.sh)");
        let _ = std::fs::remove_file(&path);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains("Failed checks: 0,"),
            "values {values:?}:\n{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `kubectl auth can-i VERB RESOURCE --as USER -n NS`, as the test API server's admin.
fn can_i(user: &str, ns: &str, verb: &str, resource: &str) -> bool {
    let kubeconfig = std::env::var("STATUSED_TEST_ADMIN_KUBECONFIG").unwrap();
    let out = Command::new(tool("kubectl"))
        .args(["--kubeconfig", &kubeconfig, "auth", "can-i", verb, resource])
        .args(["--as", user, "-n", ns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// Whoever can create or edit a StatusedDelivery can trigger targets with made-up data and
/// no signature: no role the chart ships or aggregates grants that, checked on the
/// rendering and by the real API server's authorizer.
#[test]
#[ignore = "needs the local cluster: hack/just test"]
fn no_role_but_the_operators_may_write_deliveries() {
    use serde::Deserialize;
    let release = format!("sec-{:06x}", fastrand::u32(..) & 0xffffff);
    let chart = format!("{}/charts/statused-operator", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(tool("helm"))
        .args([
            "template",
            &release,
            &chart,
            "--namespace",
            "statused-system",
        ])
        .args(["--kube-version", "1.20.2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifests = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&manifests)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    // The operator's own role: bound to its service account.
    let operator_roles: Vec<&str> = docs
        .iter()
        .filter(|v| {
            v["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("RoleBinding"))
        })
        .filter(|v| {
            v["subjects"].as_sequence().unwrap().iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == "statused-operator"
                    || s["name"].as_str() == Some(&format!("{release}-statused-operator"))
            })
        })
        .map(|v| v["roleRef"]["name"].as_str().unwrap())
        .collect();
    assert!(!operator_roles.is_empty());
    let mut others = 0;
    for role in docs
        .iter()
        .filter(|v| v["kind"] == "ClusterRole" || v["kind"] == "Role")
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        if operator_roles.contains(&name) {
            continue;
        }
        others += 1;
        for rule in role["rules"].as_sequence().unwrap() {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_sequence()
                    .map(|s| s.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default()
            };
            let (resources, verbs) = (list("resources"), list("verbs"));
            let deliveries = resources
                .iter()
                .any(|r| r == "*" || r.starts_with("statuseddeliveries"));
            let writes = verbs
                .iter()
                .any(|v| ["*", "create", "update", "patch"].contains(&v.as_str()));
            assert!(
                !(deliveries && writes),
                "{name} writes deliveries: {rule:?}"
            );
        }
    }
    assert!(
        others >= 2,
        "the aggregated view and edit roles were checked"
    );

    // The real authorizer: a namespace user given the chart's edit role (what aggregation
    // into `edit` and `admin` gives them) writes routes, reads deliveries, writes none.
    let roles: String = docs
        .iter()
        .filter(|v| {
            v["kind"] == "ClusterRole"
                && !operator_roles.contains(&v["metadata"]["name"].as_str().unwrap())
        })
        .map(|v| format!("---\n{}", serde_yaml::to_string(v).unwrap()))
        .collect();
    let ns = format!("rbac-{:08x}", fastrand::u32(..));
    kubectl(&["create", "namespace", &ns]);
    let path = std::env::temp_dir().join(format!("statused-roles-{release}.yaml"));
    std::fs::write(&path, roles).unwrap();
    kubectl(&["apply", "-f", path.to_str().unwrap()]);
    for role in ["view", "edit", "redeliver"] {
        kubectl(&[
            "create",
            "rolebinding",
            &format!("jane-{role}"),
            "-n",
            &ns,
            "--clusterrole",
            &format!("{release}-statused-operator-{role}"),
            "--user",
            "jane",
        ]);
    }
    // And the CRD keeps a delivery's spec immutable where the API server enforces CEL rules.
    let rule = "rule: self == oldSelf";
    assert!(try_render_for("1.30.0", &[]).unwrap().contains(rule));
    assert!(
        !render(&[]).contains(rule),
        "1.20 knows no CEL rules and would refuse them"
    );

    let jane = |verb: &str, resource: &str| can_i("jane", &ns, verb, resource);
    assert!(jane("create", "statusedroutes.statused.dev"));
    assert!(jane("list", "statuseddeliveries.statused.dev"));
    for verb in ["create", "update", "patch"] {
        assert!(!jane(verb, "statuseddeliveries.statused.dev"), "{verb}");
        assert!(
            !jane(verb, "statuseddeliveries.statused.dev/status"),
            "{verb} status"
        );
    }
    // Redelivery is a request (tests/redelivery.rs shows what it does): made, not edited.
    assert!(jane("create", "statusedredeliveries.statused.dev"));
    for verb in ["update", "patch"] {
        assert!(!jane(verb, "statusedredeliveries.statused.dev"), "{verb}");
        assert!(
            !jane(verb, "statusedredeliveries.statused.dev/status"),
            "{verb} request status"
        );
    }
    kubectl(&["delete", "-f", path.to_str().unwrap()]);
    kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    let _ = std::fs::remove_file(&path);
}

#[test]
#[ignore = "needs the local cluster: hack/just test"]
fn security_settings_reach_the_operator_and_bad_ones_are_refused() {
    let manifests = render(&[
        "--set",
        "secretAccess=labeled",
        "--set",
        "replayWindow=24h",
        "--set",
        "receiver.maxInflightPerNamespace=8",
        "--set",
        "receiver.bodyTimeoutSeconds=3",
        "--set-json",
        r#"egress={"allow":["127.0.0.2/32"],"deny":["10.0.0.0/8","fd00::/8"],"profile":"strict","proxy":"http://proxy.example:3128"}"#,
    ]);
    for (name, value) in [
        ("STATUSED_SECRET_ACCESS", "labeled"),
        ("STATUSED_REPLAY_WINDOW", "24h"),
        ("STATUSED_EGRESS_ALLOW", "127.0.0.2/32"),
        ("STATUSED_EGRESS_DENY", "10.0.0.0/8,fd00::/8"),
        ("STATUSED_EGRESS_PROFILE", "strict"),
        ("STATUSED_EGRESS_PROXY", "http://proxy.example:3128"),
        ("STATUSED_MAX_INFLIGHT_PER_NAMESPACE", "8"),
        ("STATUSED_BODY_TIMEOUT_SECONDS", "3"),
    ] {
        assert!(
            manifests.contains(&format!("name: {name}\n              value: \"{value}\"")),
            "{name}={value} not rendered"
        );
    }
    let defaults = render(&[]);
    assert!(defaults.contains("name: STATUSED_EGRESS_ALLOW\n              value: \"\""));
    assert!(defaults.contains("name: STATUSED_SECRET_ACCESS\n              value: \"namespace\""));
    assert!(defaults.contains("name: STATUSED_EGRESS_PROFILE\n              value: \"default\""));
    assert!(
        !defaults.contains("STATUSED_EGRESS_PROXY"),
        "no proxy unless one is named"
    );
    // The guard learns the pod's own addresses (both families) from the downward API.
    assert!(defaults.contains("name: POD_IPS\n              valueFrom:\n                fieldRef: {fieldPath: status.podIPs}"));
    for bad in [
        "secretAccess=everything",
        "replayWindow=3days",
        "egress.allow={example.com}",
        "egress.profile=open",
        "egress.proxy=proxy.example:3128",
        "egress.proxy=socks5://proxy.example:1080",
        "receiver.maxInflightPerNamespace=0",
        "receiver.bodyTimeoutSeconds=0",
    ] {
        assert!(try_render(&["--set", bad]).is_err(), "{bad} was accepted");
    }
    server_dry_run(&manifests);
}

#[test]
#[ignore = "needs helm: hack/just test"]
fn storage_and_route_bounds_reach_the_operator_and_the_quota_is_installed_where_asked() {
    let defaults = render(&[]);
    for (name, value) in [
        ("STATUSED_MAX_DELIVERIES_PER_NAMESPACE", "2000"),
        ("STATUSED_MAX_DELIVERIES", "20000"),
        ("STATUSED_MAX_DELIVERY_BYTES_PER_NAMESPACE", "50331648"),
        ("STATUSED_MAX_DELIVERY_BYTES", "536870912"),
        ("STATUSED_MAX_ROUTES_PER_NAMESPACE", "100"),
        ("STATUSED_MAX_ROUTES", "2000"),
    ] {
        assert!(
            defaults.contains(&format!("name: {name}\n              value: \"{value}\"")),
            "{name}={value} not rendered"
        );
    }
    assert!(
        !defaults.contains("kind: ResourceQuota"),
        "no quota unless asked"
    );
    use serde::Deserialize;
    let manifests = render(&[
        "--set",
        "storage.maxDeliveriesPerNamespace=100",
        "--set-json",
        r#"storage.quota={"namespaces":["default","kube-public"],"deliveries":300}"#,
    ]);
    assert!(
        manifests
            .contains("name: STATUSED_MAX_DELIVERIES_PER_NAMESPACE\n              value: \"100\"")
    );
    let quotas: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&manifests)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| v["kind"] == "ResourceQuota")
        .collect();
    let placed: Vec<(&str, &str)> = quotas
        .iter()
        .map(|q| {
            (
                q["metadata"]["namespace"].as_str().unwrap(),
                q["spec"]["hard"]["count/statuseddeliveries.statused.dev"]
                    .as_str()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(placed, [("default", "300"), ("kube-public", "300")]);
    for bad in [
        "storage.maxDeliveries=0",
        "storage.maxDeliveryBytesPerNamespace=12",
        "storage.quota.namespaces={Not_A_Namespace}",
        "storage.maxDeliverie=5",
        "routes.maxPerNamespace=0",
    ] {
        assert!(try_render(&["--set", bad]).is_err(), "{bad} was accepted");
    }
    server_dry_run(&manifests);
}
