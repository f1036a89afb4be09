//! External CI and chat targets end to end: a realistic route built from the Statused seed's
//! scenarios, local stand-ins for each service checking the exact request it documents, the
//! response policy case by case, and GitHub App authentication.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{SIGNING_SECRET, Sink, TestEnv, eventually, sample, sample_with_id};

struct Services {
    github: Sink,
    slack: Sink,
    jenkins: Sink,
    teams: Sink,
    gitlab: Sink,
    bitrise: Sink,
    circleci: Sink,
    azure: Sink,
}

impl Services {
    async fn start() -> Self {
        Self {
            github: Sink::start(204).await,
            slack: Sink::start(200).await,
            jenkins: Sink::start(200).await,
            teams: Sink::start(202).await,
            gitlab: Sink::start(201).await,
            bitrise: Sink::start(201).await,
            circleci: Sink::start(201).await,
            azure: Sink::start(200).await,
        }
    }
}

async fn mobile_env(prefix: &str, s: &Services) -> TestEnv {
    let env = TestEnv::new(prefix).await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret("github-token", &[("token", "ghp_gh_t0ken")])
        .await;
    env.apply_secret(
        "slack-hook",
        &[(
            "url",
            &format!("{}/services/T000/B000/SL4CK", s.slack.url()),
        )],
    )
    .await;
    env.apply_secret("jenkins", &[("token", "jenkins-t0ken")])
        .await;
    env.apply_secret(
        "teams-hook",
        &[(
            "url",
            &format!(
                "{}/workflows/abc/triggers/manual/paths/invoke?sig=T34MS",
                s.teams.url()
            ),
        )],
    )
    .await;
    env.apply_secret("gitlab", &[("token", "glptt-t0ken")])
        .await;
    env.apply_secret("bitrise", &[("token", "bitrise-t0ken")])
        .await;
    env.apply_secret("circleci", &[("token", "CCIPAT_t0ken")])
        .await;
    env.apply_secret("azure", &[("secret", "azure-hmac-key")])
        .await;
    env
}

/// The seed's scenarios as one route.
fn mobile_route(s: &Services) -> Value {
    json!({
        "signingSecrets": [{"name": "statused-webhook"}],
        "rules": [
            {"name": "valid-build-ships",
             "match": {"types": ["com.statused.build.status.updated"], "statuses": ["Valid"]},
             "targets": [{"githubDispatch": {"repository": "acme/ios-app", "workflow": "release.yml", "ref": "main",
                          "inputs": {"version": "$(data.version)", "build": "$(data.build_version)"},
                          "tokenSecretRef": {"name": "github-token"}, "apiURL": s.github.url()}}]},
            {"name": "rejected-alerts",
             "match": {"types": ["com.statused.app.status.updated"], "statuses": ["Rejected"]},
             "targets": [{"slack": {"urlSecretRef": {"name": "slack-hook"}}},
                         {"jenkins": {"baseURL": format!("{}/jenkins", s.jenkins.url()), "tokenSecretRef": {"name": "jenkins"},
                                      "body": {"app": "$(data.app_name)", "version": "$(data.version)", "reason": "$(data.message)"}}}]},
            {"name": "live-announces",
             "match": {"types": ["com.statused.app.status.updated"], "statuses": ["Ready for Sale"]},
             "targets": [{"teams": {"urlSecretRef": {"name": "teams-hook"}}}]},
            {"name": "in-review-prepares",
             "match": {"statuses": ["In Review"]},
             "targets": [{"gitlabPipeline": {"project": "mobile/ios-app", "ref": "main",
                          "variables": {"APP_VERSION": "$(data.version)", "STATUSED_EVENT": "$(id)"},
                          "tokenSecretRef": {"name": "gitlab"}, "baseURL": s.gitlab.url()}}]},
            {"name": "invalid-build-rebuilds",
             "match": {"types": ["com.statused.build.status.updated"], "statuses": ["Invalid"]},
             "targets": [{"bitrise": {"appSlug": "a1b2c3d4e5f6", "branch": "main", "workflowId": "rebuild",
                                      "environments": {"FAILED_BUILD": "$(data.build_version)"},
                                      "tokenSecretRef": {"name": "bitrise"}, "baseURL": s.bitrise.url()}},
                         {"circleci": {"projectSlug": "gh/acme/ios-app", "definitionId": "6f1c2a9e-0b7d-4c52-9d1e-0a5b3c7d9e11",
                                       "branch": "main", "parameters": {"failed_build": "$(data.build_version)", "notify": true},
                                       "tokenSecretRef": {"name": "circleci"}, "baseURL": s.circleci.url()}}]},
            {"name": "account-needs-attention",
             "match": {"types": ["com.statused.account.status.updated"]},
             "targets": [{"azureDevOps": {"organization": "acme", "webhookName": "statusedAccount",
                                          "body": {"resource": {"status": "$(data.status)", "message": "$(data.message)"}},
                                          "signature": {"secretRef": {"name": "azure"}, "header": "X-Statused-Checksum"},
                                          "baseURL": s.azure.url()}}]}
        ]
    })
}

