//! [`Plist`]: a property-list value rebuilt from the WIT `plist-tree`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::types::{PlistNode, PlistValue};

/// How deeply a tree may nest (the root is depth 0). Apple's reports nest a handful of levels; the
/// limit keeps a hostile tree from exhausting the plugin's stack.
pub const MAX_PLIST_DEPTH: usize = 128;

/// A property-list value: what a device reported, as a tree.
///
/// Build it from an event with [`CommandResultEvent::report`](crate::types::CommandResultEvent::report)
/// or from nodes with [`Plist::from_tree`]; read it with [`get`](Plist::get),
/// [`path`](Plist::path) and the `as_*` accessors:
///
/// ```
/// # use mdm_plugin_sdk::Plist;
/// # let report = Plist::from_json(&mdm_plugin_sdk::serde_json::json!(
/// #     {"QueryResponses": {"OSVersion": "17.5"}})).unwrap();
/// let os = report.path(&["QueryResponses", "OSVersion"]).and_then(Plist::as_str);
/// assert_eq!(os, Some("17.5"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Plist {
    /// `<dict>`. Keys are sorted; if a key repeats, the last one wins.
    Dictionary(BTreeMap<String, Plist>),
    /// `<array>`, in document order.
    Array(Vec<Plist>),
    /// `<string>`.
    String(String),
    /// `<integer>`.
    Integer(i64),
    /// `<real>`.
    Real(f64),
    /// `<true/>` or `<false/>`.
    Boolean(bool),
    /// `<data>`: raw bytes.
    Data(Vec<u8>),
    /// `<date>`, as RFC 3339 text.
    Date(String),
}

/// Why a `plist-tree` could not be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlistError {
    /// The tree has no nodes.
    Empty,
    /// Node 0 (the root) names a parent.
    RootHasParent,
    /// A node other than the root has no parent.
    MissingParent {
        /// The node's index.
        index: usize,
    },
    /// A node's parent does not come before it in the list (or is out of range).
    BadParent {
        /// The node's index.
        index: usize,
        /// The parent index it names.
        parent: u32,
    },
    /// A node's parent is neither a dictionary nor an array.
    ParentNotContainer {
        /// The node's index.
        index: usize,
        /// The parent index it names.
        parent: usize,
    },
    /// A member of a dictionary has no key.
    MissingKey {
        /// The node's index.
        index: usize,
    },
    /// The tree nests deeper than [`MAX_PLIST_DEPTH`].
    TooDeep {
        /// The first node found too deep.
        index: usize,
    },
    /// A JSON value has no property-list equivalent (`null`).
    NotRepresentable(String),
}

impl fmt::Display for PlistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlistError::Empty => f.write_str("the tree has no nodes"),
            PlistError::RootHasParent => f.write_str("node 0 (the root) has a parent"),
            PlistError::MissingParent { index } => write!(f, "node {index} has no parent"),
            PlistError::BadParent { index, parent } => {
                write!(
                    f,
                    "node {index} names parent {parent}, which does not precede it"
                )
            }
            PlistError::ParentNotContainer { index, parent } => {
                write!(
                    f,
                    "node {index} names parent {parent}, which is not a dictionary or array"
                )
            }
            PlistError::MissingKey { index } => {
                write!(f, "node {index} is a dictionary member without a key")
            }
            PlistError::TooDeep { index } => {
                write!(f, "node {index} nests deeper than {MAX_PLIST_DEPTH} levels")
            }
            PlistError::NotRepresentable(what) => write!(f, "not representable: {what}"),
        }
    }
}

impl std::error::Error for PlistError {}

enum ContainerKind {
    Dictionary,
    Array,
    Leaf,
}

fn kind_of(value: &PlistValue) -> ContainerKind {
    match value {
        PlistValue::Dictionary => ContainerKind::Dictionary,
        PlistValue::Array => ContainerKind::Array,
        _ => ContainerKind::Leaf,
    }
}

