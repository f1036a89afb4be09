//! Creating a target's object through the Kubernetes API exactly once per event: the name is
//! deterministic, so a retry (or another replica, or a restarted operator) that finds the
//! object already there points at it instead of creating a second one.

use kube::api::{Api, DynamicObject};
use kube::{Client, ResourceExt};

use super::objects::ApiRef;
use super::outcome::CreatedObject;
use super::send::Outcome;
use crate::naming::{LABEL_EVENT_ID, ObjectIdentity};

pub async fn create_once(
    client: &Client,
    api_ref: &ApiRef,
    object: serde_json::Value,
    id: &ObjectIdentity,
) -> Outcome {
    let ar = api_ref.api_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &id.namespace, &ar);
    let object: DynamicObject = match serde_json::from_value(object) {
        Ok(o) => o,
        Err(e) => return Outcome::failed(None, format!("cannot build {}: {e}", api_ref.kind)),
    };
    match api.create(&crate::naming::post_params(), &object).await {
        Ok(created) => Outcome::created(created_ref(api_ref, &created), 201),
        Err(kube::Error::Api(status)) if status.code == 409 => match api.get(&id.name).await {
            Ok(existing) => {
                let ours = existing.labels().get(LABEL_EVENT_ID) == id.labels.get(LABEL_EVENT_ID);
                if ours {
                    Outcome::created(created_ref(api_ref, &existing), 200)
                } else {
                    Outcome::failed(
                        Some(409),
                        format!(
                            "{} {}/{} already exists and was not created for this event",
                            api_ref.kind, id.namespace, id.name
                        ),
                    )
                }
            }
            Err(e) => classify(api_ref, &id.namespace, "get", e),
        },
        Err(e) => classify(api_ref, &id.namespace, "create", e),
    }
}

fn created_ref(api_ref: &ApiRef, obj: &DynamicObject) -> CreatedObject {
    CreatedObject {
        api_version: api_ref.api_version(),
        kind: api_ref.kind.to_string(),
        name: obj.name_any(),
        uid: obj.uid(),
        url: None,
    }
}

/// API errors: a missing permission or an invalid object fails at once with a message that
/// says what to do; an unavailable API server or a missing API is retried.
fn classify(api_ref: &ApiRef, namespace: &str, verb: &str, err: kube::Error) -> Outcome {
    let resource = format!("{}.{}", api_ref.plural, api_ref.group);
    match err {
        kube::Error::Api(status) => match status.code {
            403 => Outcome::failed(
                Some(403),
                format!(
                    "forbidden: the operator's service account may not {verb} {resource} in namespace {namespace}; \
                     grant it (Helm value {}=true)",
                    api_ref.chart_switch
                ),
            ),
            404 => Outcome::retry(
                Some(404),
                format!(
                    "the cluster does not serve {} {}",
                    api_ref.api_version(),
                    api_ref.plural
                ),
                None,
            ),
            409 | 429 | 500..=599 => Outcome::retry(
                Some(status.code),
                format!("{verb} {resource}: {}", status.message),
                None,
            ),
            code => Outcome::failed(
                Some(code),
                format!("{verb} {resource} rejected: {}", status.message),
            ),
        },
        other => Outcome::retry(None, format!("{verb} {resource}: {other}"), None),
    }
}
