//! The built image runs: `hack/image.sh` builds it, this test unpacks it and runs it with
//! `runc` as the chart would (read-only root, no capabilities, uid 65532, no new privileges),
//! on the host's network namespace so it reaches the local API server, under the chart's
//! service account token. Then: `/readyz`, a signed event → 202 → delivered to a sink.
//!
//! Run by `just test` after `hack/image.sh`; STATUSED_TEST_IMAGE names the OCI layout and tag
//! (`target/image/oci:statused-operator:<version>`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{SIGNING_SECRET, Sink, TestEnv, eventually, sample_with_id};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A runc container, deleted when dropped.
struct Container {
    id: String,
    bundle: std::path::PathBuf,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .status();
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}

fn run_image(image: &str, args: &[String]) -> Container {
    let bundle = std::env::temp_dir().join(format!("statused-image-{:08x}", fastrand::u32(..)));
    let unpacked = Command::new("umoci")
        .args(["unpack", "--image", image])
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(unpacked.success(), "umoci unpack {image}");
    // The bundle directory is private to root; the container runs as 65532.
    for dir in [&bundle, &bundle.join("rootfs")] {
        Command::new("chmod").arg("755").arg(dir).status().unwrap();
    }
    let kubeconfig = std::env::var("STATUSED_TEST_OPERATOR_KUBECONFIG").unwrap();
    let kubeconfig_copy = bundle.join("kubeconfig");
    std::fs::copy(&kubeconfig, &kubeconfig_copy).unwrap();
    Command::new("chmod")
        .arg("644")
        .arg(&kubeconfig_copy)
        .status()
        .unwrap();

    let path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut process_args = vec!["/statused-operator".to_string()];
    process_args.extend(args.iter().cloned());
    config["process"]["args"] = json!(process_args);
    config["process"]["terminal"] = json!(false);
    config["process"]["user"] = json!({"uid": 65532, "gid": 65532});
    config["process"]["noNewPrivileges"] = json!(true);
    config["process"]["capabilities"] = json!({
        "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []});
    let env = config["process"]["env"].as_array_mut().unwrap();
    env.push(json!("KUBECONFIG=/var/run/statused/kubeconfig"));
    env.push(json!("RUST_LOG=info"));
    config["root"]["readonly"] = json!(true);
    // Host network: the API server and the sink listen on the host's 127.0.0.1.
    let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|n| n["type"] != "network");
    config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/var/run/statused/kubeconfig", "type": "bind",
        "source": kubeconfig_copy, "options": ["rbind", "ro"]}));
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let id = format!("statused-test-{:08x}", fastrand::u32(..));
    let log = std::fs::File::create(bundle.join("container.log")).unwrap();
    let started = Command::new("runc")
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert!(started.success(), "runc run: see {}", bundle.display());
    Container { id, bundle }
}

#[tokio::test]
#[ignore = "needs the operator image and the local cluster: hack/just test"]
async fn the_image_runs_read_only_as_65532_and_delivers_a_signed_event() {
    let image = std::env::var("STATUSED_TEST_IMAGE")
        .expect("STATUSED_TEST_IMAGE: run through `just test`, which builds the image first");
    let sink = Sink::start(204).await;
    let env = TestEnv::new("image").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret("sink", &[("url", &format!("{}/deliver", sink.url()))])
        .await;
    let (webhook, metrics) = (free_port(), free_port());
    let container = run_image(
        &image,
        &[
            "run".into(),
            "--namespace".into(),
            env.ns.clone(),
            "--webhook-addr".into(),
            format!("127.0.0.1:{webhook}"),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics}"),
            // The sink listens on loopback, which the outbound guard refuses unless allowed.
            "--egress-allow".into(),
            "127.0.0.1/32".into(),
        ],
    );
    env.apply_route(
        "builds",
        json!({
            "signingSecrets": [{"name": "statused-webhook"}],
            "rules": [{"name": "builds", "match": {"types": ["com.statused.build.status.updated"]},
                       "targets": [{"webhook": {"urlSecretRef": {"name": "sink", "key": "url"}}}]}],
        }),
    )
    .await;
    env.wait_ready("builds", "True").await;
    let log = container.bundle.join("container.log");
    eventually("/readyz of the container", || async {
        let r = reqwest::get(format!("http://127.0.0.1:{metrics}/readyz")).await;
        r.ok().filter(|r| r.status().is_success()).map(|_| ())
    })
    .await;

    let event = sample_with_id("build-valid.json", "image-1");
    let signature = statused_operator::signature::sign(SIGNING_SECRET.as_bytes(), &event);
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{webhook}/hooks/{}/builds",
            env.ns
        ))
        .header("X-Statused-Signature", signature)
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status().as_u16(),
        202,
        "container log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let body: serde_json::Value = answer.json().await.unwrap();
    let delivery = env
        .wait_delivery_finished(body["delivery"].as_str().unwrap())
        .await;
    assert_eq!(delivery.status.unwrap().phase.as_str(), "Succeeded");
    assert_eq!(sink.requests().len(), 1);
    // It really runs as 65532, with no capabilities, on a read-only root.
    let state = Command::new("runc")
        .args(["state", &container.id])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    let pid = state["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(field("Uid:"), "65532");
    assert_eq!(field("CapEff:"), "0000000000000000");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap();
    assert!(
        root.split_whitespace()
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{root}"
    );
    // Its text log goes to a file here, as to `kubectl logs`: plain, no colour codes.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("statused-operator started"), "{logged}");
    assert!(
        !logged.contains('\u{1b}'),
        "ANSI escape codes in a non-terminal log"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
}
