//! Evaluating a rule against what is known of one device. Pure: the facts and the time are given.

use super::rule::{Fact, Kind, Op, Rule, Test};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::HashMap;

/// What a rule can read of a device. Absent facts are None (or missing from the maps).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub platform: Option<String>,
    pub os_version: Option<String>,
    pub build: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub serial_number: Option<String>,
    pub device_name: Option<String>,
    /// When the device first enrolled (Unix ms).
    pub enrolled_at: i64,
    /// When the device was last seen (Unix ms).
    pub last_seen_at: i64,
    /// Attributes plugins set, by key.
    pub attributes: HashMap<String, String>,
    /// The device channel's latest DDM status item values, by name.
    pub ddm: HashMap<String, Value>,
}

/// What one test reads: a string, a JSON value, or a time.
enum Read<'a> {
    Absent,
    Str(&'a str),
    Json(&'a Value),
    Time(i64),
}

impl Facts {
    fn read(&self, fact: &Fact) -> Read<'_> {
        fn text(v: &Option<String>) -> Option<&str> {
            v.as_deref()
        }
        let found = match fact {
            Fact::Platform => text(&self.platform),
            Fact::OsVersion => text(&self.os_version),
            Fact::Build => text(&self.build),
            Fact::Model => text(&self.model),
            Fact::ModelName => text(&self.model_name),
            Fact::ProductName => text(&self.product_name),
            Fact::SerialNumber => text(&self.serial_number),
            Fact::DeviceName => text(&self.device_name),
            Fact::EnrolledAt => return Read::Time(self.enrolled_at),
            Fact::LastSeenAt => return Read::Time(self.last_seen_at),
            Fact::Attribute(k) => self.attributes.get(k).map(String::as_str),
            Fact::Ddm(n) => return self.ddm.get(n).map_or(Read::Absent, Read::Json),
        };
        found.map_or(Read::Absent, Read::Str)
    }
}

impl Rule {
    /// Whether the device with `facts` matches the rule at `now` (Unix ms).
    pub fn matches(&self, facts: &Facts, now: i64) -> bool {
        match self {
            Rule::All(rs) => rs.iter().all(|r| r.matches(facts, now)),
            Rule::Any(rs) => rs.iter().any(|r| r.matches(facts, now)),
            Rule::Not(r) => !r.matches(facts, now),
            Rule::Test(t) => t.holds(facts, now),
        }
    }
}

impl Test {
    fn holds(&self, facts: &Facts, now: i64) -> bool {
        let read = facts.read(&self.fact);
        match self.op {
            Op::Exists => !matches!(read, Read::Absent) == self.value.as_bool().unwrap_or(true),
            Op::Ne => !self.equal(&read, &self.value),
            Op::Eq => self.equal(&read, &self.value),
            Op::In => self
                .value
                .as_array()
                .is_some_and(|vs| vs.iter().any(|v| self.equal(&read, v))),
            Op::Prefix => match (&read, self.value.as_str()) {
                (Read::Str(s), Some(p)) => s.starts_with(p),
                (Read::Json(Value::String(s)), Some(p)) => s.starts_with(p),
                _ => false,
            },
            Op::Lt => self.order(&read) == Some(Ordering::Less),
            Op::Lte => matches!(self.order(&read), Some(Ordering::Less | Ordering::Equal)),
            Op::Gt => self.order(&read) == Some(Ordering::Greater),
            Op::Gte => matches!(self.order(&read), Some(Ordering::Greater | Ordering::Equal)),
            Op::Within | Op::OlderThan => {
                let (Read::Time(t), Some(secs)) = (read, self.value.as_i64()) else {
                    return false;
                };
                let age = now.saturating_sub(t);
                let limit = secs.saturating_mul(1000);
                if self.op == Op::Within {
                    age <= limit
                } else {
                    age > limit
                }
            }
        }
    }