async fn deliver(
    env: &TestEnv,
    op: &statused_operator::operator::Running,
    sample_name: &str,
) -> statused_operator::api::StatusedDeliveryStatus {
    let (code, answer) = env
        .post_signed(op, "mobile", &sample(sample_name), SIGNING_SECRET)
        .await;
    assert_eq!(code, 202, "{sample_name}: {answer}");
    let delivery = env
        .wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    let status = delivery.status.unwrap();
    assert_eq!(
        status.phase.as_str(),
        "Succeeded",
        "{sample_name}: {:?}",
        status.targets
    );
    status
}

fn only(sink: &Sink) -> support::Recorded {
    let requests = sink.requests();
    assert_eq!(
        requests.len(),
        1,
        "{:?}",
        requests
            .iter()
            .map(|r| r.uri.to_string())
            .collect::<Vec<_>>()
    );
    requests.into_iter().next().unwrap()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn seed_scenarios_reach_each_service_exactly_as_it_documents() {
    let s = Services::start().await;
    let env = mobile_env("services", &s).await;
    let op = env.operator_with_route("mobile", mobile_route(&s)).await;

    // Valid build → GitHub workflow_dispatch.
    deliver(&env, &op, "build-valid.json").await;
    let r = only(&s.github);
    assert_eq!(
        (r.method.as_str(), r.uri.path()),
        (
            "POST",
            "/repos/acme/ios-app/actions/workflows/release.yml/dispatches"
        )
    );
    assert_eq!(r.header("authorization"), "Bearer ghp_gh_t0ken");
    assert_eq!(r.header("accept"), "application/vnd.github+json");
    assert_eq!(r.header("x-github-api-version"), "2022-11-28");
    assert_eq!(
        r.header("x-statused-event-id"),
        "b7a1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d"
    );
    assert_eq!(
        r.json(),
        json!({"ref": "main", "inputs": {"version": "1.2.3", "build": "456"}})
    );

    // Rejected → Slack (default message) and Jenkins.
    deliver(&env, &op, "app-rejected.json").await;
    let r = only(&s.slack);
    assert_eq!(
        (r.method.as_str(), r.uri.path()),
        ("POST", "/services/T000/B000/SL4CK")
    );
    assert_eq!(r.header("content-type"), "application/json");
    let slack = r.json();
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("❌ Markdown Email v1.2.3 was rejected"),
        "{slack}"
    );
    assert_eq!(slack["attachments"][0]["color"].as_str().unwrap().len(), 7);
    let r = only(&s.jenkins);
    assert_eq!(
        (r.method.as_str(), r.uri.path(), r.uri.query()),
        ("POST", "/jenkins/generic-webhook-trigger/invoke", None)
    );
    assert_eq!(r.header("token"), "jenkins-t0ken");
    assert_eq!(r.json()["app"], "Markdown Email");

    // Ready for Sale → Teams, one Adaptive Card.
    deliver(&env, &op, "app-ready-for-sale.json").await;
    let r = only(&s.teams);
    assert_eq!(r.uri.path(), "/workflows/abc/triggers/manual/paths/invoke");
    assert_eq!(r.uri.query(), Some("sig=T34MS"));
    let teams = r.json();
    assert_eq!(teams["type"], "message");
    assert_eq!(
        teams["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(
        teams["attachments"][0]["content"]["body"][0]["text"],
        "🎉 Markdown Email v1.2.3 is live!"
    );

    // In Review → GitLab pipeline trigger, a form post.
    deliver(&env, &op, "app-in-review.json").await;
    let r = only(&s.gitlab);
    assert_eq!(
        r.uri.path(),
        "/api/v4/projects/mobile%2Fios-app/trigger/pipeline"
    );
    assert_eq!(
        r.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&r.body).into_owned().collect();
    let in_review_id =
        serde_json::from_slice::<Value>(&sample("app-in-review.json")).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
    assert_eq!(
        form,
        vec![
            ("token".to_string(), "glptt-t0ken".to_string()),
            ("ref".to_string(), "main".to_string()),
            ("variables[APP_VERSION]".to_string(), "1.2.3".to_string()),
            ("variables[STATUSED_EVENT]".to_string(), in_review_id),
        ]
    );

    // Build Invalid → Bitrise and CircleCI.
    deliver(&env, &op, "build-invalid.json").await;
    let r = only(&s.bitrise);
    assert_eq!(r.uri.path(), "/v0.1/apps/a1b2c3d4e5f6/builds");
    assert_eq!(r.header("authorization"), "bitrise-t0ken");
    let bitrise = r.json();
    assert_eq!(bitrise["hook_info"], json!({"type": "bitrise"}));
    assert_eq!(bitrise["build_params"]["branch"], "main");
    assert_eq!(bitrise["build_params"]["workflow_id"], "rebuild");
    assert_eq!(
        bitrise["build_params"]["environments"][0]["mapped_to"],
        "FAILED_BUILD"
    );
    let r = only(&s.circleci);
    assert_eq!(r.uri.path(), "/api/v2/project/gh/acme/ios-app/pipeline/run");
    assert_eq!(r.header("circle-token"), "CCIPAT_t0ken");
    let build = bitrise["build_params"]["environments"][0]["value"].clone();
    assert_eq!(
        r.json(),
        json!({"definition_id": "6f1c2a9e-0b7d-4c52-9d1e-0a5b3c7d9e11", "config": {"branch": "main"},
               "checkout": {"branch": "main"}, "parameters": {"failed_build": build, "notify": true}})
    );

    // An account event → Azure DevOps incoming webhook, HMAC-SHA1 signed.
    deliver(&env, &op, "account-agreement.json").await;
    let r = only(&s.azure);
    assert_eq!(
        r.uri.path(),
        "/acme/_apis/public/distributedtask/webhooks/statusedAccount"
    );
    assert_eq!(r.uri.query(), Some("api-version=6.0-preview"));
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(b"azure-hmac-key").unwrap();
    mac.update(&r.body);
    assert_eq!(
        r.header("x-statused-checksum"),
        format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
    );
    assert_eq!(r.json()["resource"]["status"], "Action Required");
    op.shutdown().await;
}

/// A route with one webhook target pointing at `sink`.
async fn webhook_env(
    prefix: &str,
    target: Value,
) -> (TestEnv, statused_operator::operator::Running) {
    webhook_env_in(TestEnv::new(prefix).await, target).await
}

/// [`webhook_env`] in `env`, whose Secrets the target may read.
async fn webhook_env_in(
    env: TestEnv,
    target: Value,
) -> (TestEnv, statused_operator::operator::Running) {
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    let op = env.start_operator().await;
    env.apply_route(
        "mobile",
        json!({"signingSecrets": [{"name": "statused-webhook"}],
                                     "rules": [{"name": "all", "targets": [target]}]}),
    )
    .await;
    env.wait_ready("mobile", "True").await;
    (env, op)
}

async fn finished(
    env: &TestEnv,
    op: &statused_operator::operator::Running,
) -> statused_operator::api::TargetStatus {
    let (code, answer) = env
        .post_signed(
            op,
            "mobile",
            &sample("app-ready-for-sale.json"),
            SIGNING_SECRET,
        )
        .await;
    assert_eq!(code, 202);
    let delivery = env
        .wait_delivery_finished(answer["delivery"].as_str().unwrap())
        .await;
    delivery.status.unwrap().targets.remove(0)
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn too_many_requests_is_retried_after_the_servers_retry_after() {
    let sink = Sink::start(200).await;
    sink.answer_with_header(429, "Retry-After", "2");
    let (env, op) = webhook_env("policy-429", json!({"webhook": {"url": sink.url()}})).await;
    let (code, answer) = env
        .post_signed(
            &op,
            "mobile",
            &sample("app-ready-for-sale.json"),
            SIGNING_SECRET,
        )
        .await;
    assert_eq!(code, 202);
    let name = answer["delivery"].as_str().unwrap().to_string();
    // Between the attempts the delivery shows why and when it will try again.
    let waiting = eventually("running", || async {
        let d = env.deliveries().get(&name).await.ok()?;
        let t = d.status?.targets.into_iter().next()?;
        (t.phase.as_str() == "Running").then_some(t)
    })
    .await;
    assert_eq!(
        (waiting.attempts, waiting.last_response_code),
        (1, Some(429))
    );
    assert!(waiting.last_error.unwrap().starts_with("HTTP 429"));
    assert!(waiting.next_attempt_at.is_some());
    let target = env
        .wait_delivery_finished(&name)
        .await
        .status
        .unwrap()
        .targets
        .remove(0);
    assert_eq!((target.phase.as_str(), target.attempts), ("Succeeded", 2));
    let requests = sink.requests();
    // The operator's own backoff is 100 ms here: a gap of 2 s is the server's Retry-After.
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn unavailable_then_ok_is_retried_to_success() {
    let sink = Sink::start(200).await;
    sink.answer_with(&[503]);
    let (env, op) = webhook_env(
        "policy-503",
        json!({"webhook": {"url": sink.url(), "idempotencyKey": true}}),
    )
    .await;
    let target = finished(&env, &op).await;
    assert_eq!(
        (
            target.phase.as_str(),
            target.attempts,
            target.last_response_code
        ),
        ("Succeeded", 2, Some(200))
    );
    let requests = sink.requests();
    // Both attempts carry the same keys, so the receiver can tell the retry from a new event.
    assert_eq!(
        requests[0].header("idempotency-key"),
        requests[1].header("idempotency-key")
    );
    assert_eq!(
        requests[0].header("x-statused-event-id"),
        "6af15d63-dc69-4088-8adf-cdbb7d204eb4"
    );
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn not_found_fails_at_once_and_records_the_answer_without_secrets() {
    let sink = Sink::start(404).await;
    let env = TestEnv::new("policy-404").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret(
        "slack-hook",
        &[("url", &format!("{}/services/T000/B000/S3CR3T", sink.url()))],
    )
    .await;
    let op = env.start_operator().await;
    env.apply_route("mobile", json!({"signingSecrets": [{"name": "statused-webhook"}],
        "rules": [{"name": "all", "targets": [{"slack": {"urlSecretRef": {"name": "slack-hook"}}}]}]}))
        .await;
    env.wait_ready("mobile", "True").await;
    let target = finished(&env, &op).await;
    assert_eq!(
        (
            target.phase.as_str(),
            target.attempts,
            target.last_response_code
        ),
        ("Failed", 1, Some(404))
    );
    let error = target.last_error.unwrap();
    assert_eq!(error, "HTTP 404: answer 404 for [redacted]");
    assert_eq!(sink.requests().len(), 1);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_target_that_does_not_answer_in_time_is_retried() {
    let sink = Sink::start(200).await;
    sink.answer_late(200, Duration::from_secs(3));
    let (env, op) = webhook_env(
        "policy-timeout",
        json!({"timeoutSeconds": 1, "webhook": {"url": sink.url()}}),
    )
    .await;
    let target = finished(&env, &op).await;
    assert_eq!((target.phase.as_str(), target.attempts), ("Succeeded", 2));
    assert_eq!(sink.requests().len(), 2);
    op.shutdown().await;
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn webhook_re_signs_the_body_it_sends() {
    let sink = Sink::start(200).await;
    sink.require_signature("X-Statused-Signature", "downstream-key");
    let env = TestEnv::new("resign").await;
    env.apply_secret("downstream", &[("secret", "downstream-key")])
        .await;
    let (env, op) = {
        env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
            .await;
        let op = env.start_operator().await;
        env.apply_route("mobile", json!({"signingSecrets": [{"name": "statused-webhook"}],
            "rules": [{"name": "all", "targets": [{"webhook": {"url": sink.url(), "body": {"app": "$(data.app_name)"},
                                                              "signature": {"secretRef": {"name": "downstream"}}}}]}]}))
            .await;
        env.wait_ready("mobile", "True").await;
        (env, op)
    };
    let target = finished(&env, &op).await;
    assert_eq!(
        target.phase.as_str(),
        "Succeeded",
        "{:?}",
        target.last_error
    );
    assert_eq!(sink.requests()[0].json(), json!({"app": "Markdown Email"}));
    op.shutdown().await;
}

/// Verifies `r` as a Standard Webhooks receiver does (the specification's steps, written
/// here on their own): the timestamp within 5 minutes, and a `v1` signature over
/// `id.timestamp.body` under `key` among the space-separated ones. The id it carried.
fn verify_standard_webhook(r: &support::Recorded, key: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let (id, ts) = (r.header("webhook-id"), r.header("webhook-timestamp"));
    let age = jiff::Timestamp::now().as_second() - ts.parse::<i64>().unwrap();
    assert!(age.abs() <= 300, "timestamp {ts} is {age} s off");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let signatures = r.header("webhook-signature");
    assert!(
        signatures
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str())),
        "{signatures}"
    );
    id.to_string()
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn webhook_signs_as_standard_webhooks_with_one_id_across_retries_and_both_keys_in_rotation() {
    let sink = Sink::start(204).await;
    sink.answer_with(&[503]);
    let env = TestEnv::new("standard-webhooks").await;
    // Rotation: the receiver still knows the old key, or already the new one.
    let (old, new) = (
        b"the-old-signing-key".as_slice(),
        b"the-new-signing-key".as_slice(),
    );
    let whsec = |k: &[u8]| {
        use base64::Engine;
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(k)
        )
    };
    env.apply_secret("sw-old", &[("secret", &whsec(old))]).await;
    env.apply_secret("sw-new", &[("secret", &whsec(new))]).await;
    let target = json!({"webhook": {"url": sink.url(),
        "standardWebhooks": {"secretRefs": [{"name": "sw-new"}, {"name": "sw-old"}]}}});
    let (env, op) = webhook_env_in(env, target).await;
    let target = finished(&env, &op).await;
    assert_eq!(
        (target.phase.as_str(), target.attempts),
        ("Succeeded", 2),
        "{:?}",
        target.last_error
    );
    let requests = sink.requests();
    assert_eq!(requests.len(), 2, "the 503, then the retry");
    let event: Value = serde_json::from_slice(&sample("app-ready-for-sale.json")).unwrap();
    for r in &requests {
        for key in [old, new] {
            assert_eq!(
                verify_standard_webhook(r, key),
                event["id"].as_str().unwrap()
            );
        }
    }
    op.shutdown().await;
}

/// An RSA key pair made for this test by openssl: (private PEM, public PEM).
fn test_rsa_key() -> (String, String) {
    let dir = std::env::temp_dir().join(format!("statused-app-key-{}", fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    let public = dir.join("pub.pem");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let ok = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let pair = (
        std::fs::read_to_string(&key).unwrap(),
        std::fs::read_to_string(&public).unwrap(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    pair
}

#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn github_app_exchanges_a_signed_jwt_for_an_installation_token_and_reuses_it() {
    let (private_pem, public_pem) = test_rsa_key();
    let github = Sink::start(204).await;
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
    github.route(
        "/app/installations/4242/access_tokens",
        201,
        json!({"token": "ghs_installationT0ken", "expires_at": expires.to_string()}),
    );
    let env = TestEnv::new("gh-app").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret("release-app", &[("private-key", &private_pem)])
        .await;
    let op = env.start_operator().await;
    env.apply_route("mobile", json!({"signingSecrets": [{"name": "statused-webhook"}],
        "rules": [{"name": "all", "targets": [{"githubDispatch": {
            "repository": "acme/ios-app", "eventType": "statused",
            "app": {"appId": 123456, "installationId": "4242", "privateKeySecretRef": {"name": "release-app"}},
            "apiURL": github.url()}}]}]}))
        .await;
    env.wait_ready("mobile", "True").await;

    // Two different events.
    let first = sample("app-in-review.json");
    let second = sample_with_id("app-in-review.json", "a-second-event");
    for body in [first, second] {
        let (code, answer) = env.post_signed(&op, "mobile", &body, SIGNING_SECRET).await;
        assert_eq!(code, 202, "{answer}");
        let d = env
            .wait_delivery_finished(answer["delivery"].as_str().unwrap())
            .await;
        assert_eq!(d.status.unwrap().phase.as_str(), "Succeeded");
    }

    let exchanges = github.requests_to("/app/installations/4242/access_tokens");
    assert_eq!(
        exchanges.len(),
        1,
        "the installation token is reused until it nears expiry"
    );
    let jwt = exchanges[0]
        .header("authorization")
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat"]);
    let claims = jsonwebtoken::decode::<Value>(
        &jwt,
        &jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["iss"], 123456);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(
        exp - iat <= 600,
        "GitHub accepts JWTs valid for at most ten minutes"
    );
    assert!(iat <= jiff::Timestamp::now().as_second());
    assert_eq!(exchanges[0].header("accept"), "application/vnd.github+json");

    let dispatches = github.requests_to("/repos/acme/ios-app/dispatches");
    assert_eq!(dispatches.len(), 2);
    for d in &dispatches {
        assert_eq!(d.header("authorization"), "Bearer ghs_installationT0ken");
    }
    eventually("nothing else", || async {
        (github.requests().len() == 3).then_some(())
    })
    .await;
    op.shutdown().await;
}

/// Jenkins' Generic Webhook Trigger answers 500 when one of the jobs a token names failed
/// after others started: retrying would start those again, so only a 500 in which nothing
/// started is retried.
#[tokio::test]
#[ignore = "needs the local cluster: hack/just test"]
async fn a_jenkins_500_is_retried_only_when_no_job_started() {
    let jenkins = Sink::start(200).await;
    jenkins.route(
        "/partly/generic-webhook-trigger/invoke",
        500,
        json!({"message": "There were errors when triggering jobs.", "jobs": {
            "ios-release": {"triggered": true, "id": 41, "url": "queue/item/41/"},
            "android-release": "Exception occurred (class java.lang.RuntimeException: boom)"}}),
    );
    jenkins.route(
        "/none/generic-webhook-trigger/invoke",
        500,
        json!({"message": "There were errors when triggering jobs.", "jobs": {
            "ios-release": "Exception occurred (class java.lang.RuntimeException: boom)"}}),
    );
    let env = TestEnv::new("jenkins500").await;
    env.apply_secret("statused-webhook", &[("secret", SIGNING_SECRET)])
        .await;
    env.apply_secret("jenkins", &[("token", "jenkins-t0ken")])
        .await;
    let target = |path: &str| json!({"jenkins": {"baseURL": format!("{}/{path}", jenkins.url()), "tokenSecretRef": {"name": "jenkins"}}});
    let op = env
        .operator_with_route(
            "mobile",
            json!({"signingSecrets": [{"name": "statused-webhook"}],
                   "rules": [{"name": "r", "targets": [target("partly"), target("none")]}]}),
        )
        .await;
    let delivery = env
        .deliver(&op, "mobile", &sample("app-rejected.json"))
        .await;
    let status = delivery.status.unwrap();
    assert_eq!(
        status.targets[0].attempts, 1,
        "some jobs started: not retried"
    );
    assert_eq!(
        status.targets[0].phase,
        statused_operator::api::DeliveryPhase::Failed
    );
    assert!(status.targets[1].attempts > 1, "nothing started: retried");
    assert!(
        !status.targets[0]
            .last_error
            .clone()
            .unwrap()
            .contains("jenkins-t0ken")
    );
    op.shutdown().await;
}
