//! The rule language of dynamic groups, parsed and checked strictly: a rule that is accepted can always be
//! evaluated, so a mistake is a 400 at upload naming where it is, never a group that silently matches
//! nothing. Pure: no storage, no clock (the evaluator takes `now`).
//!
//! A node is one of
//! - `{"all": [node, ...]}` (every one holds; empty: always true),
//! - `{"any": [node, ...]}` (at least one holds; empty: never true),
//! - `{"not": node}`,
//! - `{"fact": F, "op": O, "value": V}` (a test of one fact; see [`Fact`] and [`Op`]).

use serde_json::{json, Map, Value};
use std::fmt;

/// Bounds on what a rule may hold: its JSON text, how deep nodes nest, how many nodes, one string value,
/// one `in` list. Evaluation is linear in the nodes, so these bound its cost per device.
pub const MAX_RULE_BYTES: usize = 16 * 1024;
pub const MAX_DEPTH: usize = 8;
pub const MAX_NODES: usize = 256;
pub const MAX_STRING: usize = 256;
pub const MAX_IN_VALUES: usize = 256;
/// The longest age `within`/`older_than` take: ten years, in seconds.
pub const MAX_AGE_SECS: i64 = 10 * 365 * 86_400;
/// Attribute keys as plugins may set them (1 to 128 bytes).
const MAX_ATTRIBUTE_KEY: usize = 128;

/// The platforms a device can report (see `protocol::platform`): a value outside these is a typo.
pub const PLATFORMS: [&str; 6] = ["iOS", "iPadOS", "macOS", "tvOS", "watchOS", "visionOS"];

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Test(Test),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Test {
    pub fact: Fact,
    pub op: Op,
    /// Checked against `op` and the fact's kind at parse time.
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fact {
    Platform,
    OsVersion,
    Build,
    Model,
    ModelName,
    ProductName,
    SerialNumber,
    DeviceName,
    EnrolledAt,
    LastSeenAt,
    /// `attribute:<key>`: an attribute a plugin set on the device.
    Attribute(String),
    /// `ddm:<status item>`: the latest value the device channel reported for a DDM status item.
    Ddm(String),
}

/// How a fact's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exact strings.
    Text,
    /// Dotted versions (`17.10` > `17.9`, `17.2` = `17.2.0`, build `21C62` > `21C5`).
    Version,
    /// A time, compared with the evaluation time.
    Time,
    /// A plugin attribute: a string, ordered as a version by `lt`..`gte`.
    Attribute,
    /// A status item's JSON value: numbers as numbers, strings as versions, booleans by `eq`.
    Json,
}

impl Fact {
    pub fn parse(s: &str) -> Result<Fact, String> {
        if let Some(key) = s.strip_prefix("attribute:") {
            if key.is_empty() || key.len() > MAX_ATTRIBUTE_KEY {
                return Err(format!(
                    "an attribute key is 1 to {MAX_ATTRIBUTE_KEY} bytes"
                ));
            }
            return Ok(Fact::Attribute(key.to_string()));
        }
        if let Some(name) = s.strip_prefix("ddm:") {
            return match crate::protocol::ddm::status_item_is_scalar(name) {
                Some(true) => Ok(Fact::Ddm(name.to_string())),
                Some(false) => Err(format!(
                    "{name:?} is an array or dictionary: rules read single values"
                )),
                None => Err(format!("{:?} is not a DDM status item", truncate(name))),
            };
        }
        Ok(match s {
            "platform" => Fact::Platform,
            "os_version" => Fact::OsVersion,
            "build" => Fact::Build,
            "model" => Fact::Model,
            "model_name" => Fact::ModelName,
            "product_name" => Fact::ProductName,
            "serial_number" => Fact::SerialNumber,
            "device_name" => Fact::DeviceName,
            "enrolled_at" => Fact::EnrolledAt,
            "last_seen_at" => Fact::LastSeenAt,
            _ => {
                return Err(format!(
                    "unknown fact {:?} (platform, os_version, build, model, model_name, product_name, \
                     serial_number, device_name, enrolled_at, last_seen_at, attribute:<key>, ddm:<status item>)",
                    truncate(s)
                ))
            }
        })
    }

