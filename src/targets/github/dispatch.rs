//! `githubDispatch`: GitHub Actions `repository_dispatch`
//! (`POST {apiURL}/repos/{owner}/{repo}/dispatches`) or `workflow_dispatch`
//! (`POST {apiURL}/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches`), with a token
//! or as a GitHub App.

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::Url;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};

use super::super::error::CompileError;
use super::super::fields::{Field, base_url, credential_text, token};
use super::super::kind::{Kind, Trigger};
use super::super::outcome::{CreatedObject, RunPhase, RunReading};
use super::super::request::{
    HttpRequest, HttpTarget, RenderContext, RenderError, base_headers, sensitive,
};
use super::app::{GithubApp, GithubAppAuth};
use super::{DEFAULT_API_URL, github_headers};
use crate::expr::{JsonTemplate, Template};
use crate::secrets::SecretKeySelector;
use crate::secrets::{SecretSet, SecretValue};

/// GitHub rejects a `client_payload` with more top-level properties.
pub const MAX_CLIENT_PAYLOAD_KEYS: usize = 10;
/// GitHub's limit on `workflow_dispatch` inputs (raised from 10 to 25 in December 2025).
pub const MAX_WORKFLOW_INPUTS: usize = 25;
/// GitHub's limit on `event_type`.
pub const MAX_EVENT_TYPE_LEN: usize = 100;

spec! {
pub struct GithubDispatchTarget {
    /// `owner/name` of the repository.
    pub repository: String,
    /// `repository_dispatch`: the `event_type` workflows filter on
    /// (`on.repository_dispatch.types`). Templated. Set this or `workflow`.
    pub event_type: Option<String>,
    /// `repository_dispatch`: up to 10 top-level properties, values templated.
    #[serde(default)]
    #[schemars(
        schema_with = "crate::schema::any_object",
        extend("maxProperties" = MAX_CLIENT_PAYLOAD_KEYS)
    )]
    pub client_payload: Option<Value>,
    /// `workflow_dispatch`: the workflow file name (`release.yml`) or id. Set this or
    /// `eventType`.
    pub workflow: Option<String>,
    /// `workflow_dispatch`: branch or tag to run on. Templated.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// `workflow_dispatch`: string inputs (at most 25), values templated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_WORKFLOW_INPUTS))]
    pub inputs: BTreeMap<String, String>,
    /// `workflow_dispatch`: ask GitHub for the run it started (`return_run_details`) and
    /// record its id and URL on the delivery (`status.targets[].created`).
    pub return_run_details: Option<bool>,
    /// Secret key holding a token allowed to dispatch (key defaults to `token`). Set this or
    /// `app`.
    pub token_secret_ref: Option<SecretKeySelector>,
    /// Authenticate as a GitHub App installation instead of with a token.
    pub app: Option<GithubAppAuth>,
    /// API base URL, for GitHub Enterprise Server (`https://ghe.example.com/api/v3`).
    #[serde(rename = "apiURL")]
    pub api_url: Option<String>,
}
}

#[derive(Debug)]
enum Dispatch {
    Repository {
        event_type: Template,
        client_payload: Option<JsonTemplate>,
    },
    Workflow {
        git_ref: Template,
        inputs: Vec<(String, Template)>,
        return_run_details: bool,
    },
}

#[derive(Debug)]
enum Auth {
    Token(SecretValue),
    App(Arc<GithubApp>),
}

#[derive(Debug)]
pub struct GithubDispatch {
    url: Url,
    /// `.../repos/{owner}/{repo}/actions/runs/`: where a run it started is read.
    runs: Url,
    auth: Auth,
    dispatch: Dispatch,
}

impl Kind for GithubDispatchTarget {

