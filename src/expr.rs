//! CEL expressions and `$(...)` interpolation over an event. Pure: compiled when a route is
//! reconciled, evaluated against one [`Scope`] per event.
//!
//! `$(...)` is used instead of `{{ }}` so that routes can be wrapped in Helm templates.

use std::collections::BTreeSet;
use std::fmt;

use cel::{Context, Program, Value};
use serde_json::Value as Json;

use crate::cost::{self, Cost, DATA_LIMITS};

/// The CloudEvent attributes an expression sees as variables of their own.
const ATTRIBUTES: [&str; 7] = [
    "id",
    "type",
    "source",
    "time",
    "subject",
    "specversion",
    "data",
];

/// The variables an expression may use. `run` is what a rule with `after` was sent for
/// (controller/after.rs); for every other target, the same fields, empty.
pub const VARIABLES: [&str; 10] = {
    let mut all = [""; 10];
    let mut i = 0;
    while i < ATTRIBUTES.len() {
        all[i] = ATTRIBUTES[i];
        i += 1;
    }
    all[7] = "route";
    all[8] = "event";
    all[9] = "run";
    all
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("expression {expr:?} does not compile: {message}")]
    Compile { expr: String, message: String },
    #[error("expression {expr:?} uses unknown variable {name:?} (available: {available})")]
    UnknownVariable {
        expr: String,
        name: String,
        available: String,
    },
    #[error("expression {expr:?} failed: {message}")]
    Eval { expr: String, message: String },
    #[error("expression {expr:?} must evaluate to a bool, not {got}")]
    NotBool { expr: String, got: String },
    #[error("template {template:?}: {message}")]
    Template { template: String, message: String },
    #[error("expression {expr:?} is too complex: {message}")]
    TooComplex { expr: String, message: String },
}

/// One compiled CEL expression, its source text and its worst-case cost (see `cost.rs`).
pub struct Expression {
    source: String,
    program: Program,
    cost: Cost,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expression").field(&self.source).finish()
    }
}

/// Bounds on an expression's text, checked when a route is compiled. What bounds its
/// evaluation is the cost estimate over the event data limits ([`cost::estimate`]): an
/// expression whose worst case is over [`cost::BUDGET`] is refused. These keep the
/// estimate itself and the messages small; three nested comprehensions are refused outright.
pub const MAX_SOURCE_BYTES: usize = 4096;
pub const MAX_NODES: usize = 500;
pub const MAX_COMPREHENSION_DEPTH: usize = 2;
/// The longest text a template may render to.
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;