    pub fn name(&self) -> String {
        match self {
            Fact::Platform => "platform".into(),
            Fact::OsVersion => "os_version".into(),
            Fact::Build => "build".into(),
            Fact::Model => "model".into(),
            Fact::ModelName => "model_name".into(),
            Fact::ProductName => "product_name".into(),
            Fact::SerialNumber => "serial_number".into(),
            Fact::DeviceName => "device_name".into(),
            Fact::EnrolledAt => "enrolled_at".into(),
            Fact::LastSeenAt => "last_seen_at".into(),
            Fact::Attribute(k) => format!("attribute:{k}"),
            Fact::Ddm(n) => format!("ddm:{n}"),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Fact::OsVersion | Fact::Build => Kind::Version,
            Fact::EnrolledAt | Fact::LastSeenAt => Kind::Time,
            Fact::Attribute(_) => Kind::Attribute,
            Fact::Ddm(_) => Kind::Json,
            _ => Kind::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    /// Exactly `not eq`: true when the fact is absent.
    Ne,
    In,
    Prefix,
    Lt,
    Lte,
    Gt,
    Gte,
    /// Whether the fact is present (`value` true, the default) or absent (false).
    Exists,
    /// A time no more than `value` seconds before now.
    Within,
    /// A time more than `value` seconds before now.
    OlderThan,
}

impl Op {
    const ALL: [(&'static str, Op); 11] = [
        ("eq", Op::Eq),
        ("ne", Op::Ne),
        ("in", Op::In),
        ("prefix", Op::Prefix),
        ("lt", Op::Lt),
        ("lte", Op::Lte),
        ("gt", Op::Gt),
        ("gte", Op::Gte),
        ("exists", Op::Exists),
        ("within", Op::Within),
        ("older_than", Op::OlderThan),
    ];

    fn parse(s: &str) -> Option<Op> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, op)| *op)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, op)| *op == self).unwrap().0
    }

    /// The ops a kind of fact takes.
    fn allowed(kind: Kind) -> &'static [Op] {
        use Op::*;
        match kind {
            Kind::Text => &[Eq, Ne, In, Prefix, Exists],
            Kind::Version | Kind::Attribute | Kind::Json => {
                &[Eq, Ne, In, Prefix, Lt, Lte, Gt, Gte, Exists]
            }
            Kind::Time => &[Within, OlderThan],
        }
    }
}

/// Where a rule is wrong (`rule.all[1].value`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    pub path: String,
    pub message: String,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError {
        path: path.to_string(),
        message: message.into(),
    })
}

/// A value quoted in an error, cut short: the input is hostile and may be huge.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

impl Rule {
    /// Parse and check a rule from its JSON text.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        if text.len() > MAX_RULE_BYTES {
            return err("rule", format!("larger than {MAX_RULE_BYTES} bytes"));
        }
        let v: Value = serde_json::from_str(text).map_err(|e| RuleError {
            path: "rule".into(),
            message: format!("not JSON: {e}"),
        })?;
        Rule::from_json(&v)
    }

    /// Parse and check a rule given as JSON.
    pub fn from_json(v: &Value) -> Result<Rule, RuleError> {
        if v.to_string().len() > MAX_RULE_BYTES {
            return err("rule", format!("larger than {MAX_RULE_BYTES} bytes"));
        }
        let mut nodes = 0;
        node(v, "rule", 1, &mut nodes)
    }

    /// The canonical JSON of the rule (what is stored and shown).
    pub fn to_json(&self) -> Value {
        match self {
            Rule::All(rs) => json!({"all": rs.iter().map(Rule::to_json).collect::<Vec<_>>()}),
            Rule::Any(rs) => json!({"any": rs.iter().map(Rule::to_json).collect::<Vec<_>>()}),
            Rule::Not(r) => json!({"not": r.to_json()}),
            Rule::Test(t) => json!({"fact": t.fact.name(), "op": t.op.as_str(), "value": t.value}),
        }
    }

    /// Every test in the rule, depth first.
    pub fn tests(&self) -> Vec<&Test> {
        let mut out = Vec::new();
        self.collect_tests(&mut out);
        out
    }

    fn collect_tests<'a>(&'a self, out: &mut Vec<&'a Test>) {
        match self {
            Rule::All(rs) | Rule::Any(rs) => rs.iter().for_each(|r| r.collect_tests(out)),
            Rule::Not(r) => r.collect_tests(out),
            Rule::Test(t) => out.push(t),
        }
    }

    /// Whether the rule reads any fact that changes with time alone (`enrolled_at`, `last_seen_at`): such
    /// groups are re-evaluated periodically, not only when the device's facts change.
    pub fn uses_time(&self) -> bool {
        self.tests().iter().any(|t| t.fact.kind() == Kind::Time)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

fn node(v: &Value, path: &str, depth: usize, nodes: &mut usize) -> Result<Rule, RuleError> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return err(path, format!("a rule has at most {MAX_NODES} nodes"));
    }
    if depth > MAX_DEPTH {
        return err(path, format!("rules nest at most {MAX_DEPTH} deep"));
    }
    let Some(obj) = v.as_object() else {
        return err(path, "a node is an object: all, any, not, or fact/op/value");
    };
    for combinator in ["all", "any", "not"] {
        if let Some(inner) = obj.get(combinator) {
            if obj.len() != 1 {
                return err(path, format!("a {combinator:?} node has no other keys"));
            }
            let inner_path = format!("{path}.{combinator}");
            return match combinator {
                "not" => Ok(Rule::Not(Box::new(node(
                    inner,
                    &inner_path,
                    depth + 1,
                    nodes,
                )?))),
                _ => {
                    let Some(items) = inner.as_array() else {
                        return err(&inner_path, "a list of nodes");
                    };
                    let rules = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            node(item, &format!("{inner_path}[{i}]"), depth + 1, nodes)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(if combinator == "all" {
                        Rule::All(rules)
                    } else {
                        Rule::Any(rules)
                    })
                }
            };
        }
    }
    test(obj, path).map(Rule::Test)
}

