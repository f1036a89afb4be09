//! The `statused.dev/v1alpha1` API: CRD types.

pub mod delivery;
pub mod fixtures;
pub mod redelivery;
pub mod route;

pub use crate::targets::outcome::{CreatedObject, RunPhase};
pub use delivery::{
    DeliveredEvent, DeliveryPhase, FollowedBy, MatchedTarget, OrderedBy, RunStatus,
    StatusedDelivery, StatusedDeliverySpec, StatusedDeliveryStatus, TargetStatus,
};
pub use redelivery::{
    RedeliveryTargets, StatusedRedelivery, StatusedRedeliverySpec, StatusedRedeliveryStatus,
};
pub use route::{
    After, EventSource, Follow, History, LastDelivery, LastEvent, OnUncertain, Ordering,
    OrderingPolicy, RateLimit, Rule, RuleMatch, SecretKeySelector, SignatureFormat, StatusedRoute,
    StatusedRouteSpec, StatusedRouteStatus, Target,
};

/// API group of every resource this operator serves.
pub const GROUP: &str = "statused.dev";
/// Field manager for every write this operator makes (`naming.rs`).
pub use crate::naming::FIELD_MANAGER;