    fn compile(&self, field: &Field, secrets: &SecretSet) -> Result<Trigger, CompileError> {
        let spec = self;
        let (owner, repo) = split_repository(&spec.repository).ok_or_else(|| {
            CompileError::invalid(
                field.at("repository"),
                format!("{:?} is not of the form owner/name", spec.repository),
            )
        })?;
        let base = base_url(
            &field.at("apiURL"),
            spec.api_url.as_deref(),
            DEFAULT_API_URL,
        )?;
        let template = |name: &str, source: &str| {
            Template::compile(source).map_err(|e| CompileError::template(field.at(name), e))
        };

        let (path, dispatch) = match (&spec.event_type, &spec.workflow) {
            (Some(event_type), None) => {
                if !spec.inputs.is_empty() || spec.git_ref.is_some() {
                    return Err(CompileError::invalid(
                        field,
                        "ref and inputs belong to workflow dispatches; use clientPayload",
                    ));
                }
                if event_type.trim().is_empty() || event_type.len() > MAX_EVENT_TYPE_LEN {
                    return Err(CompileError::invalid(
                        field.at("eventType"),
                        format!("must be 1 to {MAX_EVENT_TYPE_LEN} characters"),
                    ));
                }
                let client_payload = match &spec.client_payload {
                    None => None,
                    Some(Value::Object(map)) if map.len() > MAX_CLIENT_PAYLOAD_KEYS => {
                        return Err(CompileError::invalid(
                            field.at("clientPayload"),
                            format!(
                                "has {} top-level properties; GitHub accepts at most {MAX_CLIENT_PAYLOAD_KEYS} (nest the rest in an object)",
                                map.len()
                            ),
                        ));
                    }
                    Some(v @ Value::Object(_)) => Some(
                        JsonTemplate::compile(v)
                            .map_err(|e| CompileError::template(field.at("clientPayload"), e))?,
                    ),
                    Some(_) => {
                        return Err(CompileError::invalid(
                            field.at("clientPayload"),
                            "must be an object",
                        ));
                    }
                };
                let dispatch = Dispatch::Repository {
                    event_type: template("eventType", event_type)?,
                    client_payload,
                };
                (format!("repos/{owner}/{repo}/dispatches"), dispatch)
            }
            (None, Some(workflow)) => {
                if spec.client_payload.is_some() {
                    return Err(CompileError::invalid(
                        field,
                        "clientPayload belongs to repository dispatches; use inputs",
                    ));
                }
                let valid = !workflow.is_empty()
                    && workflow
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !valid {
                    return Err(CompileError::invalid(
                        field.at("workflow"),
                        "must be a workflow file name like release.yml, or its id",
                    ));
                }
                let git_ref = spec
                    .git_ref
                    .as_deref()
                    .filter(|r| !r.trim().is_empty())
                    .ok_or_else(|| {
                        CompileError::invalid(
                            field.at("ref"),
                            "a workflow dispatch needs the branch or tag to run on",
                        )
                    })?;
                if spec.inputs.len() > MAX_WORKFLOW_INPUTS {
                    return Err(CompileError::invalid(
                        field.at("inputs"),
                        format!(
                            "has {} inputs; GitHub accepts at most {MAX_WORKFLOW_INPUTS}",
                            spec.inputs.len()
                        ),
                    ));
                }
                let inputs = spec
                    .inputs
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), template(&format!("inputs.{k}"), v)?)))
                    .collect::<Result<_, CompileError>>()?;
                let dispatch = Dispatch::Workflow {
                    git_ref: template("ref", git_ref)?,
                    inputs,
                    return_run_details: spec.return_run_details.unwrap_or(false),
                };
                (
                    format!("repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches"),
                    dispatch,
                )
            }
            _ => {
                return Err(CompileError::invalid(
                    field,
                    "set exactly one of eventType (repository_dispatch) and workflow (workflow_dispatch)",
                ));
            }
        };
        let url = Url::parse(&format!("{base}/{path}"))
            .map_err(|e| CompileError::invalid(field.at("repository"), e))?;
        let runs = Url::parse(&format!("{base}/repos/{owner}/{repo}/actions/runs/"))
            .map_err(|e| CompileError::invalid(field.at("repository"), e))?;
        let auth = match (&spec.token_secret_ref, &spec.app) {
            (Some(sel), None) => Auth::Token(token(field, sel, secrets)?),
            (None, Some(app)) => Auth::App(Arc::new(GithubApp::compile(
                &field.at("app"),
                app,
                &base,
                secrets,
            )?)),
            _ => {
                return Err(CompileError::invalid(
                    field,
                    "set exactly one of tokenSecretRef and app",
                ));
            }
        };
        Ok(Trigger::http(GithubDispatch {
            url,
            runs,
            auth,
            dispatch,
        }))
    }

    fn secret_refs(&self) -> Vec<&SecretKeySelector> {
        self.token_secret_ref
            .iter()
            .chain(self.app.iter().map(|a| &a.private_key_secret_ref))
            .collect()
    }
}