    /// `eq`: versions as versions, strings exactly, status item values as JSON (numbers by value).
    fn equal(&self, read: &Read<'_>, want: &Value) -> bool {
        match (read, want) {
            (Read::Str(s), Value::String(w)) if self.fact.kind() == Kind::Version => {
                compare_versions(s, w) == Ordering::Equal
            }
            (Read::Str(s), Value::String(w)) => s == w,
            (Read::Json(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Read::Json(v), w) => *v == w,
            _ => false,
        }
    }

    /// The fact's order against the value: versions for strings, numbers for numbers; None when they do
    /// not compare (absent, or a number against a string).
    fn order(&self, read: &Read<'_>) -> Option<Ordering> {
        match (read, &self.value) {
            (Read::Str(s), Value::String(w)) => Some(compare_versions(s, w)),
            (Read::Json(Value::String(s)), Value::String(w)) => Some(compare_versions(s, w)),
            (Read::Json(Value::Number(a)), Value::Number(b)) => {
                a.as_f64()?.partial_cmp(&b.as_f64()?)
            }
            _ => None,
        }
    }
}

/// Versions compared component by component (split at `.`), a missing component counting as `0`; within a
/// component, runs of digits compare as numbers and other runs as text, so `17.10` > `17.9`,
/// `17.2` = `17.2.0` and build `21C62` > `21C5`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut xs, mut ys) = (a.split('.'), b.split('.'));
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (x, y) => match compare_component(x.unwrap_or("0"), y.unwrap_or("0")) {
                Ordering::Equal => continue,
                o => return o,
            },
        }
    }
}

/// An empty component (`17..1`) counts as `0`, as a missing one does.
fn compare_component(a: &str, b: &str) -> Ordering {
    fn zero(s: &str) -> &str {
        if s.is_empty() {
            "0"
        } else {
            s
        }
    }
    let (a, b) = (zero(a), zero(b));
    let (mut xs, mut ys) = (runs(a), runs(b));
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match compare_run(x, y) {
                Ordering::Equal => continue,
                o => return o,
            },
        }
    }
}

/// Runs of digits and runs of anything else.
fn runs(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let digit = first.is_ascii_digit();
        let end = rest
            .find(|c: char| c.is_ascii_digit() != digit)
            .unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some(run)
    })
}