impl Plist {
    /// Rebuilds a value from the WIT's flat form: nodes in document order, node 0 the root, each
    /// other node naming its enclosing dictionary or array by index.
    ///
    /// A malformed tree (no nodes, a parent that does not precede its child, a parent that is not a
    /// container, a dictionary member without a key, nesting deeper than [`MAX_PLIST_DEPTH`]) is an
    /// error, never a panic. Keys on array members are ignored.
    pub fn from_tree(nodes: &[PlistNode]) -> Result<Plist, PlistError> {
        let root = nodes.first().ok_or(PlistError::Empty)?;
        if root.parent.is_some() {
            return Err(PlistError::RootHasParent);
        }

        // Check the structure first, so that building below cannot fail half-way.
        let mut depth = vec![0usize; nodes.len()];
        for (index, node) in nodes.iter().enumerate().skip(1) {
            let parent = node.parent.ok_or(PlistError::MissingParent { index })?;
            let p = usize::try_from(parent)
                .ok()
                .filter(|&p| p < index)
                .ok_or(PlistError::BadParent { index, parent })?;
            match kind_of(&nodes[p].value) {
                ContainerKind::Leaf => {
                    return Err(PlistError::ParentNotContainer { index, parent: p })
                }
                ContainerKind::Dictionary if node.key.is_none() => {
                    return Err(PlistError::MissingKey { index })
                }
                _ => {}
            }
            depth[index] = depth[p] + 1;
            if depth[index] > MAX_PLIST_DEPTH {
                return Err(PlistError::TooDeep { index });
            }
        }

        // Every child comes after its parent, so walking backwards finishes each node before it
        // is moved into its parent. Array members arrive last-first and are reversed once their
        // array is complete.
        let mut built: Vec<Option<Plist>> = nodes.iter().map(|n| Some(leaf(&n.value))).collect();
        for index in (1..nodes.len()).rev() {
            let mut value = built[index].take().ok_or(PlistError::Empty)?;
            if let Plist::Array(items) = &mut value {
                items.reverse();
            }
            let p = nodes[index].parent.unwrap_or_default() as usize;
            match built[p].as_mut() {
                Some(Plist::Dictionary(map)) => {
                    let key = nodes[index].key.clone().unwrap_or_default();
                    // Walking backwards, the first insert is the last occurrence: it wins.
                    map.entry(key).or_insert(value);
                }
                Some(Plist::Array(items)) => items.push(value),
                _ => return Err(PlistError::ParentNotContainer { index, parent: p }),
            }
        }
        let mut root = built[0].take().ok_or(PlistError::Empty)?;
        if let Plist::Array(items) = &mut root {
            items.reverse();
        }
        Ok(root)
    }

