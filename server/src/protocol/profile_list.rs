//! A ProfileList answer: the profiles a device says it has installed.

use plist::{Dictionary, Value};

/// A profile a device listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledProfile {
    pub identifier: String,
    pub uuid: String,
}

/// The profiles of an acknowledged ProfileList answer. None when the answer is not a list of items each
/// with a string `PayloadIdentifier` and `PayloadUUID`: a malformed answer says nothing of what is
/// installed (reading it as "nothing" would have profiles sent again, or thought removed).
pub fn installed_profiles(answer: &Dictionary) -> Option<Vec<InstalledProfile>> {
    let Some(Value::Array(items)) = answer.get("ProfileList") else {
        return None;
    };
    items
        .iter()
        .map(|item| {
            let d = item.as_dictionary()?;
            let text = |k: &str| d.get(k).and_then(Value::as_string).map(str::to_string);
            Some(InstalledProfile {
                identifier: text("PayloadIdentifier")?,
                uuid: text("PayloadUUID")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, uuid: &str) -> Value {
        let mut d = Dictionary::new();
        d.insert("PayloadIdentifier".into(), id.into());
        d.insert("PayloadUUID".into(), uuid.into());
        d.insert("IsManaged".into(), true.into());
        Value::Dictionary(d)
    }

    #[test]
    fn a_list_is_read_only_when_every_item_is_well_formed() {
        let mut answer = Dictionary::new();
        answer.insert(
            "ProfileList".into(),
            Value::Array(vec![item("a", "U1"), item("b", "U2")]),
        );
        let got = installed_profiles(&answer).unwrap();
        assert_eq!(
            got[1],
            InstalledProfile {
                identifier: "b".into(),
                uuid: "U2".into()
            }
        );
        answer.insert("ProfileList".into(), Value::Array(vec![]));
        assert_eq!(
            installed_profiles(&answer),
            Some(vec![]),
            "nothing installed"
        );
        answer.insert(
            "ProfileList".into(),
            Value::Array(vec![item("a", "U1"), 7.into()]),
        );
        assert_eq!(installed_profiles(&answer), None);
        answer.insert("ProfileList".into(), "no".into());
        assert_eq!(installed_profiles(&answer), None);
        assert_eq!(installed_profiles(&Dictionary::new()), None);
    }
}