/// Digit runs as numbers of any length (leading zeros dropped, then longer is larger); digits before text.
fn compare_run(x: &str, y: &str) -> Ordering {
    let digits = |s: &str| s.starts_with(|c: char| c.is_ascii_digit());
    match (digits(x), digits(y)) {
        (true, true) => {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v).unwrap()
    }

    fn phone() -> Facts {
        Facts {
            platform: Some("iOS".into()),
            os_version: Some("17.10".into()),
            build: Some("21C62".into()),
            model: Some("MQ9X3LL/A".into()),
            product_name: Some("iPhone15,2".into()),
            serial_number: Some("F2LX1234".into()),
            enrolled_at: 1_000_000,
            last_seen_at: 5_000_000,
            attributes: [("team".to_string(), "sales".to_string())].into(),
            ddm: [
                ("passcode.is-compliant".to_string(), json!(true)),
                (
                    "device.operating-system.version".to_string(),
                    json!("17.10"),
                ),
                ("test.integer-value".to_string(), json!(42)),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn versions_compare_by_component_and_by_number() {
        use Ordering::*;
        for (a, b, o) in [
            ("17.10", "17.9", Greater),
            ("17.2", "17.2.0", Equal),
            ("17.2", "17.2.1", Less),
            ("9", "10", Less),
            ("010", "10", Equal),
            ("21C62", "21C5", Greater),
            ("21C62", "21D1", Less),
            ("22A5316k", "22A5316", Greater),
            ("99999999999999999999999", "1", Greater),
            ("", "0", Equal),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn each_op_holds_as_documented() {
        let f = phone();
        let now = 5_000_000;
        let holds = |v: Value| rule(v).matches(&f, now);
        assert!(holds(
            json!({"fact": "os_version", "op": "gt", "value": "17.9"})
        ));
        assert!(holds(
            json!({"fact": "os_version", "op": "eq", "value": "17.10.0"})
        ));
        assert!(!holds(
            json!({"fact": "os_version", "op": "lt", "value": "17.10"})
        ));
        assert!(holds(
            json!({"fact": "os_version", "op": "lte", "value": "17.10"})
        ));
        assert!(holds(
            json!({"fact": "build", "op": "gte", "value": "21C5"})
        ));
        assert!(holds(
            json!({"fact": "serial_number", "op": "prefix", "value": "F2L"})
        ));
        assert!(!holds(
            json!({"fact": "serial_number", "op": "prefix", "value": "C02"})
        ));
        assert!(holds(
            json!({"fact": "platform", "op": "in", "value": ["macOS", "iOS"]})
        ));
        assert!(!holds(
            json!({"fact": "platform", "op": "eq", "value": "iPadOS"})
        ));
        assert!(holds(
            json!({"fact": "attribute:team", "op": "eq", "value": "sales"})
        ));
        assert!(!holds(json!({"fact": "attribute:site", "op": "exists"})));
        assert!(holds(
            json!({"fact": "attribute:site", "op": "exists", "value": false})
        ));
        // ne is `not eq`, so an absent fact is "not equal".
        assert!(holds(
            json!({"fact": "attribute:site", "op": "ne", "value": "x"})
        ));
        assert!(!holds(
            json!({"fact": "attribute:site", "op": "eq", "value": "x"})
        ));
        assert!(!holds(
            json!({"fact": "device_name", "op": "prefix", "value": "x"})
        ));
        assert!(holds(
            json!({"fact": "ddm:passcode.is-compliant", "op": "eq", "value": true})
        ));
        assert!(holds(
            json!({"fact": "ddm:device.operating-system.version", "op": "gte", "value": "17.9"})
        ));
        assert!(holds(
            json!({"fact": "ddm:test.integer-value", "op": "gt", "value": 41.5})
        ));
        assert!(holds(
            json!({"fact": "ddm:test.integer-value", "op": "eq", "value": 42.0})
        ));
        // A number never orders against a string.
        assert!(!holds(
            json!({"fact": "ddm:test.integer-value", "op": "gt", "value": "1"})
        ));
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let f = phone(); // enrolled at 1,000 s, last seen at 5,000 s
        let at = |now: i64, v: Value| rule(v).matches(&f, now);
        let seen_within_hour = json!({"fact": "last_seen_at", "op": "within", "value": 3600});
        assert!(at(5_000_000, seen_within_hour.clone()));
        assert!(
            at(5_000_000 + 3_600_000, seen_within_hour.clone()),
            "inclusive"
        );
        assert!(!at(5_000_000 + 3_600_001, seen_within_hour));
        let enrolled_long_ago = json!({"fact": "enrolled_at", "op": "older_than", "value": 3600});
        assert!(!at(1_000_000 + 3_600_000, enrolled_long_ago.clone()));
        assert!(at(1_000_000 + 3_600_001, enrolled_long_ago));
    }

    #[test]
    fn all_any_and_not_nest() {
        let f = phone();
        let r = rule(json!({"all": [
            {"fact": "platform", "op": "eq", "value": "iOS"},
            {"any": [
                {"fact": "attribute:team", "op": "eq", "value": "support"},
                {"not": {"fact": "os_version", "op": "lt", "value": "17"}}
            ]}
        ]}));
        assert!(r.matches(&f, 0));
        let mut old = f.clone();
        old.os_version = Some("16.7".into());
        assert!(!r.matches(&old, 0));
        old.attributes.insert("team".into(), "support".into());
        assert!(r.matches(&old, 0));
        assert!(rule(json!({"all": []})).matches(&f, 0), "empty all");
        assert!(!rule(json!({"any": []})).matches(&f, 0), "empty any");
    }
}
