//! The worst-case cost of one CEL evaluation, estimated when a route is compiled.
//!
//! Why an estimate and not a budget the interpreter counts: the `cel` interpreter has no step
//! counter or allocation hook, and a timeout that stops waiting leaves the work running (the
//! seed's receiver did that, and a 9 KB event took the operator past 3 GiB). So the cost is
//! bounded by construction, the way Kubernetes bounds CEL in CRD validation: every event is
//! held to [`DataLimits`] in the one parse before matching (items per list or map, nesting,
//! nodes, string length), and every expression's cost is estimated over the worst event those
//! limits allow. An expression whose estimate is over [`BUDGET`] never runs: the route is not
//! Ready and says which expression and why. Whatever does run is then bounded in CPU and
//! memory for any event the receiver (or the executor, which checks stored events again)
//! lets through.
//!
//! The estimate is an upper bound over the functions the standard environment offers (no
//! regex, no string extensions, no chrono: see `Cargo.toml`): each node costs one unit, work
//! over bytes one unit per [`BYTES_PER_UNIT`], a comprehension its range's items times its
//! body; memory is the bytes of values an evaluation builds (lists from `map`/`filter`,
//! concatenations, conversions), [`SLOT`] bytes per list item. Pure.

use std::collections::HashMap;

use cel::IdedExpr;
use cel::common::ast::{EntryExpr, Expr, LiteralValue, operators};

/// What every event's `data` (and envelope) is held to before any expression sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLimits {
    /// Items in any one list or entries in any one map.
    pub max_items: usize,
    /// Lists and maps nested in one another.
    pub max_depth: usize,
    /// Values in the whole event (every scalar, list and map counts one).
    pub max_nodes: usize,
    /// Bytes of any one string (keys included).
    pub max_string_bytes: usize,
    /// Bytes of all strings of the event together.
    pub max_total_bytes: usize,
}

/// The limits every event is held to. Statused's events are flat objects of short strings;
/// these leave room for a hundred-fold more while keeping two nested comprehensions over an
/// event's lists inside [`BUDGET`].
pub const DATA_LIMITS: DataLimits = DataLimits {
    max_items: 256,
    max_depth: 16,
    max_nodes: 4096,
    max_string_bytes: 16 * 1024,
    max_total_bytes: 256 * 1024,
};

impl DataLimits {
    /// Bytes the whole event may take as values: every node a slot, and every string byte.
    pub fn event_bytes(&self) -> u64 {
        (self.max_nodes as u64) * SLOT + self.max_total_bytes as u64
    }
}

/// What one evaluation may cost at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cost {
    /// Units of work: about one interpreter step each (measured: see `just bench`).
    pub units: u64,
    /// Bytes of values built while evaluating.
    pub bytes: u64,
}

impl Cost {
    pub fn plus(self, other: Cost) -> Cost {
        Cost {
            units: self.units.saturating_add(other.units),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }

    /// Why this cost is over `budget`, if it is.
    pub fn over(&self, budget: Cost) -> Option<String> {
        if self.units > budget.units {
            Some(format!(
                "its worst case is {} cost units, at most {} are allowed",
                self.units, budget.units
            ))
        } else if self.bytes > budget.bytes {
            Some(format!(
                "its worst case builds {} KiB of values, at most {} KiB are allowed",
                self.bytes / 1024,
                budget.bytes / 1024
            ))
        } else {
            None
        }
    }
}

/// The most one expression (a match expression, or one `$(...)`) may cost. 1,000,000 units is
/// about 0.1 s of one core; 8 MiB leaves the receiver's four evaluations and the executor's
/// renders far inside the operator's memory.
pub const BUDGET: Cost = Cost {
    units: 1_000_000,
    bytes: 8 * 1024 * 1024,
};

/// The fields of `run`, and the most bytes each holds (a run's message is cut to 256 bytes,
/// names to 253, errors to the 1 KiB the executor records).
pub const RUN_FIELDS: [(&str, usize); 8] = [
    ("rule", 63),
    ("kind", 32),
    ("phase", 16),
    ("error", 1024),
    ("name", 253),
    ("startedAt", 32),
    ("completedAt", 32),
    ("message", 256),
];

/// The most all the targets of one route may cost together: one delivery renders its due
/// targets in one of the executor's render slots, which it then holds for at most about
/// 0.4 s.
pub const ROUTE_RENDER_UNITS: u64 = 4 * BUDGET.units;

/// Bytes of one list item or map entry beyond its contents (a boxed value and its allocation).
pub const SLOT: u64 = 64;
/// Bytes compared, copied or scanned per unit of work.
pub const BYTES_PER_UNIT: u64 = 64;

/// The bound of one value: how many items it may have, how large each and all of them may be,
/// where it comes from, and what computing it costs.
#[derive(Debug, Clone, Copy, Default)]
struct Bound {
    /// Items of a list or map; 1 for a scalar.
    items: u64,
    /// Bytes of the largest item (of the value itself, for a scalar).
    item_bytes: u64,
    /// Bytes of the whole value (at most `items` × (`item_bytes` + [`SLOT`])).
    total: u64,
    /// Part of the event: its items are disjoint parts of it, so their sizes add up to at
    /// most the event's.
    event: bool,
    /// Known to be a string (added to a string, or made by `string()`).
    string: bool,
    /// The comprehension variable this value is (part of), when it iterates over the event.
    tag: u32,
    cost: Cost,
}

impl Bound {
    fn scalar(bytes: u64, cost: Cost) -> Self {
        Bound {
            items: 1,
            item_bytes: bytes,
            total: bytes,
            cost,
            ..Bound::default()
        }
    }

