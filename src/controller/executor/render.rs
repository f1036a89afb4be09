//! Rendering the due targets' requests and objects, on the blocking pool (CEL runs there
//! only), a few at once, within the executor's budget of rendered bytes in flight.

use std::sync::Arc;

use kube::ResourceExt;

use super::Executor;
use crate::api::{MatchedTarget, StatusedDelivery, TargetStatus};
use crate::controller::{Error, after, retry};
use crate::expr::Scope;
use crate::route::CompiledRoute;
use crate::route::plan::{PlanInput, Planned, Rendered, attach, plan};
use crate::targets::request::RenderContext;

/// The plan of each `due` target (index, plan), rendered on the blocking pool.
/// With them, their share of the budget of rendered bytes in flight, held until the calls
/// are done.
pub(super) async fn render<'r>(
    ctx: &'r Executor,
    route: &'r Arc<CompiledRoute>,
    delivery: &Arc<StatusedDelivery>,
    targets: &[TargetStatus],
    due: Vec<usize>,
) -> Result<(Vec<(usize, Planned<'r>)>, tokio::sync::SemaphorePermit<'r>), Error> {
    // As the receiver matched them (with their `after`), whatever their status says.
    let matched: Vec<MatchedTarget> = due
        .iter()
        .map(|&i| {
            let t = &targets[i];
            (delivery.spec.matched.iter())
                .find(|m| m.rule == t.rule && m.target == t.target)
                .cloned()
                .unwrap_or_else(|| MatchedTarget::bare(t))
        })
        .collect();
    let (rendered, bytes) = render_off_the_workers(ctx, route, delivery, &matched).await?;
    let planned = due
        .into_iter()
        .zip(matched.iter().zip(rendered))
        .map(|(i, (m, r))| (i, attach(route, m, r)))
        .collect();
    Ok((planned, bytes))
}

/// The request or object of each `due` target, in order, rendered on the blocking pool. A
/// stored event over the data limits (recorded before they were in force, or by hand) is
/// not rendered: each target fails with `EventOverLimits`, once, and the delivery finishes.
///
/// The render slot is held until the rendered requests' bytes have their share of the
/// executor's budget (`Executor::bytes`): at most that budget, plus what the render slots
/// hold, is ever rendered and waiting for its calls, however many deliveries are in flight.
async fn render_off_the_workers<'e>(
    ctx: &'e Executor,
    route: &Arc<CompiledRoute>,
    delivery: &Arc<StatusedDelivery>,
    due: &[MatchedTarget],
) -> Result<(Vec<Rendered>, tokio::sync::SemaphorePermit<'e>), Error> {
    let permit = ctx
        .renders
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::Closed("render slots"))?;
    let (rendered, permit) = render_blocking(route, delivery, due, permit).await?;
    let bytes = ctx.bytes_for(&rendered).await?;
    drop(permit);
    Ok((rendered, bytes))
}

/// Renders `due` on the blocking pool, holding the render slot `permit` there: it bounds
/// the work that runs, even when the reconcile that waits for it is dropped. The slot is
/// handed back with the result.
async fn render_blocking(
    route: &Arc<CompiledRoute>,
    delivery: &Arc<StatusedDelivery>,
    due: &[MatchedTarget],
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(Vec<Rendered>, tokio::sync::OwnedSemaphorePermit), Error> {
    let (route, delivery, due) = (route.clone(), delivery.clone(), due.to_vec());
    tokio::task::spawn_blocking(move || (render_now(&route, &delivery, &due), permit))
        .await
        .map_err(|e| Error::Blocking(e.to_string()))
}

/// The request or object of each of `due`, rendered here and now (CEL: on the blocking
/// pool only).
fn render_now(
    route: &CompiledRoute,
    delivery: &StatusedDelivery,
    due: &[MatchedTarget],
) -> Vec<Rendered> {
    let event = &delivery.spec.event;
    if let Err(over) = crate::event::check_data_value(&event.data, &crate::event::DATA_LIMITS) {
        let why = format!("EventOverLimits: the stored event is over its data limits: {over}");
        return due
            .iter()
            .map(|_| Rendered::Unbuildable(why.clone()))
            .collect();
    }
    let (ns, name) = (
        delivery.namespace().unwrap_or_default(),
        delivery.name_any(),
    );
    let round = delivery.status.as_ref().map_or(0, |s| s.redeliveries);
    let scope = Scope::new(&event.to_value(), &ns, &delivery.spec.route);
    let render = RenderContext {
        scope: &scope,
        event_id: &event.id,
        round,
    };
    let input = PlanInput {
        namespace: &ns,
        route: &delivery.spec.route,
        delivery: &name,
        event_id: &event.id,
        event_type: &event.type_,
        data: &event.data,
        round,
    };
    // Every target's status, for what a rule with `after` was sent for (only then).
    let targets = (due.iter().any(|m| m.after.is_some()))
        .then_some(delivery.status.as_ref())
        .flatten()
        .map(|s| retry::targets(&delivery.spec.matched, s));
    due.iter()
        .map(|m| {
            let index = (delivery.spec.matched.iter())
                .position(|x| x.rule == m.rule && x.target == m.target);
            match (&m.after, &targets, index) {
                // What a rule with `after` was sent for, as `run`.
                (Some(_), Some(targets), Some(i)) => {
                    let run = after::run_value(&delivery.spec.matched, targets, i);
                    let scope =
                        Scope::new(&event.to_value(), &ns, &delivery.spec.route).with_run(&run);
                    let render = RenderContext {
                        scope: &scope,
                        ..render
                    };
                    plan(route, &input, &render, m).detach()
                }
                _ => plan(route, &input, &render, m).detach(),
            }
        })
        .collect()
}