fn split_repository(repository: &str) -> Option<(&str, &str)> {
    let (owner, repo) = repository.split_once('/')?;
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (valid(owner) && valid(repo) && repo != "." && repo != "..").then_some((owner, repo))
}

impl GithubDispatch {
    /// `request` with the dispatch's credentials: its token, or its App's installation
    /// token (obtained at send time).
    fn authorized(&self, mut request: HttpRequest) -> Result<HttpRequest, RenderError> {
        match &self.auth {
            Auth::Token(token) => {
                let token = credential_text(token);
                (request.headers).insert(AUTHORIZATION, sensitive(&format!("Bearer {token}"))?);
                Ok(request.secret(token))
            }
            Auth::App(app) => {
                request.auth = Some(app.clone());
                Ok(request)
            }
        }
    }
}

impl HttpTarget for GithubDispatch {
    fn build_request(&self, ctx: &RenderContext<'_>) -> Result<HttpRequest, RenderError> {
        let body = match &self.dispatch {
            Dispatch::Repository {
                event_type,
                client_payload,
            } => {
                // GitHub's limits, on what is sent (a template may have made it longer),
                // failing with a clear message rather than GitHub's 422.
                let event_type = event_type.render(ctx.scope)?;
                if event_type.trim().is_empty() || event_type.chars().count() > MAX_EVENT_TYPE_LEN {
                    return Err(RenderError::Invalid(format!(
                        "event_type renders to {} characters; GitHub accepts 1 to {MAX_EVENT_TYPE_LEN}",
                        event_type.chars().count()
                    )));
                }
                let client_payload = match client_payload {
                    Some(t) => t.render(ctx.scope)?,
                    None => json!({}),
                };
                match client_payload.as_object() {
                    Some(map) if map.len() <= MAX_CLIENT_PAYLOAD_KEYS => {}
                    Some(map) => {
                        return Err(RenderError::Invalid(format!(
                            "client_payload renders to {} top-level properties; GitHub accepts at most {MAX_CLIENT_PAYLOAD_KEYS}",
                            map.len()
                        )));
                    }
                    None => {
                        return Err(RenderError::Invalid(
                            "client_payload must render to a JSON object".into(),
                        ));
                    }
                }
                json!({"event_type": event_type, "client_payload": client_payload})
            }
            Dispatch::Workflow {
                git_ref,
                inputs,
                return_run_details,
            } => {
                let inputs = inputs
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), Value::String(t.render(ctx.scope)?))))
                    .collect::<Result<serde_json::Map<_, _>, RenderError>>()?;
                let mut body = json!({"ref": git_ref.render(ctx.scope)?, "inputs": inputs});
                if *return_run_details {
                    body["return_run_details"] = true.into();
                }
                body
            }
        };
        let headers = github_headers(base_headers(ctx)?);
        let request = self.authorized(HttpRequest::post_json(self.url.clone(), headers, &body))?;
        Ok(request)
    }

    /// A workflow dispatch with `returnRunDetails` names the run it started.
    fn followable(&self) -> Result<(), String> {
        match self.dispatch {
            Dispatch::Workflow {
                return_run_details: true,
                ..
            } => Ok(()),
            _ => Err("a githubDispatch is followed through the run GitHub names: set workflow and returnRunDetails: true".into()),
        }
    }

    /// `GET /repos/{owner}/{repo}/actions/runs/{run_id}`, with the dispatch's credentials.
    fn run_request(&self, created: &CreatedObject) -> Option<HttpRequest> {
        if created.kind != "WorkflowRun" || !created.name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let url = self.runs.join(&created.name).ok()?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::USER_AGENT,
            reqwest::header::HeaderValue::from_static(crate::targets::request::USER_AGENT),
        );
        self.authorized(HttpRequest::get_run(url, github_headers(headers)))
            .ok()
    }

    /// A workflow run's `status` and `conclusion`
    /// (docs.github.com/rest/actions/workflow-runs#get-a-workflow-run).
    fn run_reading(&self, body: &[u8]) -> Option<RunReading> {
        let run: Value = serde_json::from_slice(body).ok()?;
        let text = |k: &str| run.get(k).and_then(Value::as_str).map(str::to_string);
        let conclusion = text("conclusion");
        let phase = match (run.get("status")?.as_str()?, conclusion.as_deref()) {
            ("completed", Some("success" | "neutral" | "skipped")) => RunPhase::Succeeded,
            ("completed", Some("cancelled")) => RunPhase::Cancelled,
            ("completed", Some("timed_out")) => RunPhase::TimedOut,
            ("completed", _) => RunPhase::Failed,
            _ => RunPhase::Running,
        };
        Some(RunReading {
            phase,
            started_at: text("run_started_at"),
            completed_at: phase.is_finished().then(|| text("updated_at")).flatten(),
            message: conclusion,
            url: text("html_url"),
        })
    }

    /// With `returnRunDetails`, GitHub answers 200 with the run it started:
    /// `{"workflow_run_id", "run_url", "html_url"}`.
    fn created(&self, body: &[u8]) -> Option<CreatedObject> {
        if !matches!(
            self.dispatch,
            Dispatch::Workflow {
                return_run_details: true,
                ..
            }
        ) {
            return None;
        }
        let answer: Value = serde_json::from_slice(body).ok()?;
        let id = answer.get("workflow_run_id")?;
        Some(CreatedObject {
            api_version: "actions.github.com/v1".into(),
            kind: "WorkflowRun".into(),
            name: id
                .as_u64()
                .map_or_else(|| id.to_string(), |n| n.to_string()),
            uid: None,
            url: answer
                .get("html_url")
                .or_else(|| answer.get("run_url"))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Reason;
    use crate::targets::test_support::{compile_http, request, try_request};

    fn spec(v: Value) -> GithubDispatchTarget {
        let mut base = json!({"repository": "acme/ios-app", "tokenSecretRef": {"name": "github-token", "key": "token"},
                              "apiURL": "http://127.0.0.1:9999/"});
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn secrets() -> SecretSet {
        SecretSet::new("mobile-ci").with("github-token", &[("token", "ghp_test")])
    }

    #[test]
    fn repository_dispatch_request_is_exactly_what_github_documents() {
        let t = compile_http(&spec(json!({"eventType": "submit-for-review",
                         "clientPayload": {"app_name": "$(data.app_name)", "build_version": "$(data.build_version)"}})), &secrets())
        .unwrap();
        let req = request(&t);
        assert_eq!(req.method, reqwest::Method::POST);
        assert_eq!(
            req.url.as_str(),
            "http://127.0.0.1:9999/repos/acme/ios-app/dispatches"
        );
        assert_eq!(req.headers["authorization"], "Bearer ghp_test");
        assert_eq!(req.headers["accept"], "application/vnd.github+json");
        assert_eq!(req.headers["x-github-api-version"], "2022-11-28");
        assert_eq!(req.headers["x-statused-event-id"], "ev-1");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({"event_type": "submit-for-review",
            "client_payload": {"app_name": "Markdown Email", "build_version": "456"}})
        );
        assert!(!format!("{req:?}").contains("ghp_test"));
        assert!(!format!("{t:?}").contains("ghp_test"));
        assert_eq!(
            req.redact("bad credentials ghp_test"),
            "bad credentials [redacted]"
        );
    }

    #[test]
    fn workflow_dispatch_sends_ref_and_string_inputs() {
        let t = compile_http(
            &spec(
                json!({"workflow": "release.yml", "ref": "release/$(data.version)",
                         "inputs": {"build": "$(data.build_version)", "app": "$(data.app_name)"}}),
            ),
            &secrets(),
        )
        .unwrap();
        let req = request(&t);
        assert_eq!(
            req.url.as_str(),
            "http://127.0.0.1:9999/repos/acme/ios-app/actions/workflows/release.yml/dispatches"
        );
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            json!({"ref": "release/1.2.3", "inputs": {"app": "Markdown Email", "build": "456"}})
        );
    }

    #[test]
    fn invalid_dispatches_name_the_field() {
        let many: BTreeMap<String, String> = (0..26)
            .map(|i| (format!("i{i}"), "v".to_string()))
            .collect();
        let payload: serde_json::Map<_, _> =
            (0..11).map(|i| (format!("k{i}"), json!("v"))).collect();
        let cases = [
            (
                json!({"eventType": "x", "clientPayload": payload}),
                "t.clientPayload",
            ),
            (
                json!({"workflow": "release.yml", "ref": "main", "inputs": many}),
                "t.inputs",
            ),
            (json!({"workflow": "release.yml"}), "t.ref"),
            (json!({"workflow": "../x", "ref": "main"}), "t.workflow"),
            (
                json!({"eventType": "x", "workflow": "a.yml", "ref": "main"}),
                "exactly one of eventType",
            ),
            (json!({}), "exactly one of eventType"),
            (
                json!({"eventType": "x", "repository": "acme"}),
                "t.repository",
            ),
            (json!({"eventType": "x", "apiURL": "ftp://x"}), "t.apiURL"),
            (
                json!({"eventType": "x", "app": {"appId": "1", "installationId": "2",
                    "privateKeySecretRef": {"name": "k"}}}),
                "exactly one of tokenSecretRef and app",
            ),
        ];
        for (s, needle) in cases {
            let err = compile_http(&spec(s.clone()), &secrets()).unwrap_err();
            assert_eq!(err.reason, Reason::InvalidTarget, "{s}");
            assert!(err.message.contains(needle), "{s}: {}", err.message);
        }
        for bad in ["acme", "acme/", "/x", "a/b/c", "acme/ios app"] {
            let err = compile_http(
                &spec(json!({"eventType": "x", "repository": bad})),
                &secrets(),
            )
            .unwrap_err();
            assert_eq!(err.reason, Reason::InvalidTarget, "{bad}");
        }
    }

    #[test]
    fn missing_token_key_is_reported_without_its_value() {
        let secrets = SecretSet::new("mobile-ci").with("github-token", &[("other", "ghp_test")]);
        let err = compile_http(&spec(json!({"eventType": "x"})), &secrets).unwrap_err();
        assert_eq!(err.reason, Reason::SecretKeyMissing);
        assert_eq!(
            err.message,
            "Secret mobile-ci/github-token has no key token"
        );
    }

    #[test]
    fn bad_interpolation_is_an_invalid_template() {
        let err = compile_http(
            &spec(json!({"eventType": "x", "clientPayload": {"a": "$(data.app_name"}})),
            &secrets(),
        )
        .unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTemplate);
    }

    #[test]
    fn return_run_details_records_the_run_github_started() {
        let t = compile_http(
            &spec(json!({"workflow": "release.yml", "ref": "main", "returnRunDetails": true})),
            &secrets(),
        )
        .unwrap();
        let body: Value = serde_json::from_slice(&request(&t).body).unwrap();
        assert_eq!(
            body,
            json!({"ref": "main", "inputs": {}, "return_run_details": true})
        );
        let answer = br#"{"workflow_run_id": 22446688, "run_url": "https://api.github.com/repos/acme/ios-app/actions/runs/22446688", "html_url": "https://github.com/acme/ios-app/actions/runs/22446688"}"#;
        let run = t.created(answer).unwrap();
        assert_eq!(
            (run.kind.as_str(), run.name.as_str()),
            ("WorkflowRun", "22446688")
        );
        assert_eq!(
            run.url.as_deref(),
            Some("https://github.com/acme/ios-app/actions/runs/22446688")
        );
        let plain = compile_http(
            &spec(json!({"workflow": "release.yml", "ref": "main"})),
            &secrets(),
        )
        .unwrap();
        assert_eq!(plain.created(answer), None, "not asked for, not recorded");
    }

    #[test]
    fn limits_are_checked_on_what_is_sent() {
        let long = compile_http(
            &spec(json!({"eventType": "$(data.app_name)-$(data.message)-$(data.message)-$(data.message)"})),
            &secrets(),
        )
        .unwrap();
        let err = try_request(&long).unwrap_err();
        assert!(err.to_string().contains("GitHub accepts 1 to 100"), "{err}");
    }

    #[test]
    fn a_run_it_started_is_read_as_github_documents_it() {
        let t = compile_http(
            &spec(json!({"workflow": "release.yml", "ref": "main", "returnRunDetails": true})),
            &secrets(),
        )
        .unwrap();
        assert_eq!(t.followable(), Ok(()));
        let run = t
            .created(br#"{"workflow_run_id": 22446688, "html_url": "https://github.com/acme/ios-app/actions/runs/22446688"}"#)
            .unwrap();
        let read = t.run_request(&run).unwrap();
        assert_eq!(read.method, reqwest::Method::GET);
        assert_eq!(
            read.url.as_str(),
            "http://127.0.0.1:9999/repos/acme/ios-app/actions/runs/22446688"
        );
        assert_eq!(read.headers["authorization"], "Bearer ghp_test");
        assert_eq!(read.headers["accept"], "application/vnd.github+json");
        assert_eq!(read.headers["x-github-api-version"], "2022-11-28");
        assert!(read.secrets.contains(&"ghp_test".to_string()), "scrubbed from errors");
        let mut odd = run.clone();
        odd.name = "../../orgs".into();
        assert!(t.run_request(&odd).is_none(), "only a run id is read");

        let answer = |status: &str, conclusion: Option<&str>| {
            let body = json!({"id": 22446688, "status": status, "conclusion": conclusion,
                "html_url": "https://github.com/acme/ios-app/actions/runs/22446688",
                "run_started_at": "2027-01-15T08:00:00Z", "updated_at": "2027-01-15T08:09:00Z"});
            t.run_reading(body.to_string().as_bytes()).unwrap()
        };
        let cases = [
            ("queued", None, RunPhase::Running),
            ("in_progress", None, RunPhase::Running),
            ("completed", Some("success"), RunPhase::Succeeded),
            ("completed", Some("failure"), RunPhase::Failed),
            ("completed", Some("startup_failure"), RunPhase::Failed),
            ("completed", Some("cancelled"), RunPhase::Cancelled),
            ("completed", Some("timed_out"), RunPhase::TimedOut),
        ];
        for (status, conclusion, phase) in cases {
            assert_eq!(answer(status, conclusion).phase, phase, "{status} {conclusion:?}");
        }
        let done = answer("completed", Some("failure"));
        assert_eq!(done.started_at.as_deref(), Some("2027-01-15T08:00:00Z"));
        assert_eq!(done.completed_at.as_deref(), Some("2027-01-15T08:09:00Z"));
        assert_eq!(done.message.as_deref(), Some("failure"));
        assert_eq!(answer("in_progress", None).completed_at, None);

        let repository = compile_http(&spec(json!({"eventType": "x"})), &secrets()).unwrap();
        assert!(repository.followable().unwrap_err().contains("returnRunDetails: true"));
    }
}