/// (nodes, deepest nesting of comprehensions) of an expression tree.
fn complexity(e: &cel::IdedExpr) -> (usize, usize) {
    use cel::common::ast::{EntryExpr, Expr};
    let children: Vec<&cel::IdedExpr> = match &e.expr {
        Expr::Call(c) => c.target.iter().map(|t| t.as_ref()).chain(&c.args).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(cel::common::ast::MapExpr { entries })
        | Expr::Struct(cel::common::ast::StructExpr { entries, .. }) => entries
            .iter()
            .flat_map(|entry| match &entry.expr {
                EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
                EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Select(s) => vec![s.operand.as_ref()],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    };
    let (mut nodes, mut depth) = (1, 0);
    for child in children {
        let (n, d) = complexity(child);
        nodes += n;
        depth = depth.max(d);
    }
    let own = usize::from(matches!(e.expr, Expr::Comprehension(_)));
    (nodes, depth + own)
}

fn check_limits(source: &str, program: &Program) -> Result<(), ExprError> {
    let too_complex = |message: String| ExprError::TooComplex {
        expr: source.chars().take(80).collect(),
        message,
    };
    let (nodes, depth) = complexity(program.expression());
    if nodes > MAX_NODES {
        return Err(too_complex(format!("{nodes} terms, at most {MAX_NODES}")));
    }
    if depth > MAX_COMPREHENSION_DEPTH {
        return Err(too_complex(format!(
            "{depth} nested all/exists/map/filter, at most {MAX_COMPREHENSION_DEPTH}"
        )));
    }
    Ok(())
}

/// The worst-case cost of `program` over any event within the data limits, refused when over
/// the budget with a message that says why and what to do.
fn check_cost(source: &str, program: &Program) -> Result<Cost, ExprError> {
    let cost = cost::estimate(program.expression(), &DATA_LIMITS);
    match cost.over(cost::BUDGET) {
        None => Ok(cost),
        Some(why) => Err(ExprError::TooComplex {
            expr: source.chars().take(80).collect(),
            message: format!(
                "{why} for events at the data limits ({} items per list, {} KiB per string): \
                 nest fewer comprehensions over event lists, or build less in them",
                DATA_LIMITS.max_items,
                DATA_LIMITS.max_string_bytes / 1024
            ),
        }),
    }
}

impl Expression {
    pub fn compile(source: &str) -> Result<Self, ExprError> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(ExprError::TooComplex {
                expr: source.chars().take(80).collect(),
                message: format!("{} bytes, at most {MAX_SOURCE_BYTES}", source.len()),
            });
        }
        let program = Program::compile(source).map_err(|e| ExprError::Compile {
            expr: source.to_string(),
            message: e.to_string().lines().next().unwrap_or_default().to_string(),
        })?;
        check_limits(source, &program)?;
        let cost = check_cost(source, &program)?;
        let references = program.references();
        let mut unknown: BTreeSet<&str> = BTreeSet::new();
        for name in references.variables() {
            if !VARIABLES.contains(&name) && !is_macro_binding(source, name) {
                unknown.insert(name);
            }
        }
        if let Some(name) = unknown.into_iter().next() {
            return Err(ExprError::UnknownVariable {
                expr: source.to_string(),
                name: name.to_string(),
                available: VARIABLES.join(", "),
            });
        }
        METER.with(|m| m.set(m.get().plus(cost)));
        Ok(Self {
            source: source.to_string(),
            program,
            cost,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The most one evaluation of it can cost, for any event within the data limits.
    pub fn cost(&self) -> Cost {
        self.cost
    }

    pub fn eval(&self, scope: &Scope) -> Result<Value, ExprError> {
        self.program
            .execute(&scope.context)
            .map_err(|e| ExprError::Eval {
                expr: self.source.clone(),
                message: e.to_string(),
            })
    }

    pub fn eval_bool(&self, scope: &Scope) -> Result<bool, ExprError> {
        match self.eval(scope)? {
            Value::Bool(b) => Ok(b),
            other => Err(ExprError::NotBool {
                expr: self.source.clone(),
                got: type_name(&other).to_string(),
            }),
        }
    }

    /// Rejects an expression that evaluates to a non-bool for a typical event. Type errors are
    /// caught at reconcile time this way; errors from missing fields are not, because `data` is
    /// open and a field may only be present on some events.
    pub fn check_bool(&self, probe: &Scope) -> Result<(), ExprError> {
        match self.eval_bool(probe) {
            Err(e @ ExprError::NotBool { .. }) => Err(e),
            _ => Ok(()),
        }
    }
}

thread_local! {
    /// What the expressions compiled on this thread so far cost together (see [`metered`]).
    static METER: std::cell::Cell<Cost> = const { std::cell::Cell::new(Cost { units: 0, bytes: 0 }) };
}

/// Runs `compile` and returns, with its result, what the expressions it compiled cost
/// together: one target's templates, rendered in one evaluation, are bounded as a whole.
pub fn metered<T>(compile: impl FnOnce() -> T) -> (T, Cost) {
    let before = METER.with(|m| m.replace(Cost::default()));
    let result = compile();
    let spent = METER.with(|m| m.replace(before.plus(m.get())));
    (result, spent)
}

/// Names bound by comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`) show up
/// as variable references; they are local, not unknown.
fn is_macro_binding(source: &str, name: &str) -> bool {
    ["all", "exists", "exists_one", "map", "filter"]
        .iter()
        .any(|m| {
            let pattern = format!(".{m}(");
            source.match_indices(&pattern).any(|(i, _)| {
                source[i + pattern.len()..]
                    .trim_start()
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.trim_start().starts_with(','))
            })
        })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Null => "null",
        _ => "value",
    }
}

/// CEL's standard environment, built once: building it per event cost more than the rest of
/// matching together (see `just bench`).
static STDLIB: std::sync::LazyLock<std::sync::Arc<cel::Env>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(cel::Env::stdlib()));

