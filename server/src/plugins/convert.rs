//! Our protocol and storage types as the host's plugin events ([`super::event`]).

use super::event::{
    ChannelKind, CheckinKind, CommandStatus, DeviceFacts, Enrollment, ErrorChainItem, PlistNode,
    PlistValue,
};
use super::manifest::CheckinMessageKind;
use crate::protocol::{CheckinPayload, EnrollmentKind, EnrollmentRef, ReportStatus};
use crate::storage::enrollments;
use crate::storage::event_subject::DescribedDevice;

pub fn channel_kind(k: EnrollmentKind) -> ChannelKind {
    match k {
        EnrollmentKind::Device => ChannelKind::Device,
        EnrollmentKind::UserEnrollmentDevice => ChannelKind::UserEnrollmentDevice,
        EnrollmentKind::User => ChannelKind::User,
        EnrollmentKind::SharedIpadUser => ChannelKind::SharedIpadUser,
        EnrollmentKind::UserEnrollmentUser => ChannelKind::UserEnrollmentUser,
    }
}

pub fn enrollment(e: &EnrollmentRef) -> Enrollment {
    Enrollment {
        id: e.id.clone(),
        device_id: e.device_id.clone(),
        kind: channel_kind(e.kind),
        user_id: e.user_id.clone(),
        user_short_name: e.user_short_name.clone(),
    }
}

pub fn stored_enrollment(e: &enrollments::Enrollment) -> Enrollment {
    Enrollment {
        id: e.id.clone(),
        device_id: e.device_id.clone(),
        kind: channel_kind(EnrollmentKind::parse(&e.kind).unwrap_or(EnrollmentKind::Device)),
        user_id: e.user_id.clone(),
        user_short_name: e.user_short_name.clone(),
    }
}

pub fn device_facts(d: DescribedDevice) -> DeviceFacts {
    DeviceFacts {
        serial_number: d.serial_number,
        platform: d.platform,
        model: d.model,
        model_name: d.model_name,
        product_name: d.product_name,
        device_name: d.device_name,
        os_version: d.os_version,
        build_version: d.build_version,
    }
}

/// Facts as a message reported them (before they are stored).
pub fn facts(f: &crate::protocol::DeviceFacts, platform: Option<String>) -> DeviceFacts {
    DeviceFacts {
        serial_number: f.serial_number.clone(),
        platform,
        model: f.model.clone(),
        model_name: f.model_name.clone(),
        product_name: f.product_name.clone(),
        device_name: f.device_name.clone(),
        os_version: f.os_version.clone(),
        build_version: f.build_version.clone(),
    }
}

pub fn checkin_kind(p: &CheckinPayload) -> CheckinKind {
    match p {
        CheckinPayload::Authenticate(_) => CheckinKind::Authenticate,
        CheckinPayload::TokenUpdate(_) => CheckinKind::TokenUpdate,
        CheckinPayload::CheckOut => CheckinKind::CheckOut,
        CheckinPayload::UserAuthenticate { .. } => CheckinKind::UserAuthenticate,
        CheckinPayload::SetBootstrapToken { .. } => CheckinKind::SetBootstrapToken,
        CheckinPayload::GetBootstrapToken => CheckinKind::GetBootstrapToken,
        CheckinPayload::DeclarativeManagement { .. } => CheckinKind::DeclarativeManagement,
        CheckinPayload::GetToken { .. } => CheckinKind::GetToken,
    }
}

/// The message as a manifest's `checkins` selects it; `first_token_update` says whether a TokenUpdate is
/// its channel's first since it authenticated.
pub fn checkin_message(p: &CheckinPayload, first_token_update: bool) -> CheckinMessageKind {
    match p {
        CheckinPayload::Authenticate(_) => CheckinMessageKind::Authenticate,
        CheckinPayload::TokenUpdate(_) => CheckinMessageKind::TokenUpdate {
            first: first_token_update,
        },
        CheckinPayload::CheckOut => CheckinMessageKind::CheckOut,
        CheckinPayload::UserAuthenticate { .. } => CheckinMessageKind::UserAuthenticate,
        CheckinPayload::SetBootstrapToken { .. } => CheckinMessageKind::SetBootstrapToken,
        CheckinPayload::GetBootstrapToken => CheckinMessageKind::GetBootstrapToken,
        CheckinPayload::DeclarativeManagement { .. } => CheckinMessageKind::DeclarativeManagement,
        CheckinPayload::GetToken { .. } => CheckinMessageKind::GetToken,
    }
}