fn test(obj: &Map<String, Value>, path: &str) -> Result<Test, RuleError> {
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "fact" | "op" | "value"))
    {
        return err(path, format!("unknown key {:?}", truncate(k)));
    }
    let fact = match obj.get("fact") {
        Some(Value::String(s)) => Fact::parse(s).or_else(|m| err(&format!("{path}.fact"), m))?,
        Some(_) => return err(&format!("{path}.fact"), "a string"),
        None => {
            return err(
                path,
                "a node is all, any, not, or a test with fact, op and value",
            )
        }
    };
    let op_path = format!("{path}.op");
    let op = match obj.get("op") {
        Some(Value::String(s)) => Op::parse(s).ok_or_else(|| RuleError {
            path: op_path.clone(),
            message: format!("unknown op {:?}", truncate(s)),
        })?,
        Some(_) => return err(&op_path, "a string"),
        None => return err(&op_path, "missing"),
    };
    if !Op::allowed(fact.kind()).contains(&op) {
        let ops: Vec<_> = Op::allowed(fact.kind())
            .iter()
            .map(|o| o.as_str())
            .collect();
        return err(
            &op_path,
            format!(
                "{} takes {}, not {}",
                fact.name(),
                ops.join(", "),
                op.as_str()
            ),
        );
    }
    let value_path = format!("{path}.value");
    let value = match (obj.get("value"), op) {
        (None, Op::Exists) => Value::Bool(true),
        (None, _) => return err(&value_path, "missing"),
        (Some(v), _) => v.clone(),
    };
    check_value(&fact, op, &value).or_else(|m| err(&value_path, m))?;
    Ok(Test { fact, op, value })
}

/// Whether `value` fits `op` on `fact`.
fn check_value(fact: &Fact, op: Op, value: &Value) -> Result<(), String> {
    match op {
        Op::Exists => value.as_bool().map(|_| ()).ok_or("true or false".into()),
        Op::Within | Op::OlderThan => match value.as_i64() {
            Some(n) if (1..=MAX_AGE_SECS).contains(&n) => Ok(()),
            _ => Err(format!("a number of seconds, 1 to {MAX_AGE_SECS}")),
        },
        Op::In => {
            let Some(items) = value.as_array() else {
                return Err("a list of values".into());
            };
            if items.is_empty() || items.len() > MAX_IN_VALUES {
                return Err(format!("1 to {MAX_IN_VALUES} values"));
            }
            for (i, item) in items.iter().enumerate() {
                equality_value(fact, item).map_err(|m| format!("[{i}]: {m}"))?;
            }
            Ok(())
        }
        Op::Eq | Op::Ne => equality_value(fact, value),
        Op::Prefix => match value.as_str() {
            Some(s) if !s.is_empty() => string_value(s),
            _ => Err("a non-empty string".into()),
        },
        Op::Lt | Op::Lte | Op::Gt | Op::Gte => match value {
            Value::String(s) if !s.is_empty() => string_value(s),
            Value::Number(_) if fact.kind() == Kind::Json => Ok(()),
            _ if fact.kind() == Kind::Json => Err("a number or a non-empty string".into()),
            _ => Err("a non-empty version string".into()),
        },
    }
}

/// A value `eq`, `ne` and `in` compare with: a string, or for a status item any scalar.
fn equality_value(fact: &Fact, value: &Value) -> Result<(), String> {
    match (fact.kind(), value) {
        (_, Value::String(s)) => {
            string_value(s)?;
            if *fact == Fact::Platform && !PLATFORMS.contains(&s.as_str()) {
                return Err(format!(
                    "unknown platform (one of {})",
                    PLATFORMS.join(", ")
                ));
            }
            Ok(())
        }
        (Kind::Json, Value::Number(_) | Value::Bool(_)) => Ok(()),
        (Kind::Json, _) => Err("a string, number or boolean".into()),
        _ => Err("a string".into()),
    }
}