/// The variables one event offers to expressions.
pub struct Scope {
    context: Context<'static, 'static>,
    event: Json,
    route: (String, String),
    run: Json,
}

impl Scope {
    /// `event` is the envelope as JSON (see [`crate::event::Envelope::to_value`]).
    pub fn new(event: &Json, route_namespace: &str, route_name: &str) -> Self {
        let mut context = Context::with_env(STDLIB.clone());
        let attr = |name: &str| event.get(name).cloned().unwrap_or(Json::Null);
        for name in ATTRIBUTES {
            context.add_variable_from_value(name, json_to_cel(&attr(name)));
        }
        context.add_variable_from_value("event", json_to_cel(event));
        context.add_variable_from_value(
            "route",
            json_to_cel(&serde_json::json!({"name": route_name, "namespace": route_namespace})),
        );
        let mut scope = Self {
            context,
            event: event.clone(),
            route: (route_namespace.to_string(), route_name.to_string()),
            run: Json::Null,
        };
        let empty: serde_json::Map<String, Json> = crate::cost::RUN_FIELDS
            .iter()
            .map(|(name, _)| ((*name).to_string(), Json::String(String::new())))
            .collect();
        scope.set_run(Json::Object(empty));
        scope
    }

    /// The same scope with `run` (see [`crate::cost::RUN_FIELDS`]): each field a string, cut to its bound
    /// (a field it does not name stays empty).
    pub fn with_run(mut self, run: &Json) -> Self {
        let fields: serde_json::Map<String, Json> = crate::cost::RUN_FIELDS
            .iter()
            .map(|(name, max)| {
                let text = run.get(*name).and_then(Json::as_str).unwrap_or_default();
                let mut end = text.len().min(*max);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                ((*name).to_string(), Json::String(text[..end].to_string()))
            })
            .collect();
        self.set_run(Json::Object(fields));
        self
    }

    fn set_run(&mut self, run: Json) {
        self.context
            .add_variable_from_value("run", json_to_cel(&run));
        self.run = run;
    }

    /// The same scope with every string of the event passed through `escape`, for targets
    /// whose text has a markup of its own (Slack mrkdwn, Teams Markdown): what an event
    /// carries is shown as text, while the route's own template text keeps its markup.
    ///
    /// Escaping lengthens text (`&` becomes `&amp;`), and every expression's cost was
    /// estimated over the data limits: an event whose escaped text is over them is refused
    /// here, so that no expression ever sees more than it was estimated for.
    pub fn with_escaped_event(
        &self,
        escape: impl Fn(&str) -> String + Copy,
    ) -> Result<Scope, ExprError> {
        fn walk(value: &Json, escape: impl Fn(&str) -> String + Copy) -> Json {
            match value {
                Json::String(s) => Json::String(escape(s)),
                Json::Array(items) => Json::Array(items.iter().map(|v| walk(v, escape)).collect()),
                Json::Object(map) => Json::Object(
                    map.iter()
                        .map(|(k, v)| (k.clone(), walk(v, escape)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        let escaped = walk(&self.event, escape);
        let refused = |message: String| ExprError::Template {
            template: "(the event's text, escaped for the chat's markup)".into(),
            message,
        };
        let data = escaped.get("data").unwrap_or(&Json::Null);
        crate::event::check_data_value(data, &DATA_LIMITS)
            .map_err(|over| refused(over.to_string()))?;
        // The attributes too: each is a string the estimate takes as at most this long.
        if let Some(attributes) = escaped.as_object() {
            for (name, value) in attributes.iter().filter(|(k, _)| *k != "data") {
                if value
                    .as_str()
                    .is_some_and(|v| v.len() > DATA_LIMITS.max_string_bytes)
                {
                    return Err(refused(format!(
                        "{name} is longer than {} bytes once escaped",
                        DATA_LIMITS.max_string_bytes
                    )));
                }
            }
        }
        // A run's text comes from outside the route too (a pipeline's message).
        let run = walk(&self.run, escape);
        Ok(Scope::new(&escaped, &self.route.0, &self.route.1).with_run(&run))
    }

    /// The route's namespace and name.
    pub fn route(&self) -> (&str, &str) {
        (&self.route.0, &self.route.1)
    }

    /// The event envelope this scope was built from.
    pub fn event(&self) -> &Json {
        &self.event
    }

    /// A typical event, used at reconcile time to type-check expressions.
    pub fn probe() -> Self {
        let event = serde_json::json!({
            "specversion": "1.0", "id": "probe", "type": "com.statused.app.status.updated",
            "source": "statused", "time": "2025-01-01T00:00:00Z",
            "data": {"app_name": "App", "version": "1.0.0", "build_version": "1", "status": "Valid",
                     "store_name": "App Store Connect", "track": "Production",
                     "user_distribution": "100%", "message": "", "status_color": "#000000",
                     "app_icon_url": ""}
        });
        Self::new(&event, "default", "probe")
    }
}

fn json_to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_u64().map(Value::UInt))
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or_default())),
        Json::String(s) => Value::String(s.clone().into()),
        Json::Array(items) => Value::List(items.iter().map(json_to_cel).collect::<Vec<_>>().into()),
        Json::Object(map) => {
            let entries: std::collections::HashMap<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect();
            Value::Map(entries.into())
        }
    }
}