/// None for Idle, which is not a command result.
pub fn command_status(s: ReportStatus) -> Option<CommandStatus> {
    Some(match s {
        ReportStatus::Idle => return None,
        ReportStatus::Acknowledged => CommandStatus::Acknowledged,
        ReportStatus::Error => CommandStatus::Error,
        ReportStatus::CommandFormatError => CommandStatus::CommandFormatError,
        ReportStatus::NotNow => CommandStatus::NotNow,
    })
}

pub fn error_chain(items: &[crate::protocol::ErrorChainItem]) -> Vec<ErrorChainItem> {
    items
        .iter()
        .map(|i| ErrorChainItem {
            code: i.error_code,
            domain: i.error_domain.clone(),
            description: i
                .localized_description
                .clone()
                .or_else(|| i.us_english_description.clone()),
        })
        .collect()
}

/// A plist as nodes in document order, each naming its parent. Iterative, so a deeply nested document cannot
/// overflow the stack.
pub fn plist_tree(root: &plist::Value) -> Vec<PlistNode> {
    let mut out = Vec::new();
    // (value, parent index, key); children are pushed in reverse so they pop in document order.
    let mut stack: Vec<(&plist::Value, Option<u32>, Option<String>)> = vec![(root, None, None)];
    while let Some((v, parent, key)) = stack.pop() {
        let index = out.len() as u32;
        let value = match v {
            plist::Value::Dictionary(d) => {
                for (k, child) in d.iter().collect::<Vec<_>>().into_iter().rev() {
                    stack.push((child, Some(index), Some(k.clone())));
                }
                PlistValue::Dictionary
            }
            plist::Value::Array(a) => {
                for child in a.iter().rev() {
                    stack.push((child, Some(index), None));
                }
                PlistValue::Array
            }
            plist::Value::String(s) => PlistValue::String(s.clone()),
            plist::Value::Integer(i) => PlistValue::Integer(
                i.as_signed()
                    .unwrap_or_else(|| i.as_unsigned().map_or(0, |u| u as i64)),
            ),
            plist::Value::Real(f) => PlistValue::Real(*f),
            plist::Value::Boolean(b) => PlistValue::Boolean(*b),
            plist::Value::Data(d) => PlistValue::Data(d.clone()),
            plist::Value::Date(d) => PlistValue::Date(d.to_xml_format()),
            plist::Value::Uid(u) => PlistValue::Integer(u.get() as i64),
            _ => PlistValue::String(String::new()),
        };
        out.push(PlistNode { parent, key, value });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_keeps_structure_and_order() {
        let mut inner = plist::Dictionary::new();
        inner.insert("OSVersion".into(), "17.5".into());
        let mut root = plist::Dictionary::new();
        root.insert("QueryResponses".into(), plist::Value::Dictionary(inner));
        root.insert(
            "List".into(),
            plist::Value::Array(vec![1.into(), true.into()]),
        );
        let t = plist_tree(&plist::Value::Dictionary(root));
        assert_eq!(t.len(), 6);
        assert!(matches!(t[0].value, PlistValue::Dictionary));
        assert_eq!(
            (t[1].parent, t[1].key.as_deref()),
            (Some(0), Some("QueryResponses"))
        );
        assert_eq!(
            (t[2].parent, t[2].key.as_deref()),
            (Some(1), Some("OSVersion"))
        );
        assert!(matches!(&t[2].value, PlistValue::String(s) if s == "17.5"));
        assert_eq!((t[3].parent, t[3].key.as_deref()), (Some(0), Some("List")));
        assert!(matches!(t[4].value, PlistValue::Integer(1)));
        assert_eq!(t[5].parent, Some(3));
    }
}
