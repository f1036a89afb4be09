//! Test harness: clients for the real API server started by `hack/cluster.sh`, a namespace
//! per test, an operator per test scoped to that namespace and running with the chart's
//! service account, and HTTP sinks on 127.0.0.1 standing in for GitHub and chat services.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use statused_operator::api::{StatusedDelivery, StatusedRoute};
use statused_operator::backoff::Backoff;
use statused_operator::operator::{self, Running};

pub const SIGNING_SECRET: &str = "statused-test-secret";

async fn config_from(var: &str) -> Config {
    statused_operator::install_crypto_provider();
    let path = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this test needs the local cluster. Mark it \
             `#[ignore = \"needs the local cluster: hack/just test\"]`: `hack/just test` \
             starts the API server (hack/cluster.sh) and runs it"
        )
    });
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap()
}

async fn client_from(var: &str) -> Client {
    Client::try_from(config_from(var).await).unwrap()
}

/// The API server's address (127.0.0.1:port), to put a fault proxy in front of it.
pub async fn api_server_addr() -> SocketAddr {
    let config = config_from("STATUSED_TEST_OPERATOR_KUBECONFIG").await;
    let authority = config.cluster_url.authority().unwrap().as_str().to_string();
    authority.parse().unwrap()
}

/// A sample event as Statused would send it now: its `time` is now, inside the replay window
/// (the files keep the time they were captured at).
pub fn sample(name: &str) -> Vec<u8> {
    let file = std::fs::read(format!(
        "{}/tests/fixtures/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut event: serde_json::Value = serde_json::from_slice(&file).unwrap();
    event["time"] = jiff::Timestamp::now().to_string().into();
    serde_json::to_vec(&event).unwrap()
}

/// One test's namespace, admin client and operator client.
pub struct TestEnv {
    pub admin: Client,
    pub operator_client: Client,
    pub ns: String,
    /// The API server's address and port.
    pub api_server: SocketAddr,
}

impl TestEnv {
    pub async fn new(prefix: &str) -> Self {
        // RUST_LOG=statused_operator=debug shows the operator's logs for a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let admin = client_from("STATUSED_TEST_ADMIN_KUBECONFIG").await;
        let operator_client = client_from("STATUSED_TEST_OPERATOR_KUBECONFIG").await;
        let ns = format!("{prefix}-{:08x}", fastrand::u32(..));
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        Self {
            admin,
            operator_client,
            ns,
            api_server: api_server_addr().await,
        }
    }

    /// The operator as the chart runs it, but scoped to this namespace and with short retries.
    pub async fn start_operator(&self) -> Running {
        operator::start(self.operator_client.clone(), self.operator_config())
            .await
            .unwrap()
    }

    /// The operator with some settings changed from [`Self::operator_config`].
    pub async fn start_operator_with(&self, change: impl FnOnce(&mut operator::Config)) -> Running {
        let mut config = self.operator_config();
        change(&mut config);
        operator::start(self.operator_client.clone(), config)
            .await
            .unwrap()
    }

    /// The operator (chart RBAC) with all of its API server traffic passing `proxy`, and
    /// some settings changed.
    pub async fn start_operator_through(
        &self,
        proxy: &proxy::FaultProxy,
        change: impl FnOnce(&mut operator::Config),
    ) -> Running {
        let mut config = config_from("STATUSED_TEST_OPERATOR_KUBECONFIG").await;
        config.cluster_url = format!("https://{}", proxy.addr).parse().unwrap();
        let mut operator_config = self.operator_config();
        change(&mut operator_config);
        operator::start(Client::try_from(config).unwrap(), operator_config)
            .await
            .unwrap()
    }

    /// The operator with the RBAC the chart renders for `tekton.enabled=false`.
    pub async fn start_operator_without_tekton_rbac(&self) -> Running {
        let client = client_from("STATUSED_TEST_NOTEKTON_KUBECONFIG").await;
        operator::start(client, self.operator_config())
            .await
            .unwrap()
    }

    /// Objects of an arbitrary kind in this namespace (PipelineRuns, Workflows).
    pub fn dynamic(
        &self,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
    ) -> Api<DynamicObject> {
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: kind.into(),
            plural: plural.into(),
        };
        Api::namespaced_with(self.admin.clone(), &self.ns, &ar)
    }

    /// Registers the stand-in CRDs under tests/fixtures/crds, as if Tekton and Argo were
    /// installed.
    pub async fn install_stand_in_crds(&self) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.admin.clone());
        for file in ["tekton-pipelinerun.yaml", "argo-workflow.yaml"] {
            let path = format!("{}/tests/fixtures/crds/{file}", env!("CARGO_MANIFEST_DIR"));
            let crd: CustomResourceDefinition =
                serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let name = crd.metadata.name.clone().unwrap();
            crds.patch(
                &name,
                &PatchParams::apply("tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap();
        }
    }

    /// One of several replicas electing a leader through the Lease `lease` (in the chart's
    /// namespace, where its RBAC allows Leases), renewing every 500 ms.
    pub async fn start_replica(&self, lease: &str, identity: &str) -> Running {
        let config = operator::Config {
            leader_election: Some(statused_operator::leader::LeaseConfig {
                namespace: "statused-system".into(),
                name: lease.into(),
                identity: identity.into(),
                lease_duration: Duration::from_secs(3),
                renew_every: Duration::from_millis(500),
            }),
            ..self.operator_config()
        };
        operator::start(self.operator_client.clone(), config)
            .await
            .unwrap()
    }

    /// A replica that receives and records events but does not deliver them.
    pub async fn start_receiver_only(&self) -> Running {
        let config = operator::Config {
            executor: false,
            ..self.operator_config()
        };
        operator::start(self.operator_client.clone(), config)
            .await
            .unwrap()
    }

    pub fn operator_config(&self) -> operator::Config {
        operator::Config {
            webhook_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            namespace: Some(self.ns.clone()),
            retry_backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
            request_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(3),
            prune_interval: Duration::from_millis(200),
            shutdown_drain: Duration::ZERO,
            route_status_interval: Duration::from_millis(200),
            api_recheck: Duration::from_secs(1),
            follow_interval: Duration::from_secs(1),
            // The stand-ins listen on 127.0.0.1, which the outbound guard refuses unless
            // allowed; the API server there stays refused (tests/egress.rs).
            egress_allow: statused_operator::egress::parse_cidrs("127.0.0.1/32").unwrap(),
            api_server: vec![self.api_server],
            ..operator::Config::default()
        }
    }

    pub fn routes(&self) -> Api<StatusedRoute> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// How many StatusedDeliveries the namespace holds.
    pub async fn delivery_count(&self) -> usize {
        self.deliveries()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len()
    }

    pub fn deliveries(&self) -> Api<StatusedDelivery> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// Creates a delivery as an admin would by hand (or an older operator did): `delivery` is
    /// its JSON.
    pub async fn create_delivery(&self, delivery: serde_json::Value) {
        self.deliveries()
            .create(
                &Default::default(),
                &serde_json::from_value(delivery).unwrap(),
            )
            .await
            .unwrap();
    }

    pub async fn apply_secret(&self, name: &str, data: &[(&str, &str)]) {
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), &self.ns);
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "stringData": data.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        secrets
            .patch(
                name,
                &PatchParams::apply("tests").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    pub async fn apply_route(&self, name: &str, spec: serde_json::Value) {
        self.try_apply_route(name, spec).await.unwrap();
    }

    /// Applies a route, returning the API server's refusal if it gives one.
    pub async fn try_apply_route(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> Result<(), kube::Error> {
        let route = serde_json::json!({
            "apiVersion": "statused.dev/v1alpha1", "kind": "StatusedRoute",
            "metadata": {"name": name}, "spec": spec,
        });
        self.routes()
            .patch(
                name,
                &PatchParams::apply("tests").force(),
                &Patch::Apply(&route),
            )
            .await
            .map(|_| ())
    }

    pub async fn delete_route(&self, name: &str) {
        self.routes()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Waits for the route's Ready condition to have `status` and returns (reason, message).
    pub async fn wait_ready(&self, name: &str, status: &str) -> (String, String) {
        let routes = self.routes();
        eventually(&format!("route {name} Ready={status}"), || async {
            let route = routes.get(name).await.ok()?;
            let s = route.status?;
            let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
            (c.status == status && s.observed_generation == route.metadata.generation)
                .then(|| (c.reason.clone(), c.message.clone()))
        })
        .await
    }

    pub async fn wait_delivery_finished(&self, name: &str) -> StatusedDelivery {
        let deliveries = self.deliveries();
        eventually(&format!("delivery {name} finished"), || async {
            let d = deliveries.get(name).await.ok()?;
            d.status.as_ref()?.phase.is_finished().then_some(d)
        })
        .await
    }

    /// Sends `body` signed with the test secret, expects 202 and waits for the delivery to
    /// finish.
    pub async fn deliver(&self, running: &Running, route: &str, body: &[u8]) -> StatusedDelivery {
        let (code, answer) = self.post_signed(running, route, body, SIGNING_SECRET).await;
        assert_eq!(code, 202, "{answer}");
        self.wait_delivery_finished(answer["delivery"].as_str().unwrap())
            .await
    }

    /// Starts an operator and applies the route, waiting until it is Ready.
    pub async fn operator_with_route(&self, route: &str, spec: serde_json::Value) -> Running {
        let op = self.start_operator().await;
        self.apply_route(route, spec).await;
        self.wait_ready(route, "True").await;
        op
    }

    /// Signs `body` and POSTs it to the route, like Statused, and expects it accepted (202):
    /// the name of the delivery that records it.
    pub async fn accept(&self, running: &Running, route: &str, body: &[u8]) -> String {
        let (code, answer) = self.post_signed(running, route, body, SIGNING_SECRET).await;
        assert_eq!(code, 202, "{answer}");
        answer["delivery"].as_str().unwrap().to_string()
    }

    /// Signs `body` with `secret` and POSTs it to the route, like Statused.
    pub async fn post_signed(
        &self,
        running: &Running,
        route: &str,
        body: &[u8],
        secret: &str,
    ) -> (u16, serde_json::Value) {
        let signature = statused_operator::signature::sign(secret.as_bytes(), body);
        self.post(running, route, body.to_vec(), Some(signature))
            .await
    }

    pub async fn post(
        &self,
        running: &Running,
        route: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> (u16, serde_json::Value) {
        let url = format!("http://{}/hooks/{}/{route}", running.webhook_addr, self.ns);
        let mut request = reqwest::Client::new().post(url).body(body);
        if let Some(sig) = signature {
            request = request.header("X-Statused-Signature", sig);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }
}

/// A sample event with another id (a different event to Statused).
pub fn sample_with_id(name: &str, id: &str) -> Vec<u8> {
    let mut event: serde_json::Value = serde_json::from_slice(&sample(name)).unwrap();
    event["id"] = id.into();
    serde_json::to_vec(&event).unwrap()
}

/// Whether `a` (rather than `b`) leads, once exactly one of the two replicas does.
pub async fn a_leads(a: &Running, b: &Running) -> bool {
    eventually("one leader", || async {
        match (a.context.is_leader(), b.context.is_leader()) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            _ => None,
        }
    })
    .await
}

/// Polls `check` every 100 ms until it returns `Some`, for at most 30 seconds.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One request a sink received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no header {name}"))
    }
}

/// One scripted answer.
#[derive(Clone, Default)]
struct Scripted {
    code: u16,
    headers: Vec<(String, String)>,
    delay: Duration,
}

/// What a [`Sink`] answers.
#[derive(Clone, Default)]
struct Answers {
    script: VecDeque<Scripted>,
    /// Fixed answers (code, JSON body) for some paths, before the script applies.
    by_path: std::collections::HashMap<String, (u16, String)>,
    /// JSON body sent with every scripted 2xx answer.
    success_body: Option<String>,
    /// How long every answer not scripted otherwise takes.
    default_delay: Duration,
    /// `(header, key)`: answer 403 unless the header holds `sha256=<hex HMAC of the body>`,
    /// as a Tekton GitHub interceptor does.
    require_signature: Option<(String, String)>,
}

/// An HTTP server on 127.0.0.1 that records every request and answers with scripted status
/// codes (then `default_status`). It stops with the test's runtime.
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    answers: Arc<Mutex<Answers>>,
    /// Requests being answered now, and the most at once.
    in_flight: Arc<InFlightCounts>,
}

/// (now, most at once).
type InFlightCounts = (
    std::sync::atomic::AtomicUsize,
    std::sync::atomic::AtomicUsize,
);

impl Sink {
    pub async fn start(default_status: u16) -> Self {
        Self::start_on("127.0.0.1".parse().unwrap(), default_status).await
    }

    /// A sink on another loopback address (`127.0.0.2`, say), for the outbound guard's tests.
    pub async fn start_on(ip: std::net::IpAddr, default_status: u16) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(Answers::default()));
        let in_flight: Arc<InFlightCounts> = Arc::new(Default::default());
        let (r, a, f) = (requests.clone(), answers.clone(), Arc::clone(&in_flight));
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (r, a, f) = (r.clone(), a.clone(), f.clone());
                async move {
                    let _counted = InFlight::enter(f);
                    let (scripted, fixed, success_body, signed_ok) = {
                        let mut answers = a.lock().unwrap();
                        let signed_ok =
                            answers
                                .require_signature
                                .as_ref()
                                .is_none_or(|(header, key)| {
                                    let expected =
                                        statused_operator::signature::sign(key.as_bytes(), &body);
                                    headers
                                        .get(header.as_str())
                                        .is_some_and(|v| v.as_bytes() == expected.as_bytes())
                                });
                        let fixed = answers.by_path.get(uri.path()).cloned();
                        let scripted = if fixed.is_none() {
                            answers.script.pop_front()
                        } else {
                            None
                        };
                        (scripted, fixed, answers.success_body.clone(), signed_ok)
                    };
                    let path = uri.path().to_string();
                    let auth = headers
                        .get("authorization")
                        .map(|v| format!(" with {}", v.to_str().unwrap_or_default()));
                    r.lock().unwrap().push(Recorded {
                        method,
                        uri,
                        headers,
                        body,
                        at: std::time::Instant::now(),
                    });
                    if !signed_ok {
                        return (StatusCode::FORBIDDEN, String::from("bad signature"))
                            .into_response();
                    }
                    if let Some((code, body)) = fixed {
                        let code = StatusCode::from_u16(code).unwrap();
                        return (code, [("content-type", "application/json")], body)
                            .into_response();
                    }
                    let scripted = scripted.unwrap_or(Scripted {
                        code: default_status,
                        delay: a.lock().unwrap().default_delay,
                        ..Default::default()
                    });
                    tokio::time::sleep(scripted.delay).await;
                    let code = StatusCode::from_u16(scripted.code).unwrap();
                    let mut response = match (&success_body, code.is_success()) {
                        (Some(body), true) => {
                            (code, [("content-type", "application/json")], body.clone())
                                .into_response()
                        }
                        // Like many servers, echo the path in errors (it may hold a token).
                        _ => (
                            code,
                            format!(
                                "answer {} for {path}{}",
                                code.as_u16(),
                                auth.unwrap_or_default()
                            ),
                        )
                            .into_response(),
                    };
                    for (k, v) in scripted.headers {
                        response.headers_mut().insert(
                            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                            axum::http::HeaderValue::from_str(&v).unwrap(),
                        );
                    }
                    response
                }
            },
        );
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            requests,
            answers,
            in_flight,
        }
    }

    /// Every answer not scripted otherwise takes `delay`.
    pub fn answer_slowly(&self, delay: Duration) {
        self.answers.lock().unwrap().default_delay = delay;
    }

    /// The most requests this sink was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.in_flight.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next answers, in order, before falling back to the default.
    pub fn answer_with(&self, codes: &[u16]) {
        let mut answers = self.answers.lock().unwrap();
        answers.script.extend(codes.iter().map(|c| Scripted {
            code: *c,
            ..Default::default()
        }));
    }

    /// The next answer: `code` with one extra header.
    pub fn answer_with_header(&self, code: u16, name: &str, value: &str) {
        let headers = vec![(name.to_string(), value.to_string())];
        self.answers.lock().unwrap().script.push_back(Scripted {
            code,
            headers,
            ..Default::default()
        });
    }

    /// The next answer: `code`, but only after `delay`.
    pub fn answer_late(&self, code: u16, delay: Duration) {
        self.answers.lock().unwrap().script.push_back(Scripted {
            code,
            delay,
            ..Default::default()
        });
    }

    /// Always answer requests to `path` with `code` and `body`.
    pub fn route(&self, path: &str, code: u16, body: serde_json::Value) {
        self.answers
            .lock()
            .unwrap()
            .by_path
            .insert(path.to_string(), (code, body.to_string()));
    }

    pub fn answer_body(&self, json: serde_json::Value) {
        self.answers.lock().unwrap().success_body = Some(json.to_string());
    }

    pub fn require_signature(&self, header: &str, key: &str) {
        self.answers.lock().unwrap().require_signature =
            Some((header.to_string(), key.to_string()));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.uri.path() == path)
            .collect()
    }
}