fn string_value(s: &str) -> Result<(), String> {
    if s.len() > MAX_STRING {
        return Err(format!("strings are at most {MAX_STRING} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Rule, RuleError> {
        Rule::from_json(&v)
    }

    fn path_of(v: Value) -> String {
        parse(v).unwrap_err().path
    }

    #[test]
    fn a_nested_rule_parses_and_round_trips_through_its_canonical_json() {
        let v = json!({"all": [
            {"fact": "platform", "op": "eq", "value": "iOS"},
            {"fact": "os_version", "op": "gte", "value": "17.2"},
            {"any": [
                {"fact": "serial_number", "op": "prefix", "value": "C02"},
                {"not": {"fact": "attribute:team", "op": "exists"}}
            ]},
            {"fact": "ddm:passcode.is-compliant", "op": "eq", "value": true},
            {"fact": "last_seen_at", "op": "within", "value": 86400}
        ]});
        let r = parse(v).unwrap();
        assert!(r.uses_time());
        assert_eq!(r.tests().len(), 6);
        // `exists` without a value is stored with its default.
        assert_eq!(r.to_json()["all"][2]["any"][1]["not"]["value"], json!(true));
        assert_eq!(Rule::from_json(&r.to_json()).unwrap(), r);
        assert_eq!(Rule::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn mistakes_are_refused_naming_where_they_are() {
        let bad = [
            (json!([]), "rule"),
            (json!({"all": {}}), "rule.all"),
            (
                json!({"all": [{"fact": "colour", "op": "eq", "value": "x"}]}),
                "rule.all[0].fact",
            ),
            (
                json!({"any": [{"fact": "model", "op": "eqq", "value": "x"}]}),
                "rule.any[0].op",
            ),
            (
                json!({"fact": "model", "op": "gt", "value": "x"}),
                "rule.op",
            ),
            (
                json!({"fact": "last_seen_at", "op": "eq", "value": "x"}),
                "rule.op",
            ),
            (
                json!({"fact": "last_seen_at", "op": "within", "value": -1}),
                "rule.value",
            ),
            (
                json!({"fact": "last_seen_at", "op": "within", "value": "1d"}),
                "rule.value",
            ),
            (
                json!({"fact": "platform", "op": "eq", "value": "ios"}),
                "rule.value",
            ),
            (
                json!({"fact": "platform", "op": "in", "value": ["iOS", 3]}),
                "rule.value",
            ),
            (
                json!({"fact": "platform", "op": "in", "value": []}),
                "rule.value",
            ),
            (
                json!({"fact": "os_version", "op": "eq", "value": 17}),
                "rule.value",
            ),
            (json!({"fact": "os_version", "op": "gte"}), "rule.value"),
            (
                json!({"fact": "os_version", "op": "prefix", "value": ""}),
                "rule.value",
            ),
            (
                json!({"fact": "model", "op": "eq", "value": "x", "extra": 1}),
                "rule",
            ),
            (json!({"not": {"fact": "model"}}), "rule.not.op"),
            (json!({"all": [], "any": []}), "rule"),
            (
                json!({"fact": "ddm:no.such.item", "op": "exists"}),
                "rule.fact",
            ),
            (
                json!({"fact": "ddm:app.managed.list", "op": "exists"}),
                "rule.fact",
            ),
            (
                json!({"fact": "ddm:passcode.is-compliant", "op": "eq", "value": [1]}),
                "rule.value",
            ),
            (json!({"fact": "attribute:", "op": "exists"}), "rule.fact"),
            (
                json!({"fact": "model", "op": "eq", "value": "x".repeat(MAX_STRING + 1)}),
                "rule.value",
            ),
        ];
        for (rule, path) in bad {
            let e = parse(rule.clone()).expect_err(&rule.to_string());
            assert_eq!(e.path, path, "{rule}: {e}");
        }
    }

    #[test]
    fn depth_size_and_node_count_are_bounded() {
        let mut deep = json!({"fact": "model", "op": "exists"});
        for _ in 0..MAX_DEPTH {
            deep = json!({ "not": deep });
        }
        assert!(path_of(deep).ends_with(".not"));
        let many: Vec<Value> = (0..MAX_NODES)
            .map(|_| json!({"fact": "model", "op": "exists"}))
            .collect();
        assert_eq!(
            parse(json!({ "any": many })).unwrap_err().message,
            format!("a rule has at most {MAX_NODES} nodes")
        );
        let huge = format!(
            "{{\"fact\":\"model\",\"op\":\"eq\",\"value\":\"{}\"}}",
            "x".repeat(MAX_RULE_BYTES)
        );
        assert_eq!(Rule::parse(&huge).unwrap_err().path, "rule");
        assert_eq!(Rule::parse("{").unwrap_err().path, "rule");
    }
}