fn cel_to_json(v: &Value) -> Json {
    v.json().unwrap_or(Json::Null)
}

fn cel_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Null => String::new(),
        other => match cel_to_json(other) {
            Json::String(s) => s,
            json => json.to_string(),
        },
    }
}

/// A string with `$(...)` expressions. `$$(` stands for a literal `$(`.
#[derive(Debug)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Literal(String),
    Expr(Expression),
}

impl Template {
    pub fn compile(source: &str) -> Result<Self, ExprError> {
        let err = |message: String| ExprError::Template {
            template: source.to_string(),
            message,
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(pos) = rest.find("$(") {
            if rest[..pos].ends_with('$') {
                literal.push_str(&rest[..pos - 1]);
                literal.push_str("$(");
                rest = &rest[pos + 2..];
                continue;
            }
            literal.push_str(&rest[..pos]);
            let inner_start = pos + 2;
            let len = closing_paren(&rest[inner_start..])
                .ok_or_else(|| err("unclosed $( — every $( needs a matching )".into()))?;
            let inner = rest[inner_start..inner_start + len].trim();
            if inner.is_empty() {
                return Err(err("empty $() expression".into()));
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Expr(Expression::compile(inner)?));
            rest = &rest[inner_start + len + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    pub fn render(&self, scope: &Scope) -> Result<String, ExprError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Expr(e) => out.push_str(&cel_to_string(&e.eval(scope)?)),
            }
            if out.len() > MAX_RENDERED_BYTES {
                return Err(ExprError::Template {
                    template: self.source.chars().take(80).collect(),
                    message: format!("renders to more than {MAX_RENDERED_BYTES} bytes"),
                });
            }
        }
        Ok(out)
    }

    /// Like [`render`](Self::render), but a template that is exactly one `$(...)` keeps the
    /// expression's JSON type (so `"$(data)"` forwards an object, not its text).
    pub fn render_json(&self, scope: &Scope) -> Result<Json, ExprError> {
        match self.parts.as_slice() {
            [Part::Expr(e)] => {
                let json = cel_to_json(&e.eval(scope)?);
                // A value (`$(data)`) is held to the same cap as text.
                let len = serde_json::to_vec(&json).map_or(usize::MAX, |v| v.len());
                if len > MAX_RENDERED_BYTES {
                    return Err(ExprError::Template {
                        template: self.source.chars().take(80).collect(),
                        message: format!("renders to more than {MAX_RENDERED_BYTES} bytes"),
                    });
                }
                Ok(json)
            }
            _ => self.render(scope).map(Json::String),
        }
    }
}

/// Finds the `)` closing an expression that starts right after `$(`, skipping parentheses
/// inside CEL string literals. Returns its byte offset.
fn closing_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A JSON document whose strings are templates; object keys are taken literally.
#[derive(Debug)]
pub enum JsonTemplate {
    Value(Json),
    String(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    pub fn compile(value: &Json) -> Result<Self, ExprError> {
        Ok(match value {
            Json::String(s) => JsonTemplate::String(Template::compile(s)?),
            Json::Array(items) => {
                JsonTemplate::Array(items.iter().map(Self::compile).collect::<Result<_, _>>()?)
            }
            Json::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::compile(v)?)))
                    .collect::<Result<_, ExprError>>()?,
            ),
            other => JsonTemplate::Value(other.clone()),
        })
    }

    pub fn render(&self, scope: &Scope) -> Result<Json, ExprError> {
        Ok(match self {
            JsonTemplate::Value(v) => v.clone(),
            JsonTemplate::String(t) => t.render_json(scope)?,
            JsonTemplate::Array(items) => Json::Array(
                items
                    .iter()
                    .map(|i| i.render(scope))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.render(scope)?)))
                    .collect::<Result<_, ExprError>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let event = json!({
            "specversion": "1.0", "id": "ev-1", "type": "com.statused.app.status.updated",
            "source": "statused", "time": "2025-01-12T22:12:03Z",
            "data": {"app_name": "Markdown Email", "version": "2.1.0", "status": "Ready for Sale",
                     "build": 42, "tags": ["a", "b"]}
        });
        Scope::new(&event, "mobile-ci", "releases")
    }

    #[test]
    fn expressions_see_event_data_and_route() {
        let e = Expression::compile(
            r#"data.version.startsWith("2.") && route.namespace == "mobile-ci""#,
        )
        .unwrap();
        assert!(e.eval_bool(&scope()).unwrap());
        let e = Expression::compile(r#"id == "ev-1" && event.type.endsWith(".updated")"#).unwrap();
        assert!(e.eval_bool(&scope()).unwrap());
    }

    #[test]
    fn type_attribute_is_a_variable() {
        let e = Expression::compile(r#"type == "com.statused.app.status.updated""#).unwrap();
        assert!(e.eval_bool(&scope()).unwrap());
    }

    #[test]
    fn syntax_errors_fail_to_compile() {
        let err = Expression::compile("data.version ==").unwrap_err();
        assert!(matches!(err, ExprError::Compile { .. }), "{err}");
    }

    #[test]
    fn unknown_variables_fail_to_compile_with_the_list_of_known_ones() {
        let err = Expression::compile("dat.version == '1'").unwrap_err();
        assert!(
            err.to_string().contains("unknown variable \"dat\""),
            "{err}"
        );
        assert!(err.to_string().contains("data"), "{err}");
    }

    #[test]
    fn macro_bindings_are_not_unknown_variables() {
        let e = Expression::compile(r#"data.tags.exists(t, t == "b")"#).unwrap();
        assert!(e.eval_bool(&scope()).unwrap());
    }

    #[test]
    fn non_bool_results_are_caught_by_the_probe() {
        let e = Expression::compile("data.app_name").unwrap();
        assert!(matches!(
            e.check_bool(&Scope::probe()),
            Err(ExprError::NotBool { .. })
        ));
        let ok = Expression::compile("data.missing_field == 'x'").unwrap();
        assert!(ok.check_bool(&Scope::probe()).is_ok());
    }

    #[test]
    fn expressions_beyond_the_limits_are_refused_at_compile_time() {
        // The issue's hostile route: three nested comprehensions over 100 items.
        let items = (0..100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let hostile =
            format!("[{items}].all(a, [{items}].all(b, [{items}].all(c, a + b + c >= 0)))");
        let err = Expression::compile(&hostile).unwrap_err();
        assert!(matches!(err, ExprError::TooComplex { .. }), "{err}");
        let two = "data.builds.exists(b, b.tags.exists(t, t == 'x'))";
        assert!(Expression::compile(two).is_ok());
        let three = "data.a.exists(x, x.b.exists(y, y.c.exists(z, z == 1)))";
        let err = Expression::compile(three).unwrap_err().to_string();
        assert!(
            err.contains("3 nested all/exists/map/filter, at most 2"),
            "{err}"
        );
        let wide = (0..600)
            .map(|i| format!("data.v == {i}"))
            .collect::<Vec<_>>()
            .join(" || ");
        assert!(matches!(
            Expression::compile(&wide),
            Err(ExprError::TooComplex { .. })
        ));
        let long = format!("data.x == '{}'", "y".repeat(MAX_SOURCE_BYTES));
        assert!(matches!(
            Expression::compile(&long),
            Err(ExprError::TooComplex { .. })
        ));
    }

    #[test]
    fn the_issues_hostile_expressions_do_not_compile_and_say_why() {
        for hostile in [
            "data.l.map(x, data.l.map(y, y)).size() > 0",
            "string(data.l.map(x, data.l.map(y, y)).size())",
        ] {
            let err = Expression::compile(hostile).unwrap_err().to_string();
            assert!(
                err.contains("is too complex: its worst case is")
                    && err.contains("nest fewer comprehensions"),
                "{err}"
            );
            assert!(Template::compile(&format!("$({hostile})")).is_err());
        }
    }

    #[test]
    fn escaping_for_a_chat_never_takes_an_event_past_the_data_limits() {
        // 4 KiB of '&' is within the limits; escaped five-fold it is not.
        let event = json!({"data": {"m": "&".repeat(4096)}});
        let scope = Scope::new(&event, "ns", "r");
        let escape = |s: &str| s.replace('&', "&amp;");
        let err = scope.with_escaped_event(escape).err().unwrap().to_string();
        assert!(err.contains("longer than 16384 bytes"), "{err}");
        let fine = Scope::new(&json!({"data": {"m": "a & b"}}), "ns", "r");
        let escaped = fine.with_escaped_event(escape).unwrap();
        assert_eq!(escaped.event()["data"]["m"], "a &amp; b");
    }

    #[test]
    fn rendered_output_is_capped() {
        let t = Template::compile("$(data.message)$(data.message)").unwrap();
        let big = "m".repeat(MAX_RENDERED_BYTES / 2 + 1);
        let scope = Scope::new(&serde_json::json!({"data": {"message": big}}), "ns", "r");
        assert!(matches!(t.render(&scope), Err(ExprError::Template { .. })));
    }

    #[test]
    fn templates_interpolate_strings_and_numbers() {
        let t = Template::compile("$(data.app_name) v$(data.version) is live (#$(data.build))")
            .unwrap();
        assert_eq!(
            t.render(&scope()).unwrap(),
            "Markdown Email v2.1.0 is live (#42)"
        );
    }

    #[test]
    fn parentheses_inside_strings_and_calls_do_not_end_the_expression() {
        let t = Template::compile(r#"[$(data.app_name + " (" + string(size(data.tags)) + ")")]"#)
            .unwrap();
        assert_eq!(t.render(&scope()).unwrap(), "[Markdown Email (2)]");
    }

    #[test]
    fn double_dollar_escapes() {
        let t = Template::compile("cost $$(not an expr)").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.render(&scope()).unwrap(), "cost $(not an expr)");
    }

    #[test]
    fn bad_templates_fail_to_compile() {
        assert!(Template::compile("$(data.app_name").is_err());
        assert!(Template::compile("$()").is_err());
        assert!(Template::compile("$(data.)").is_err());
    }

    #[test]
    fn whole_string_expressions_keep_their_json_type() {
        let t = JsonTemplate::compile(&json!({"n": "$(data.build)", "tags": "$(data.tags)",
                                              "s": "b$(data.build)", "k": true}))
        .unwrap();
        assert_eq!(
            t.render(&scope()).unwrap(),
            json!({"n": 42, "tags": ["a", "b"], "s": "b42", "k": true})
        );
    }

    #[test]
    fn missing_fields_are_render_errors() {
        let t = Template::compile("$(data.build_version)").unwrap();
        let err = t.render(&scope()).unwrap_err();
        assert!(err.to_string().contains("data.build_version"), "{err}");
    }
}