    /// The flat WIT form of this value (the inverse of [`from_tree`](Plist::from_tree)): nodes in
    /// document order, dictionaries in key order. Handy for building test events.
    pub fn to_tree(&self) -> Vec<PlistNode> {
        let mut out = Vec::new();
        // (value, parent index, key); children are pushed in reverse so they pop in order.
        let mut stack: Vec<(&Plist, Option<u32>, Option<&str>)> = vec![(self, None, None)];
        while let Some((value, parent, key)) = stack.pop() {
            let index = out.len() as u32;
            out.push(PlistNode {
                parent,
                key: key.map(str::to_owned),
                value: match value {
                    Plist::Dictionary(_) => PlistValue::Dictionary,
                    Plist::Array(_) => PlistValue::Array,
                    Plist::String(s) => PlistValue::String(s.clone()),
                    Plist::Integer(i) => PlistValue::Integer(*i),
                    Plist::Real(r) => PlistValue::Real(*r),
                    Plist::Boolean(b) => PlistValue::Boolean(*b),
                    Plist::Data(d) => PlistValue::Data(d.clone()),
                    Plist::Date(d) => PlistValue::Date(d.clone()),
                },
            });
            match value {
                Plist::Dictionary(map) => {
                    for (k, v) in map.iter().rev() {
                        stack.push((v, Some(index), Some(k)));
                    }
                }
                Plist::Array(items) => {
                    for v in items.iter().rev() {
                        stack.push((v, Some(index), None));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Converts JSON to a property list: objects to dictionaries, integers to `Integer`, other
    /// numbers to `Real`. `null` has no equivalent and is an error. Handy for building test events.
    pub fn from_json(value: &Value) -> Result<Plist, PlistError> {
        fn convert(value: &Value, depth: usize) -> Result<Plist, PlistError> {
            if depth > MAX_PLIST_DEPTH {
                return Err(PlistError::NotRepresentable(format!(
                    "JSON nested deeper than {MAX_PLIST_DEPTH} levels"
                )));
            }
            Ok(match value {
                Value::Null => return Err(PlistError::NotRepresentable("null".into())),
                Value::Bool(b) => Plist::Boolean(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => Plist::Integer(i),
                    None => Plist::Real(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => Plist::String(s.clone()),
                Value::Array(items) => Plist::Array(
                    items
                        .iter()
                        .map(|v| convert(v, depth + 1))
                        .collect::<Result<_, _>>()?,
                ),
                Value::Object(map) => Plist::Dictionary(
                    map.iter()
                        .map(|(k, v)| Ok((k.clone(), convert(v, depth + 1)?)))
                        .collect::<Result<_, PlistError>>()?,
                ),
            })
        }
        convert(value, 0)
    }

    /// This value as JSON, e.g. for a webhook payload: data becomes standard base64 text, dates
    /// stay RFC 3339 text, and non-finite reals become `null`.
    pub fn to_json(&self) -> Value {
        match self {
            Plist::Dictionary(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Plist::Array(items) => Value::Array(items.iter().map(Plist::to_json).collect()),
            Plist::String(s) | Plist::Date(s) => Value::String(s.clone()),
            Plist::Integer(i) => Value::from(*i),
            Plist::Real(r) => serde_json::Number::from_f64(*r).map_or(Value::Null, Value::Number),
            Plist::Boolean(b) => Value::Bool(*b),
            Plist::Data(d) => Value::String(crate::b64::encode(d)),
        }
    }

    /// The member `key` of a dictionary (`None` for other values or a missing key).
    pub fn get(&self, key: &str) -> Option<&Plist> {
        self.as_dict()?.get(key)
    }

    /// The item at `index` of an array.
    pub fn get_index(&self, index: usize) -> Option<&Plist> {
        self.as_array()?.get(index)
    }

    /// Follows a path of dictionary keys (and, into arrays, decimal indices):
    /// `report.path(&["QueryResponses", "OSVersion"])`.
    pub fn path(&self, segments: &[&str]) -> Option<&Plist> {
        segments
            .iter()
            .try_fold(self, |value, segment| match value {
                Plist::Dictionary(map) => map.get(*segment),
                Plist::Array(items) => items.get(segment.parse::<usize>().ok()?),
                _ => None,
            })
    }

    /// The text of a `String`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Plist::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a `Boolean`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Plist::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The value of an `Integer`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Plist::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The value of a `Real`, or of an `Integer` as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Plist::Real(r) => Some(*r),
            Plist::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The bytes of a `Data`.
    pub fn as_data(&self) -> Option<&[u8]> {
        match self {
            Plist::Data(d) => Some(d),
            _ => None,
        }
    }

    /// The RFC 3339 text of a `Date`.
    pub fn as_date(&self) -> Option<&str> {
        match self {
            Plist::Date(d) => Some(d),
            _ => None,
        }
    }

    /// The items of an `Array`.
    pub fn as_array(&self) -> Option<&[Plist]> {
        match self {
            Plist::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The members of a `Dictionary`.
    pub fn as_dict(&self) -> Option<&BTreeMap<String, Plist>> {
        match self {
            Plist::Dictionary(map) => Some(map),
            _ => None,
        }
    }

    /// A scalar as display text: strings and dates as they are, numbers in decimal, booleans as
    /// `true`/`false`. `None` for dictionaries, arrays and data.
    pub fn to_scalar_string(&self) -> Option<String> {
        match self {
            Plist::String(s) | Plist::Date(s) => Some(s.clone()),
            Plist::Integer(i) => Some(i.to_string()),
            Plist::Real(r) => Some(r.to_string()),
            Plist::Boolean(b) => Some(b.to_string()),
            Plist::Dictionary(_) | Plist::Array(_) | Plist::Data(_) => None,
        }
    }
}

fn leaf(value: &PlistValue) -> Plist {
    match value {
        PlistValue::Dictionary => Plist::Dictionary(BTreeMap::new()),
        PlistValue::Array => Plist::Array(Vec::new()),
        PlistValue::String(s) => Plist::String(s.clone()),
        PlistValue::Integer(i) => Plist::Integer(*i),
        PlistValue::Real(r) => Plist::Real(*r),
        PlistValue::Boolean(b) => Plist::Boolean(*b),
        PlistValue::Data(d) => Plist::Data(d.clone()),
        PlistValue::Date(d) => Plist::Date(d.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(parent: Option<u32>, key: Option<&str>, value: PlistValue) -> PlistNode {
        PlistNode {
            parent,
            key: key.map(str::to_owned),
            value,
        }
    }

    /// A DeviceInformation report as the host sends it, in document order.
    fn device_information_tree() -> Vec<PlistNode> {
        vec![
            node(None, None, PlistValue::Dictionary),
            node(
                Some(0),
                Some("CommandUUID"),
                PlistValue::String("c-1".into()),
            ),
            node(Some(0), Some("QueryResponses"), PlistValue::Dictionary),
            node(
                Some(2),
                Some("OSVersion"),
                PlistValue::String("17.5".into()),
            ),
            node(Some(2), Some("BatteryLevel"), PlistValue::Real(0.73)),
            node(Some(2), Some("IsSupervised"), PlistValue::Boolean(true)),
            node(Some(2), Some("DeviceCapacity"), PlistValue::Integer(128)),
            node(Some(2), Some("ServiceSubscriptions"), PlistValue::Array),
            node(Some(7), None, PlistValue::Dictionary),
            node(
                Some(8),
                Some("Slot"),
                PlistValue::String("CTSubscriptionSlotOne".into()),
            ),
            node(Some(7), None, PlistValue::Dictionary),
            node(
                Some(10),
                Some("Slot"),
                PlistValue::String("CTSubscriptionSlotTwo".into()),
            ),
            node(
                Some(0),
                Some("Status"),
                PlistValue::String("Acknowledged".into()),
            ),
            node(Some(0), Some("UDID"), PlistValue::String("UDID-1".into())),
            node(Some(0), Some("Token"), PlistValue::Data(vec![1, 2, 3])),
            node(
                Some(0),
                Some("When"),
                PlistValue::Date("2024-05-01T10:00:00Z".into()),
            ),
        ]
    }

    #[test]
    fn rebuilds_a_report() {
        let report = Plist::from_tree(&device_information_tree()).unwrap();
        assert_eq!(
            report.get("Status").and_then(Plist::as_str),
            Some("Acknowledged")
        );
        assert_eq!(
            report
                .path(&["QueryResponses", "OSVersion"])
                .and_then(Plist::as_str),
            Some("17.5")
        );
        assert_eq!(
            report
                .path(&["QueryResponses", "BatteryLevel"])
                .and_then(Plist::as_f64),
            Some(0.73)
        );
        assert_eq!(
            report
                .path(&["QueryResponses", "IsSupervised"])
                .and_then(Plist::as_bool),
            Some(true)
        );
        assert_eq!(
            report
                .path(&["QueryResponses", "DeviceCapacity"])
                .and_then(Plist::as_i64),
            Some(128)
        );
        // Arrays keep document order; path() indexes into them.
        assert_eq!(
            report
                .path(&["QueryResponses", "ServiceSubscriptions", "1", "Slot"])
                .and_then(Plist::as_str),
            Some("CTSubscriptionSlotTwo")
        );
        assert_eq!(
            report
                .path(&["QueryResponses", "ServiceSubscriptions"])
                .and_then(Plist::as_array)
                .map(<[Plist]>::len),
            Some(2)
        );
        assert_eq!(
            report.get("Token").and_then(Plist::as_data),
            Some(&[1u8, 2, 3][..])
        );
        assert_eq!(
            report.get("When").and_then(Plist::as_date),
            Some("2024-05-01T10:00:00Z")
        );
        assert_eq!(report.path(&["QueryResponses", "Nope"]), None);
        assert_eq!(report.path(&["Status", "deeper"]), None);
        assert_eq!(report.path(&[]), Some(&report));
    }

    #[test]
    fn round_trips_through_the_flat_form() {
        let report = Plist::from_tree(&device_information_tree()).unwrap();
        let again = Plist::from_tree(&report.to_tree()).unwrap();
        assert_eq!(again, report);
        // A root array and scalars at the root work too.
        for value in [
            Plist::Array(vec![
                Plist::Integer(1),
                Plist::Array(vec![]),
                Plist::Integer(3),
            ]),
            Plist::String("alone".into()),
            Plist::Dictionary(BTreeMap::new()),
        ] {
            assert_eq!(Plist::from_tree(&value.to_tree()).unwrap(), value);
        }
    }

    #[test]
    fn to_json_encodes_data_as_base64() {
        let report = Plist::from_tree(&device_information_tree()).unwrap();
        let json = report.to_json();
        assert_eq!(json["Token"], json!("AQID"));
        assert_eq!(json["QueryResponses"]["BatteryLevel"], json!(0.73));
        assert_eq!(
            json["QueryResponses"]["ServiceSubscriptions"][0]["Slot"],
            json!("CTSubscriptionSlotOne")
        );
        assert_eq!(json["When"], json!("2024-05-01T10:00:00Z"));
        assert_eq!(Plist::Real(f64::NAN).to_json(), Value::Null);
    }

    #[test]
    fn from_json_builds_values() {
        let value = Plist::from_json(&json!({"a": [1, 2.5, true, "x"], "b": {}})).unwrap();
        assert_eq!(
            value.get("a"),
            Some(&Plist::Array(vec![
                Plist::Integer(1),
                Plist::Real(2.5),
                Plist::Boolean(true),
                Plist::String("x".into())
            ]))
        );
        assert_eq!(
            Plist::from_json(&json!({"a": null})),
            Err(PlistError::NotRepresentable("null".into()))
        );
    }

    #[test]
    fn duplicate_keys_keep_the_last() {
        let tree = vec![
            node(None, None, PlistValue::Dictionary),
            node(Some(0), Some("k"), PlistValue::Integer(1)),
            node(Some(0), Some("k"), PlistValue::Integer(2)),
        ];
        assert_eq!(
            Plist::from_tree(&tree).unwrap().get("k"),
            Some(&Plist::Integer(2))
        );
    }

    #[test]
    fn array_members_ignore_keys() {
        let tree = vec![
            node(None, None, PlistValue::Array),
            node(Some(0), Some("ignored"), PlistValue::Integer(1)),
        ];
        assert_eq!(
            Plist::from_tree(&tree).unwrap(),
            Plist::Array(vec![Plist::Integer(1)])
        );
    }

    #[test]
    fn malformed_trees_are_errors_not_panics() {
        let dict = || node(None, None, PlistValue::Dictionary);
        let cases: Vec<(Vec<PlistNode>, PlistError)> = vec![
            (vec![], PlistError::Empty),
            (
                vec![node(Some(0), None, PlistValue::Dictionary)],
                PlistError::RootHasParent,
            ),
            (
                vec![dict(), node(None, Some("k"), PlistValue::Integer(1))],
                PlistError::MissingParent { index: 1 },
            ),
            (
                vec![dict(), node(Some(7), Some("k"), PlistValue::Integer(1))],
                PlistError::BadParent {
                    index: 1,
                    parent: 7,
                },
            ),
            (
                vec![dict(), node(Some(1), Some("k"), PlistValue::Dictionary)],
                PlistError::BadParent {
                    index: 1,
                    parent: 1,
                },
            ),
            (
                vec![
                    dict(),
                    node(Some(2), Some("a"), PlistValue::Integer(1)),
                    node(Some(0), Some("b"), PlistValue::Dictionary),
                ],
                PlistError::BadParent {
                    index: 1,
                    parent: 2,
                },
            ),
            (
                vec![
                    dict(),
                    node(Some(0), Some("s"), PlistValue::String("x".into())),
                    node(Some(1), Some("k"), PlistValue::Integer(1)),
                ],
                PlistError::ParentNotContainer {
                    index: 2,
                    parent: 1,
                },
            ),
            (
                vec![dict(), node(Some(0), None, PlistValue::Integer(1))],
                PlistError::MissingKey { index: 1 },
            ),
            (
                vec![
                    dict(),
                    node(Some(u32::MAX), Some("k"), PlistValue::Integer(1)),
                ],
                PlistError::BadParent {
                    index: 1,
                    parent: u32::MAX,
                },
            ),
        ];
        for (tree, expected) in cases {
            assert_eq!(Plist::from_tree(&tree), Err(expected));
        }
    }

    #[test]
    fn deep_trees_are_refused() {
        let mut tree = vec![node(None, None, PlistValue::Array)];
        for i in 0..(MAX_PLIST_DEPTH as u32 + 5) {
            tree.push(node(Some(i), None, PlistValue::Array));
        }
        assert_eq!(
            Plist::from_tree(&tree),
            Err(PlistError::TooDeep {
                index: MAX_PLIST_DEPTH + 1
            })
        );
        tree.truncate(MAX_PLIST_DEPTH + 1);
        assert!(Plist::from_tree(&tree).is_ok());
    }

    #[test]
    fn scalar_strings() {
        assert_eq!(Plist::Integer(5).to_scalar_string().as_deref(), Some("5"));
        assert_eq!(Plist::Real(0.5).to_scalar_string().as_deref(), Some("0.5"));
        assert_eq!(
            Plist::Boolean(false).to_scalar_string().as_deref(),
            Some("false")
        );
        assert_eq!(Plist::Data(vec![1]).to_scalar_string(), None);
    }
}
