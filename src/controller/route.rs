//! The route reconciler: resolves each `StatusedRoute` against its Secrets, compiles it into
//! the routing table and reports the outcome in the route's status.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, instrument};

use super::status::{route_status, route_status_changed};
use super::{Error, scoped_api};
use crate::api::{FIELD_MANAGER, StatusedRoute, StatusedRouteStatus};
use crate::conditions::Reason;
use crate::config::{ROUTE_ACCESS_LABEL, SecretAccess};
use crate::context::Context;
use crate::route::compile::{compile_route, referenced_secrets, required_apis};
use crate::route::{CompiledRoute, RouteKey};
use crate::routing::RouteState;
use crate::secrets::{SecretSet, SecretValue};
use crate::targets::error::CompileError;
use crate::targets::objects::ApiRef;
use std::collections::BTreeSet;

/// Runs until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    store: Store<StatusedRoute>,
    writer: reflector::store::Writer<StatusedRoute>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = ctx.config.namespace.as_deref();
    let routes: Api<StatusedRoute> = scoped_api(ctx.client.clone(), ns);
    let secrets: Api<PartialObjectMeta<Secret>> = scoped_api(ctx.client.clone(), ns);

    let route_events = {
        let ctx = ctx.clone();
        reflector::reflector(writer, watcher(routes, watcher::Config::default()))
            .inspect(move |event| follow_deletes(&ctx, event))
    };
    // Backed off after errors by the controller (kube's default backoff), like the Secret
    // watch below.
    let route_events = super::triggers("routes", route_events, store.clone(), ctx.health.clone())
        // Status writes (ours and the executor's) do not change what a route compiles to.
        .predicate_filter(predicates::generation, Default::default());

    // Secrets are watched by metadata only: their values are read on reconcile, never cached
    // by a watch stream.
    let routes_for_secret = store.clone();
    let secret_events = watcher(secrets, watcher::Config::default())
        .default_backoff()
        .touched_objects();

    Controller::for_stream(route_events, store)
        .watches_stream(secret_events, move |secret| {
            let ns = secret.namespace().unwrap_or_default();
            let name = secret.name_any();
            routes_for_secret
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace().as_deref() == Some(ns.as_str())
                        && referenced_secrets(r).contains(&name)
                })
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        // A new leader writes the status its predecessor may not have.
        .reconcile_all_on(ctx.became_leader())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                debug!(error = %e, "route reconcile did not run");
            }
            future::ready(())
        })
        .await;
}

/// Deletions leave the table at once (the controller never sees them), with every
/// per-route state; after a (re)list, routes that vanished while the watch was down go too.
fn follow_deletes(ctx: &Context, event: &Result<watcher::Event<StatusedRoute>, watcher::Error>) {
    match event {
        Ok(watcher::Event::Delete(route)) => {
            let key = RouteKey::of(route);
            info!(route = %key, "route deleted");
            ctx.routes.table.remove(&key);
            // Per-route state of a deleted route must not outlive it (the executor's route
            // activity forgets it at its next flush).
            ctx.rate_limiter.forget(&key);
            super::reset_backoff(ctx, route);
        }
        Ok(watcher::Event::InitDone) => {
            ctx.routes.table.retain(|k| ctx.routes.contains(k));
            ctx.routes.synced();
        }
        _ => {}
    }
}

#[instrument(skip(route, ctx), fields(route = %RouteKey::of(&route)))]
async fn reconcile(route: Arc<StatusedRoute>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = RouteKey::of(&route);
    let ns = route.namespace().ok_or(Error::NoNamespace)?;
    let (compiled, recheck) = compile(&ctx, &ns, &route).await?;
    let desired = desired_status(&route, &compiled, ctx.config.public_url.as_deref());
    let state = match compiled {
        Ok(c) => RouteState::Ready(Arc::new(c)),
        Err(ref e) => {
            info!(reason = e.reason.as_str(), message = %e.message, "route not ready");
            RouteState::NotReady
        }
    };
    // The route may have been deleted while this reconcile ran; the deletion already left
    // the table and must not be undone. Checking again after the write closes the window
    // between check and write.
    if !ctx.routes.is_current(&route) {
        return Ok(Action::await_change());
    }
    ctx.routes.table.upsert(key.clone(), state);
    if !ctx.routes.is_current(&route) {
        ctx.routes.table.remove(&key);
        return Ok(Action::await_change());
    }

    // Only the leader writes status; every replica keeps its own routing table.
    if ctx.is_leader()
        && route_status_changed(route.status.as_ref(), &desired)
        && !write_status(&ctx, &key, &desired).await?
    {
        ctx.routes.table.remove(&key);
        return Ok(Action::await_change());
    }
    ctx.metrics.reconcile("route", "success");
    super::reset_backoff(&ctx, &*route);
    Ok(if recheck {
        Action::requeue(ctx.config.api_recheck)
    } else {
        Action::await_change()
    })
}

/// The reconciler's part of `route`'s status once compiled.
fn desired_status(
    route: &StatusedRoute,
    compiled: &Result<CompiledRoute, CompileError>,
    public_url: Option<&str>,
) -> StatusedRouteStatus {
    let key = RouteKey::of(route);
    let path = StatusedRoute::webhook_path(&key.namespace, &key.name);
    let message;
    let outcome = match compiled {
        Ok(c) => {
            let targets: usize = c.rules.iter().map(|r| r.targets.len()).sum();
            message = format!(
                "{} rules, {targets} targets; accepting signed events at {path}",
                c.rules.len()
            );
            Ok(message.as_str())
        }
        Err(e) => Err((e.reason, e.message.as_str())),
    };
    route_status(
        route.status.as_ref(),
        route.meta().generation,
        path,
        public_url,
        outcome,
        Time(jiff::Timestamp::now()),
    )
}