    /// Bytes the whole value may take.
    fn size(&self) -> u64 {
        self.items
            .saturating_mul(self.item_bytes.saturating_add(SLOT))
            .min(self.total)
    }

    /// The bound of one of its items (or, for a map, of one of its values).
    fn item(&self) -> Bound {
        if self.event {
            return Bound {
                cost: Cost::default(),
                ..*self
            };
        }
        Bound {
            items: self.item_bytes.div_ceil(SLOT).max(1),
            item_bytes: self.item_bytes,
            total: self.item_bytes,
            ..Bound::default()
        }
    }
}

fn units(n: u64) -> Cost {
    Cost { units: n, bytes: 0 }
}

/// Work over `bytes` bytes.
fn scan(bytes: u64) -> u64 {
    bytes.div_ceil(BYTES_PER_UNIT)
}

struct Estimator {
    limits: DataLimits,
    scope: HashMap<String, Bound>,
    next_tag: u32,
    /// The comprehensions being estimated, innermost last (their tags).
    loops: Vec<u32>,
    /// Per comprehension tag: how many places copy (a part of) its current item. Each copies
    /// every item once over the loop: at most the whole range, charged once at its end.
    amortized: HashMap<u32, u64>,
}

/// The worst-case cost of evaluating `expr` against any event within `limits`.
pub fn estimate(expr: &IdedExpr, limits: &DataLimits) -> Cost {
    let event_bytes = limits.event_bytes();
    // Anything from the event: a list or map of at most max_items items, each as large as
    // the event, all of them together too.
    let event = Bound {
        items: limits.max_items as u64,
        item_bytes: event_bytes,
        total: event_bytes,
        event: true,
        cost: units(1),
        ..Bound::default()
    };
    let string = Bound {
        string: true,
        ..Bound::scalar(limits.max_string_bytes as u64, units(1))
    };
    let mut scope = HashMap::new();
    for name in ["data", "event"] {
        scope.insert(name.to_string(), event);
    }
    for name in ["id", "type", "source", "time", "subject", "specversion"] {
        scope.insert(name.to_string(), string);
    }
    // A route's namespace and name: at most 253 bytes each.
    scope.insert(
        "route".to_string(),
        Bound {
            items: 2,
            item_bytes: 253,
            total: 2 * (253 + SLOT),
            cost: units(1),
            ..Bound::default()
        },
    );
    // What a rule with `after` was sent for: strings of at most their bounds.
    let run_bytes: u64 = RUN_FIELDS.iter().map(|(_, b)| *b as u64).sum();
    scope.insert(
        "run".to_string(),
        Bound {
            items: RUN_FIELDS.len() as u64,
            item_bytes: RUN_FIELDS.iter().map(|(_, b)| *b as u64).max().unwrap_or(0),
            total: run_bytes + RUN_FIELDS.len() as u64 * SLOT,
            cost: units(1),
            ..Bound::default()
        },
    );
    let mut estimator = Estimator {
        limits: *limits,
        scope,
        next_tag: 1,
        loops: Vec::new(),
        amortized: HashMap::new(),
    };
    let result = estimator.bound(expr);
    // The result leaves the interpreter as a value of its own (a copy).
    result.cost.plus(estimator.copy(&result))
}

impl Estimator {
    /// What copying `b` costs: the interpreter deep-copies values it puts into a list, a map,
    /// an optional or a result, and each item it iterates over. A copy of (a part of) the
    /// current item of the innermost comprehension over the event is charged once for the
    /// whole loop (the items are disjoint parts of the range); any other copy in full, each
    /// time it is made.
    fn copy(&mut self, b: &Bound) -> Cost {
        if b.tag != 0 && self.loops.last() == Some(&b.tag) {
            *self.amortized.entry(b.tag).or_default() += 1;
            return Cost::default();
        }
        Cost {
            units: scan(b.size()),
            bytes: b.size(),
        }
    }