/// Counts a request in flight at a [`Sink`] (current, most) while alive.
struct InFlight(Arc<InFlightCounts>);

impl InFlight {
    fn enter(counts: Arc<InFlightCounts>) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let now = counts.0.fetch_add(1, SeqCst) + 1;
        counts.1.fetch_max(now, SeqCst);
        Self(counts)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A tool installed by hack/install-tools.sh (cached), else the one on PATH.
pub fn tool(name: &str) -> String {
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

/// Runs `command` as the test API server's admin (its kubeconfig in `KUBECONFIG`); fails
/// the test unless it succeeds, and returns its standard output.
pub fn run_as_admin(command: &mut std::process::Command) -> String {
    let out = command
        .env(
            "KUBECONFIG",
            std::env::var("STATUSED_TEST_ADMIN_KUBECONFIG").unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A free port on 127.0.0.1 (free when asked; the binary binds it just after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary, as the chart runs it (chart RBAC), logging at debug level to a file; killed
/// when dropped.
pub struct OperatorProcess {
    child: std::process::Child,
    pub log: std::path::PathBuf,
    pub webhook: u16,
    pub metrics: u16,
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OperatorProcess {
    /// `statused-operator run` scoped to `ns`, with listeners on 127.0.0.1 and that address allowed
    /// (the stand-ins live there); `change` adds flags or environment.
    pub fn spawn(ns: &str, change: impl FnOnce(&mut std::process::Command)) -> Self {
        let (webhook, metrics) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("statused-operator-{ns}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_statused-operator"));
        command
            .args(["run", "--namespace", ns, "--log-format", "json"])
            .args(["--webhook-addr", &format!("127.0.0.1:{webhook}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--shutdown-drain", "0s"])
            // As an environment variable, so that `change` can set another.
            .env("STATUSED_EGRESS_ALLOW", "127.0.0.1/32")
            .env(
                "KUBECONFIG",
                std::env::var("STATUSED_TEST_OPERATOR_KUBECONFIG").unwrap(),
            )
            .env("RUST_LOG", "debug")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        change(&mut command);
        let child = command.spawn().unwrap();
        Self {
            child,
            log,
            webhook,
            metrics,
        }
    }

    /// Signs `body` with the test secret and POSTs it to `route` in `ns` once the receiver
    /// listens; returns the status code and the JSON answer.
    pub async fn post_signed(
        &self,
        ns: &str,
        route: &str,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let signature = statused_operator::signature::sign(SIGNING_SECRET.as_bytes(), body);
        let url = format!("http://127.0.0.1:{}/hooks/{ns}/{route}", self.webhook);
        // Not through any proxy the test process may have in its environment.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let response = eventually("the operator answers", || async {
            client
                .post(&url)
                .header("X-Statused-Signature", &signature)
                .body(body.to_vec())
                .send()
                .await
                .ok()
        })
        .await;
        let code = response.status().as_u16();
        (code, response.json().await.unwrap_or_default())
    }
}

/// The operator's metrics exposition with every family in it: a labelled family shows up
/// only once it has a sample, so each gets one.
pub fn every_metric_family() -> String {
    let metrics = statused_operator::metrics::Metrics::default();
    metrics.webhook_request(202);
    metrics.event_refused("too_old");
    metrics.target_attempt(
        "webhook",
        &statused_operator::targets::send::Outcome::Failed {
            code: Some(500),
            error: "e".into(),
        },
        Duration::from_millis(5),
    );
    metrics.reconcile("delivery", "error");
    metrics.delivery("Failed");
    metrics.kube_event("published");
    metrics.call_deferred("paused");
    metrics.scrape_state(true, 1, 1);
    metrics.backlog(1, Duration::from_secs(1));
    metrics.watches_failing(0);
    metrics.encode()
}