/// Why `route` is not served, if it is newer than the most routes its namespace, or the
/// operator, serves: each route is compiled and held by every replica.
fn beyond_the_routes_served(ctx: &Context, route: &StatusedRoute) -> Option<CompileError> {
    let (in_namespace, overall) = ctx.routes.place(route);
    let (per_namespace, max) = (ctx.config.max_routes_per_namespace, ctx.config.max_routes);
    let message = if in_namespace >= per_namespace {
        format!(
            "the namespace has {per_namespace} older routes, the most one namespace is served (--max-routes-per-namespace); delete routes it no longer needs"
        )
    } else if overall >= max {
        format!("the operator serves {max} older routes, its most (--max-routes)")
    } else {
        return None;
    };
    Some(CompileError {
        reason: Reason::InvalidSpec,
        message,
    })
}

/// `route` compiled with its Secrets, and whether to look again later: nothing tells us when
/// Tekton or Argo gets installed, so a route that needs a missing API is rechecked.
async fn compile(
    ctx: &Context,
    ns: &str,
    route: &Arc<StatusedRoute>,
) -> Result<(Result<CompiledRoute, CompileError>, bool), Error> {
    // Beyond the routes served, nothing is read or compiled; looked at again later, in case
    // older routes went.
    if let Some(beyond) = beyond_the_routes_served(ctx, route) {
        return Ok((Err(beyond), true));
    }
    let secrets = read_secrets(ctx, ns, route).await?;
    let missing_apis = missing_apis(ctx, route).await?;
    let recheck = !missing_apis.is_empty();
    // Compiling parses CEL and type-checks it on a probe event: on the blocking pool, never
    // on the async threads that serve probes and renew the lease.
    let route = route.clone();
    let compiled =
        tokio::task::spawn_blocking(move || compile_route(&route, &secrets, &missing_apis))
            .await
            .map_err(|e| Error::Blocking(e.to_string()))?
            .and_then(|c| within_dedup_window(c, ctx.config.dedup_window));
    Ok((compiled, recheck))
}

/// Writes the reconciler's part of route `key`'s status; `false` when the route is gone.
async fn write_status(
    ctx: &Context,
    key: &RouteKey,
    desired: &StatusedRouteStatus,
) -> Result<bool, Error> {
    let api: Api<StatusedRoute> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = serde_json::json!({
        "apiVersion": StatusedRoute::api_version(&()),
        "kind": StatusedRoute::kind(&()),
        "status": desired,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&key.name, &params, &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Which in-cluster APIs the route needs that the cluster does not serve. Discovery is
/// readable by every authenticated user, so this needs no extra RBAC.
async fn missing_apis(
    ctx: &Context,
    route: &StatusedRoute,
) -> Result<BTreeSet<&'static ApiRef>, Error> {
    let mut missing = BTreeSet::new();
    for api in required_apis(route) {
        match ctx
            .client
            .list_api_group_resources(&api.api_version())
            .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == api.plural) => {}
            Ok(_) => {
                missing.insert(api);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                missing.insert(api);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(missing)
}

/// A route's replay window may not outlast the records that make a repeat a duplicate.
fn within_dedup_window(
    route: CompiledRoute,
    dedup_window: Duration,
) -> Result<CompiledRoute, CompileError> {
    match route.replay_window {
        Some(window) if window > dedup_window => Err(CompileError {
            reason: Reason::InvalidSpec,
            message: format!(
                "spec.replayWindow: {}s is longer than the operator's dedup window ({}s); \
                 a replayed event could then fire twice. Shorten it, or raise --dedup-window",
                window.as_secs(),
                dedup_window.as_secs()
            ),
        }),
        _ => Ok(route),
    }
}

async fn read_secrets(ctx: &Context, ns: &str, route: &StatusedRoute) -> Result<SecretSet, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut set = SecretSet::new(ns);
    let labeled = ctx.config.secret_access == SecretAccess::Labeled;
    for name in referenced_secrets(route) {
        if labeled {
            // The label is checked on the metadata alone: an unlabelled Secret's values are
            // never read.
            let Some(meta) = api.get_metadata_opt(&name).await? else {
                continue;
            };
            if meta.labels().get(ROUTE_ACCESS_LABEL).map(String::as_str) != Some("true") {
                set.refuse(name);
                continue;
            }
        }
        if let Some(secret) = api.get_opt(&name).await? {
            let mut data: std::collections::BTreeMap<String, SecretValue> = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, SecretValue::new(v.0)))
                .collect();
            for (k, v) in secret.string_data.unwrap_or_default() {
                data.insert(k, SecretValue::new(v));
            }
            set.insert(name, data);
        }
    }
    Ok(set)
}

fn error_policy(route: Arc<StatusedRoute>, error: &Error, ctx: Arc<Context>) -> Action {
    // A route that could not even be compiled (a Secret unreadable, discovery down) is known
    // but unusable: the receiver answers 503, and readiness does not wait for it forever.
    let route_key = RouteKey::of(&route);
    if !ctx.routes.table.contains(&route_key) && ctx.routes.is_current(&route) {
        ctx.routes
            .table
            .upsert(route_key.clone(), RouteState::NotReady);
    }
    super::back_off(&ctx, "route", &*route, error)
}