    fn bound(&mut self, e: &IdedExpr) -> Bound {
        match &e.expr {
            Expr::Literal(literal) => match literal {
                LiteralValue::String(s) => Bound {
                    string: true,
                    ..Bound::scalar(s.inner().len() as u64, units(1))
                },
                LiteralValue::Bytes(b) => Bound::scalar(b.inner().len() as u64, units(1)),
                _ => Bound::scalar(8, units(1)),
            },
            // Unknown names do not compile (expr.rs); bound them anyway, as the whole event.
            Expr::Ident(name) => {
                let b = self
                    .scope
                    .get(name)
                    .or_else(|| self.scope.get("data"))
                    .copied()
                    .unwrap_or_default();
                Bound {
                    cost: units(1),
                    ..b
                }
            }
            Expr::Select(s) => {
                let operand = self.bound(&s.operand);
                let cost = operand.cost.plus(units(1));
                if s.test {
                    Bound::scalar(1, cost)
                } else {
                    Bound {
                        cost,
                        ..operand.item()
                    }
                }
            }
            Expr::List(list) => {
                let elements: Vec<Bound> = list.elements.iter().map(|x| self.bound(x)).collect();
                let copies = elements
                    .iter()
                    .fold(Cost::default(), |c, p| c.plus(self.copy(p)));
                let mut b = built(&elements, elements.len() as u64);
                b.cost = b.cost.plus(copies);
                b
            }
            Expr::Map(cel::common::ast::MapExpr { entries })
            | Expr::Struct(cel::common::ast::StructExpr { entries, .. }) => {
                let mut parts = Vec::new();
                for entry in entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(m) => {
                            parts.push(self.bound(&m.key));
                            parts.push(self.bound(&m.value));
                        }
                        EntryExpr::StructField(f) => parts.push(self.bound(&f.value)),
                    }
                }
                let copies = parts
                    .iter()
                    .fold(Cost::default(), |c, p| c.plus(self.copy(p)));
                let mut b = built(&parts, entries.len() as u64);
                b.cost = b.cost.plus(copies);
                b
            }
            Expr::Call(call) => {
                let mut operands = Vec::new();
                if let Some(t) = &call.target {
                    operands.push(self.bound(t));
                }
                for a in &call.args {
                    operands.push(self.bound(a));
                }
                self.function(&call.func_name, &mut operands)
            }
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Unspecified => Bound::scalar(0, units(1)),
        }
    }

    /// A call of the standard environment's function or operator `name` on `operands`.
    fn function(&mut self, name: &str, operands: &mut [Bound]) -> Bound {
        let inputs = operands.iter().fold(units(1), |acc, o| acc.plus(o.cost));
        let sizes: u64 = operands
            .iter()
            .map(Bound::size)
            .fold(0, u64::saturating_add);
        let smallest = operands.iter().map(Bound::size).min().unwrap_or(0);
        match name {
            // Short-circuiting and boolean operators: constant work of their own.
            operators::LOGICAL_AND
            | operators::LOGICAL_OR
            | operators::LOGICAL_NOT
            | operators::NOT_STRICTLY_FALSE => Bound::scalar(1, inputs),
            // Comparisons stop at the shorter operand.
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => Bound::scalar(1, inputs.plus(units(scan(smallest)))),
            // A scan of the list (or a lookup in the map) comparing each item with the value:
            // never more bytes than the value for each item, nor than the list holds.
            operators::IN => {
                let value = operands.first().map_or(0, Bound::size);
                let list = operands.get(1).copied().unwrap_or_default();
                let compared = value.saturating_mul(list.items).min(list.size());
                Bound::scalar(
                    1,
                    inputs.plus(units(list.items.saturating_add(scan(compared)))),
                )
            }
            // An item (or an optional holding it): copied out.
            operators::INDEX | operators::OPT_INDEX | operators::OPT_SELECT => {
                let item = operands.first().map(Bound::item).unwrap_or_default();
                Bound {
                    cost: inputs.plus(self.copy(&item)),
                    ..item
                }
            }
            // Either branch.
            operators::CONDITIONAL => {
                let branches = &operands[1.min(operands.len())..];
                Bound {
                    items: branches.iter().map(|o| o.items).max().unwrap_or(1),
                    item_bytes: branches.iter().map(|o| o.item_bytes).max().unwrap_or(0),
                    total: branches.iter().map(|o| o.total).max().unwrap_or(0),
                    event: branches.iter().all(|o| o.event),
                    string: branches.iter().all(|o| o.string),
                    tag: 0,
                    cost: inputs,
                }
            }
            // Numbers; `size` counts a string's characters.
            operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO
            | operators::NEGATE
            | "size"
            | "int"
            | "uint"
            | "double"
            | "bool"
            | "type" => Bound::scalar(8, inputs.plus(units(scan(sizes)))),
            "contains" | "startsWith" | "endsWith" => {
                Bound::scalar(1, inputs.plus(units(scan(self.string_sizes(operands)))))
            }
            // Strings and bytes: one value as long as all of them, or a number's text.
            "string" | "bytes" => {
                let size = if operands.iter().any(|o| o.items > 1 && !o.event) {
                    // A list's text (refused by the interpreter, bounded anyway).
                    sizes
                } else {
                    self.string_sizes(operands)
                }
                .saturating_add(32);
                Bound {
                    string: name == "string",
                    cost: inputs.plus(Cost {
                        units: scan(size),
                        bytes: size,
                    }),
                    ..Bound::scalar(size, Cost::default())
                }
            }
            // Everything else builds a value from its operands: concatenation (`+` of strings,
            // bytes or lists), `dyn`, optionals. None of the standard environment's functions
            // builds more than its operands hold.
            _ => {
                let strings = operands.iter().any(|o| o.string);
                let result = if strings {
                    let size = self.string_sizes(operands);
                    Bound {
                        string: true,
                        ..Bound::scalar(size, Cost::default())
                    }
                } else {
                    let items = operands
                        .iter()
                        .map(|o| o.items)
                        .fold(0u64, u64::saturating_add)
                        .max(1);
                    Bound {
                        items,
                        item_bytes: operands.iter().map(|o| o.item_bytes).max().unwrap_or(0),
                        total: sizes,
                        ..Bound::default()
                    }
                };
                Bound {
                    cost: inputs.plus(Cost {
                        units: scan(result.size()),
                        bytes: result.size(),
                    }),
                    ..result
                }
            }
        }
    }

    /// Bytes of `operands` taken as strings: an event value used as a string is at most one
    /// event string long.
    fn string_sizes(&self, operands: &[Bound]) -> u64 {
        operands
            .iter()
            .map(|o| {
                if o.event {
                    o.size().min(self.limits.max_string_bytes as u64)
                } else {
                    o.size()
                }
            })
            .fold(0, u64::saturating_add)
    }

    /// `all`, `exists`, `exists_one` (a bool or count folded over the range) and `map`, `filter`
    /// (a list appended to: `@result + [item]`, built in place by the interpreter).
    fn comprehension(&mut self, c: &cel::common::ast::ComprehensionExpr) -> Bound {
        let range = self.bound(&c.iter_range);
        let init = self.bound(&c.accu_init);
        // Each item is copied as the loop reaches it: the whole range once per run of the
        // loop (amortized over an enclosing loop when the range is part of its item).
        let items_copied = self.copy(&range);
        let tag = self.next_tag;
        self.next_tag += 1;
        let mut item = range.item();
        item.tag = if range.event { tag } else { 0 };
        let saved = (
            self.scope.insert(c.iter_var.clone(), item),
            // While the body runs the accumulator is a bool or a count, or (for map/filter) a
            // list the step appends one item to: its size is accounted for in the result.
            self.scope
                .insert(c.accu_var.clone(), Bound::scalar(8, units(1))),
        );
        self.loops.push(tag);
        let cond = self.bound(&c.loop_cond);
        let appended = appended_item(c).map(|(guard, list)| {
            let guard = guard.map_or(Cost::default(), |g| self.bound(g).cost);
            (guard, self.bound(list))
        });
        // The interpreter appends in place: a step costs its guard and its new item.
        let step = match appended {
            Some((guard, list)) => Bound::scalar(8, guard.plus(list.cost)),
            None => self.bound(&c.loop_step),
        };
        self.loops.pop();
        let own_copies = self.amortized.remove(&tag).unwrap_or(0);
        let appended = appended.map(|(_, list)| list);
        let n = range.items;
        let per_item = cond.cost.plus(step.cost).plus(units(1));
        let (items, item_bytes, kept) = match appended {
            // The items of an event list are disjoint parts of the event: what a step keeps of
            // its own item adds up to at most the list.
            Some(list) if item.tag != 0 && list.tag == tag => {
                (n, list.item_bytes, range.size().saturating_add(n * SLOT))
            }
            Some(list) => (
                n,
                list.item_bytes,
                n.saturating_mul(list.item_bytes.saturating_add(SLOT)),
            ),
            None => (1, 8, 0),
        };
        let loop_cost = Cost {
            units: per_item
                .units
                .saturating_mul(n)
                .saturating_add(scan(kept))
                .saturating_add(own_copies.saturating_mul(scan(range.size()))),
            // Memory: what the result keeps, one item's copy and one step's temporaries at
            // a time.
            bytes: kept
                .saturating_add(per_item.bytes)
                .saturating_add((own_copies + 1).saturating_mul(range.item().size())),
        };
        let accu = Bound {
            items,
            item_bytes,
            total: kept.max(8),
            cost: units(1),
            ..Bound::default()
        };
        self.scope.insert(c.accu_var.clone(), accu);
        let result = self.bound(&c.result);
        for (name, old) in [(&c.iter_var, saved.0), (&c.accu_var, saved.1)] {
            match old {
                Some(b) => self.scope.insert(name.clone(), b),
                None => self.scope.remove(name),
            };
        }
        Bound {
            cost: range
                .cost
                .plus(init.cost)
                .plus(Cost {
                    units: items_copied.units,
                    bytes: 0,
                })
                .plus(loop_cost)
                .plus(result.cost),
            ..result
        }
    }
}

/// A list or map literal of `items` items built from `parts`.
fn built(parts: &[Bound], items: u64) -> Bound {
    let cost = parts
        .iter()
        .fold(units(1), |acc, p| acc.plus(p.cost))
        .plus(Cost {
            units: items,
            bytes: items.saturating_mul(SLOT),
        });
    let item_bytes = parts.iter().map(Bound::size).max().unwrap_or(0);
    Bound {
        items,
        item_bytes,
        total: items.saturating_mul(item_bytes.saturating_add(SLOT)),
        // A one-item list of a comprehension's own item keeps its tag (`[x]` in map).
        tag: match parts {
            [only] => only.tag,
            _ => 0,
        },
        cost,
        ..Bound::default()
    }
}

/// The guard and the `[item]` list a `map`/`filter` step appends: `@result + [item]`, or
/// `guard ? @result + [item] : @result`.
fn appended_item(
    c: &cel::common::ast::ComprehensionExpr,
) -> Option<(Option<&IdedExpr>, &IdedExpr)> {
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    let (guard, step) = match &c.loop_step.expr {
        Expr::Call(call) if call.func_name == operators::CONDITIONAL => {
            (call.args.first(), call.args.get(1)?)
        }
        _ => (None, &c.loop_step),
    };
    match &step.expr {
        Expr::Call(call)
            if call.func_name == operators::ADD && call.args.first().is_some_and(is_accu) =>
        {
            call.args.get(1).map(|list| (guard, list))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(source: &str) -> Cost {
        let program = cel::Program::compile(source).unwrap();
        estimate(program.expression(), &DATA_LIMITS)
    }

    const N: u64 = DATA_LIMITS.max_items as u64;

    /// One comprehension over an event list with a 100-item literal list inside: between a
    /// third and a half of the budget.
    pub const COSTLY: &str = "data.l.exists(x, [LIST].exists(y, y == x))";

    fn costly() -> String {
        COSTLY.replace(
            "LIST",
            &(1..=100)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    #[test]
    fn simple_expressions_cost_a_few_units_and_build_almost_nothing() {
        let c = cost(r#"data.version.startsWith("2.") && route.namespace == "mobile-ci""#);
        assert!(c.units < 2_000, "{c:?}");
        assert!(c.bytes < 64, "{c:?}");
    }

    #[test]
    fn one_comprehension_over_an_event_list_is_linear_in_its_items_and_bytes() {
        let one = cost("data.tags.exists(t, t == 'x')");
        // Each item is visited (and copied, as the interpreter does) once.
        assert!(one.units >= N + scan(DATA_LIMITS.event_bytes()), "{one:?}");
        assert!(one.over(BUDGET).is_none(), "{one:?}");
    }

    #[test]
    fn nested_comprehensions_over_parts_of_each_item_fit_the_budget() {
        // Each build's tags are a part of that build: all of them together are the event.
        let nested = cost("data.builds.exists(b, b.tags.exists(t, t == 'x'))");
        assert!(nested.units >= N * N, "{nested:?}");
        assert!(nested.over(BUDGET).is_none(), "{nested:?}");
    }

    #[test]
    fn the_same_event_list_nested_in_itself_is_over_the_budget() {
        // The interpreter copies every item of the inner list on each outer item: 256 copies
        // of the event's largest list.
        let c = cost("data.l.exists(x, data.l.exists(y, y == 1))");
        assert!(c.units > BUDGET.units, "{c:?}");
    }

    #[test]
    fn a_costly_but_allowed_expression_is_between_a_third_and_a_half_of_the_budget() {
        let c = cost(&costly());
        assert!(
            c.units > BUDGET.units / 3 && c.units < BUDGET.units / 2,
            "{c:?}"
        );
    }

    #[test]
    fn mapping_an_event_list_to_its_items_keeps_at_most_the_event_a_few_times() {
        let c = cost("data.builds.map(b, b.version)");
        assert!(c.bytes <= 5 * DATA_LIMITS.event_bytes(), "{c:?}");
        assert!(c.over(BUDGET).is_none(), "{c:?}");
    }

    #[test]
    fn the_issues_hostile_expressions_are_over_the_budget() {
        for hostile in [
            "data.l.map(x, data.l.map(y, y)).size() > 0",
            "string(data.l.map(x, data.l.map(y, y)).size())",
        ] {
            let c = cost(hostile);
            assert!(c.over(BUDGET).is_some(), "{hostile}: {c:?}");
        }
    }

    #[test]
    fn copies_of_the_event_into_literals_optionals_and_results_are_charged() {
        // The interpreter deep-copies each of these.
        let one = cost("[data] == []");
        let many = cost(&format!("[{}] == []", vec!["data"; 20].join(", ")));
        assert!(many.bytes >= 20 * DATA_LIMITS.event_bytes(), "{many:?}");
        assert!(many.over(BUDGET).is_some(), "{many:?}");
        assert!(one.bytes >= DATA_LIMITS.event_bytes() && one.over(BUDGET).is_none());
        // A result is copied out of the interpreter.
        assert!(cost("data").bytes >= DATA_LIMITS.event_bytes());
        // A copy inside a nested loop is paid on every inner step.
        let nested = cost("data.l.all(x, data.l.all(y, [data] != []))");
        assert!(nested.units > BUDGET.units, "{nested:?}");
    }

    #[test]
    fn concatenating_event_strings_in_a_comprehension_counts_their_bytes() {
        let c = cost("data.l.map(x, data.message + data.message + data.message)");
        assert!(
            c.bytes >= N * 3 * DATA_LIMITS.max_string_bytes as u64,
            "{c:?}"
        );
        assert!(c.over(BUDGET).is_some(), "{c:?}");
        // A concatenation per item that is not kept is fine.
        let ok = cost("data.l.filter(x, x == 'v' + data.version).size() > 0");
        assert!(ok.over(BUDGET).is_none(), "{ok:?}");
    }

    #[test]
    fn three_nested_comprehensions_over_event_lists_are_over_the_budget() {
        let c = cost("data.l.exists(x, data.l.exists(y, data.l.exists(z, x == y && y == z)))");
        assert!(c.units > BUDGET.units, "{c:?}");
        assert!(c.over(BUDGET).unwrap().contains("cost units"));
    }

    #[test]
    fn membership_never_compares_more_than_the_list_holds() {
        let literal = cost("data.status in ['Valid', 'Invalid']");
        assert!(literal.units < 100, "{literal:?}");
        let event = cost("data.a in data.l");
        assert!(event.over(BUDGET).is_none(), "{event:?}");
    }
}
