//! `mdm:plugin@0.2` (`wit/v0.2/`): the generated bindings, the host's events converted to their WIT form
//! (once per call, leaving out what the plugin may not see) and the plugin's answers converted back. 0.3's
//! `types` interface is this one's, so its bindings reuse these types and conversions.

wasmtime::component::bindgen!({
    path: "../wit/v0.2",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq],
});

use crate::plugins::event as host;
use crate::plugins::host::HostState;
use crate::plugins::manifest::Hook;
use crate::plugins::runtime::{HookInput, HookOutput};
use mdm::plugin::types as wit;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::Store;

/// The hooks a 0.2 component exports: all but the rollout ones (0.3).
pub const HOOKS: &[Hook] = &[
    Hook::DecideEnrollment,
    Hook::OnCheckin,
    Hook::OnCommandResult,
    Hook::OnSchedule,
    Hook::OnDdmStatus,
    Hook::ProvideToken,
];

/// The imports every component of this version may use whatever its grants: the `types` interface.
/// Each capability registers its own interface.
pub fn add_types_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl wit::Host for HostState {}

/// Instantiate and call the hook `input` names. `raw`: whether the plugin may see exact payloads.
pub async fn call(
    pre: &PluginPre<HostState>,
    store: &mut Store<HostState>,
    input: &HookInput,
    raw: bool,
) -> wasmtime::Result<Result<HookOutput, String>> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let hooks = instance.mdm_plugin_hooks();
    Ok(match input {
        HookInput::Enrollment(e) => hooks
            .call_decide_enrollment(&mut *store, &enrollment_request(e, raw))
            .await?
            .map(|d| HookOutput::Decision(d.into())),
        HookInput::Checkin(e) => hooks
            .call_on_checkin(&mut *store, &checkin_event(e, raw))
            .await?
            .map(actions),
        HookInput::CommandResult(e) => hooks
            .call_on_command_result(&mut *store, &command_result_event(e, raw))
            .await?
            .map(actions),
        HookInput::Schedule(e) => hooks
            .call_on_schedule(&mut *store, &schedule_event(e))
            .await?
            .map(actions),
        HookInput::ValidateConfig(c) => hooks
            .call_validate_config(&mut *store, c)
            .await?
            .map(|()| HookOutput::Valid),
        HookInput::DdmStatus(e) => hooks
            .call_on_ddm_status(&mut *store, &ddm_status_event(e))
            .await?
            .map(actions),
        HookInput::Token(r) => hooks
            .call_provide_token(&mut *store, &token_request(r))
            .await?
            .map(HookOutput::Token),
        // The upload check refuses a 0.2 manifest naming these hooks (`HOOKS`).
        HookInput::Promotion(_) | HookInput::Rollout(_) => {
            return Err(wasmtime::Error::msg(format!(
                "mdm:plugin@0.2 has no hook {}",
                input.hook_name()
            )))
        }
    })
}

pub(super) fn actions(a: Vec<wit::Action>) -> HookOutput {
    HookOutput::Actions(a.into_iter().map(host::Action::from).collect())
}

fn raw_if(raw: &Option<Vec<u8>>, granted: bool) -> Option<Vec<u8>> {
    if granted {
        raw.clone()
    } else {
        None
    }
}

pub fn checkin_event(e: &host::CheckinEvent, raw: bool) -> wit::CheckinEvent {
    wit::CheckinEvent {
        event_id: e.event_id.clone(),
        kind: e.kind.into(),
        enrollment: e.enrollment.clone().into(),
        device: e.device.clone().into(),
        token_update_count: e.token_update_count,
        awaiting_configuration: e.awaiting_configuration,
        raw: raw_if(&e.raw, raw),
    }
}

pub fn command_result_event(e: &host::CommandResultEvent, raw: bool) -> wit::CommandResultEvent {
    wit::CommandResultEvent {
        event_id: e.event_id.clone(),
        enrollment: e.enrollment.clone().into(),
        device: e.device.clone().into(),
        command_uuid: e.command_uuid.clone(),
        request_type: e.request_type.clone(),
        status: e.status.into(),
        error_chain: e.error_chain.iter().cloned().map(Into::into).collect(),
        report: e.report.iter().cloned().map(Into::into).collect(),
        raw: raw_if(&e.raw, raw),
        retry_of: e.retry_of.clone(),
    }
}

pub fn enrollment_request(e: &host::EnrollmentRequest, raw: bool) -> wit::EnrollmentRequest {
    wit::EnrollmentRequest {
        event_id: e.event_id.clone(),
        enrollment: e.enrollment.clone().into(),
        device: e.device.clone().into(),
        identity_fingerprint: e.identity_fingerprint.clone(),
        raw: raw_if(&e.raw, raw),
    }
}

pub fn schedule_event(e: &host::ScheduleEvent) -> wit::ScheduleEvent {
    wit::ScheduleEvent {
        event_id: e.event_id.clone(),
        name: e.name.clone(),
    }
}

pub fn ddm_status_event(e: &host::DdmStatusEvent) -> wit::DdmStatusEvent {
    wit::DdmStatusEvent {
        event_id: e.event_id.clone(),
        enrollment: e.enrollment.clone().into(),
        declarations: e.declarations.iter().cloned().map(Into::into).collect(),
        items: e.items.iter().cloned().map(Into::into).collect(),
    }
}

pub fn token_request(r: &host::TokenRequest) -> wit::TokenRequest {
    wit::TokenRequest {
        event_id: r.event_id.clone(),
        enrollment: r.enrollment.clone().into(),
        token_service_type: r.token_service_type.clone(),
    }
}

impl From<host::DeclarationState> for wit::DeclarationState {
    fn from(s: host::DeclarationState) -> Self {
        Self {
            active: s.active,
            valid: s.valid,
            server_token: s.server_token,
            reasons_json: s.reasons_json,
        }
    }
}

impl From<host::DeclarationChange> for wit::DeclarationChange {
    fn from(c: host::DeclarationChange) -> Self {
        Self {
            identifier: c.identifier,
            category: c.category,
            old: c.old.map(Into::into),
            new: c.new.into(),
        }
    }
}

impl From<host::StatusItemChange> for wit::StatusItemChange {
    fn from(i: host::StatusItemChange) -> Self {
        Self {
            name: i.name,
            old_json: i.old_json,
            new_json: i.new_json,
        }
    }
}

impl From<host::ChannelKind> for wit::ChannelKind {
    fn from(k: host::ChannelKind) -> Self {
        use host::ChannelKind as H;
        match k {
            H::Device => Self::Device,
            H::UserEnrollmentDevice => Self::UserEnrollmentDevice,
            H::User => Self::User,
            H::SharedIpadUser => Self::SharedIpadUser,
            H::UserEnrollmentUser => Self::UserEnrollmentUser,
        }
    }
}

impl From<host::Enrollment> for wit::Enrollment {
    fn from(e: host::Enrollment) -> Self {
        Self {
            id: e.id,
            device_id: e.device_id,
            kind: e.kind.into(),
            user_id: e.user_id,
            user_short_name: e.user_short_name,
        }
    }
}

impl From<host::DeviceFacts> for wit::DeviceFacts {
    fn from(f: host::DeviceFacts) -> Self {
        Self {
            serial_number: f.serial_number,
            platform: f.platform,
            model: f.model,
            model_name: f.model_name,
            product_name: f.product_name,
            device_name: f.device_name,
            os_version: f.os_version,
            build_version: f.build_version,
        }
    }
}

impl From<host::CheckinKind> for wit::CheckinKind {
    fn from(k: host::CheckinKind) -> Self {
        use host::CheckinKind as H;
        match k {
            H::Authenticate => Self::Authenticate,
            H::TokenUpdate => Self::TokenUpdate,
            H::CheckOut => Self::CheckOut,
            H::UserAuthenticate => Self::UserAuthenticate,
            H::SetBootstrapToken => Self::SetBootstrapToken,
            H::GetBootstrapToken => Self::GetBootstrapToken,
            H::DeclarativeManagement => Self::DeclarativeManagement,
            H::GetToken => Self::GetToken,
        }
    }
}

impl From<host::CommandStatus> for wit::CommandStatus {
    fn from(s: host::CommandStatus) -> Self {
        use host::CommandStatus as H;
        match s {
            H::Acknowledged => Self::Acknowledged,
            H::Error => Self::Error,
            H::CommandFormatError => Self::CommandFormatError,
            H::NotNow => Self::NotNow,
        }
    }
}

impl From<host::ErrorChainItem> for wit::ErrorChainItem {
    fn from(i: host::ErrorChainItem) -> Self {
        Self {
            code: i.code,
            domain: i.domain,
            description: i.description,
        }
    }
}

impl From<host::PlistNode> for wit::PlistNode {
    fn from(n: host::PlistNode) -> Self {
        use host::PlistValue as H;
        use wit::PlistValue as W;
        let value = match n.value {
            H::Dictionary => W::Dictionary,
            H::Array => W::Array,
            H::String(s) => W::String(s),
            H::Integer(i) => W::Integer(i),
            H::Real(f) => W::Real(f),
            H::Boolean(b) => W::Boolean(b),
            H::Data(d) => W::Data(d),
            H::Date(d) => W::Date(d),
        };
        Self {
            parent: n.parent,
            key: n.key,
            value,
        }
    }
}

impl From<wit::Decision> for host::Decision {
    fn from(d: wit::Decision) -> Self {
        match d {
            wit::Decision::Allow => Self::Allow,
            wit::Decision::Deny(r) => Self::Deny(r),
            wit::Decision::Abstain => Self::Abstain,
        }
    }
}

impl From<wit::Action> for host::Action {
    fn from(a: wit::Action) -> Self {
        use wit::Action as W;
        match a {
            W::Enqueue(e) => Self::Enqueue(host::EnqueueCommand {
                enrollment_ids: e.enrollment_ids,
                command: match e.command {
                    wit::CommandSpec::TypedJson(j) => host::CommandSpec::TypedJson(j),
                    wit::CommandSpec::RawPlist(p) => host::CommandSpec::RawPlist(p),
                },
                priority: e.priority,
                ttl_seconds: e.ttl_seconds,
            }),
            W::Retry(r) => Self::Retry(host::RetryCommand {
                enrollment_id: r.enrollment_id,
                command_uuid: r.command_uuid,
                after_seconds: r.after_seconds,
            }),
            W::Push(ids) => Self::Push(ids),
            W::SetAttribute(s) => Self::SetAttribute(host::DeviceAttribute {
                device_id: s.device_id,
                key: s.key,
                value: s.value,
            }),
            W::ClearAttribute(k) => Self::ClearAttribute(host::DeviceAttributeKey {
                device_id: k.device_id,
                key: k.key,
            }),
            W::Emit(e) => Self::Emit(host::Event {
                sink: e.sink,
                topic: e.topic,
                payload_json: e.payload_json,
            }),
            W::AssignSet(a) => Self::AssignSet(a.into()),
            W::UnassignSet(a) => Self::UnassignSet(a.into()),
        }
    }
}

impl From<wit::SetAssignment> for host::SetAssignment {
    fn from(a: wit::SetAssignment) -> Self {
        Self {
            enrollment_id: a.enrollment_id,
            set_name: a.set_name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment() -> (host::Enrollment, wit::Enrollment) {
        (
            host::Enrollment {
                id: "U:1".into(),
                device_id: "U".into(),
                kind: host::ChannelKind::User,
                user_id: Some("1".into()),
                user_short_name: None,
            },
            wit::Enrollment {
                id: "U:1".into(),
                device_id: "U".into(),
                kind: wit::ChannelKind::User,
                user_id: Some("1".into()),
                user_short_name: None,
            },
        )
    }

    fn facts() -> (host::DeviceFacts, wit::DeviceFacts) {
        let s = |v: &str| Some(v.to_string());
        (
            host::DeviceFacts {
                serial_number: s("C02"),
                platform: s("macOS"),
                model: s("Mac14,2"),
                model_name: s("MacBook Air"),
                product_name: s("Mac14,2"),
                device_name: s("Air"),
                os_version: s("14.5"),
                build_version: s("23F79"),
            },
            wit::DeviceFacts {
                serial_number: s("C02"),
                platform: s("macOS"),
                model: s("Mac14,2"),
                model_name: s("MacBook Air"),
                product_name: s("Mac14,2"),
                device_name: s("Air"),
                os_version: s("14.5"),
                build_version: s("23F79"),
            },
        )
    }

    #[test]
    fn a_checkin_event_converts_whole_and_its_raw_payload_only_when_granted() {
        let (he, we) = enrollment();
        let (hf, wf) = facts();
        let e = host::CheckinEvent {
            event_id: "E".into(),
            kind: host::CheckinKind::TokenUpdate,
            enrollment: he,
            device: hf,
            token_update_count: Some(2),
            awaiting_configuration: Some(true),
            raw: Some(b"<plist/>".to_vec()),
        };
        let expected = wit::CheckinEvent {
            event_id: "E".into(),
            kind: wit::CheckinKind::TokenUpdate,
            enrollment: we,
            device: wf,
            token_update_count: Some(2),
            awaiting_configuration: Some(true),
            raw: Some(b"<plist/>".to_vec()),
        };
        assert_eq!(checkin_event(&e, true), expected);
        assert_eq!(
            checkin_event(&e, false),
            wit::CheckinEvent {
                raw: None,
                ..expected
            }
        );
    }

    #[test]
    fn a_command_result_converts_with_its_report_tree_and_error_chain() {
        let (he, we) = enrollment();
        let (hf, wf) = facts();
        let e = host::CommandResultEvent {
            event_id: "E".into(),
            enrollment: he,
            device: hf,
            command_uuid: "C".into(),
            request_type: "DeviceInformation".into(),
            status: host::CommandStatus::Error,
            error_chain: vec![host::ErrorChainItem {
                code: Some(12021),
                domain: Some("MCMDMErrorDomain".into()),
                description: None,
            }],
            report: vec![
                host::PlistNode {
                    parent: None,
                    key: None,
                    value: host::PlistValue::Dictionary,
                },
                host::PlistNode {
                    parent: Some(0),
                    key: Some("Real".into()),
                    value: host::PlistValue::Real(1.5),
                },
                host::PlistNode {
                    parent: Some(0),
                    key: Some("Data".into()),
                    value: host::PlistValue::Data(vec![1, 2]),
                },
            ],
            raw: Some(vec![0]),
            retry_of: Some("C0".into()),
        };
        let expected = wit::CommandResultEvent {
            event_id: "E".into(),
            enrollment: we,
            device: wf,
            command_uuid: "C".into(),
            request_type: "DeviceInformation".into(),
            status: wit::CommandStatus::Error,
            error_chain: vec![wit::ErrorChainItem {
                code: Some(12021),
                domain: Some("MCMDMErrorDomain".into()),
                description: None,
            }],
            report: vec![
                wit::PlistNode {
                    parent: None,
                    key: None,
                    value: wit::PlistValue::Dictionary,
                },
                wit::PlistNode {
                    parent: Some(0),
                    key: Some("Real".into()),
                    value: wit::PlistValue::Real(1.5),
                },
                wit::PlistNode {
                    parent: Some(0),
                    key: Some("Data".into()),
                    value: wit::PlistValue::Data(vec![1, 2]),
                },
            ],
            raw: None,
            retry_of: Some("C0".into()),
        };
        assert_eq!(command_result_event(&e, false), expected);
    }

    #[test]
    fn an_enrollment_request_and_a_schedule_tick_convert_whole() {
        let (he, we) = enrollment();
        let (hf, wf) = facts();
        let r = host::EnrollmentRequest {
            event_id: "E".into(),
            enrollment: he,
            device: hf,
            identity_fingerprint: "ab".into(),
            raw: Some(vec![1]),
        };
        assert_eq!(
            enrollment_request(&r, true),
            wit::EnrollmentRequest {
                event_id: "E".into(),
                enrollment: we,
                device: wf,
                identity_fingerprint: "ab".into(),
                raw: Some(vec![1]),
            }
        );
        let s = host::ScheduleEvent {
            event_id: "E".into(),
            name: "nightly".into(),
        };
        assert_eq!(
            schedule_event(&s),
            wit::ScheduleEvent {
                event_id: "E".into(),
                name: "nightly".into(),
            }
        );
    }

    #[test]
    fn every_kind_status_and_channel_maps_to_its_namesake() {
        use host::{ChannelKind as HC, CheckinKind as HK, CommandStatus as HS};
        use wit::{ChannelKind as WC, CheckinKind as WK, CommandStatus as WS};
        let kinds = [
            (HK::Authenticate, WK::Authenticate),
            (HK::TokenUpdate, WK::TokenUpdate),
            (HK::CheckOut, WK::CheckOut),
            (HK::UserAuthenticate, WK::UserAuthenticate),
            (HK::SetBootstrapToken, WK::SetBootstrapToken),
            (HK::GetBootstrapToken, WK::GetBootstrapToken),
            (HK::DeclarativeManagement, WK::DeclarativeManagement),
            (HK::GetToken, WK::GetToken),
        ];
        for (h, w) in kinds {
            assert_eq!(WK::from(h), w);
        }
        let statuses = [
            (HS::Acknowledged, WS::Acknowledged),
            (HS::Error, WS::Error),
            (HS::CommandFormatError, WS::CommandFormatError),
            (HS::NotNow, WS::NotNow),
        ];
        for (h, w) in statuses {
            assert_eq!(WS::from(h), w);
        }
        let channels = [
            (HC::Device, WC::Device),
            (HC::UserEnrollmentDevice, WC::UserEnrollmentDevice),
            (HC::User, WC::User),
            (HC::SharedIpadUser, WC::SharedIpadUser),
            (HC::UserEnrollmentUser, WC::UserEnrollmentUser),
        ];
        for (h, w) in channels {
            assert_eq!(WC::from(h), w);
        }
    }

    #[test]
    fn every_action_and_decision_converts_back_whole() {
        let asked = vec![
            wit::Action::Enqueue(wit::EnqueueCommand {
                enrollment_ids: vec!["D".into()],
                command: wit::CommandSpec::TypedJson("{}".into()),
                priority: -3,
                ttl_seconds: Some(60),
            }),
            wit::Action::Enqueue(wit::EnqueueCommand {
                enrollment_ids: vec![],
                command: wit::CommandSpec::RawPlist(vec![1]),
                priority: 0,
                ttl_seconds: None,
            }),
            wit::Action::Retry(wit::RetryCommand {
                enrollment_id: "D".into(),
                command_uuid: "C".into(),
                after_seconds: 5,
            }),
            wit::Action::Push(vec!["D".into()]),
            wit::Action::SetAttribute(wit::DeviceAttribute {
                device_id: "D".into(),
                key: "k".into(),
                value: "v".into(),
            }),
            wit::Action::ClearAttribute(wit::DeviceAttributeKey {
                device_id: "D".into(),
                key: "k".into(),
            }),
            wit::Action::Emit(wit::Event {
                sink: "s".into(),
                topic: "t".into(),
                payload_json: "{}".into(),
            }),
            wit::Action::AssignSet(wit::SetAssignment {
                enrollment_id: "D".into(),
                set_name: "remediation".into(),
            }),
            wit::Action::UnassignSet(wit::SetAssignment {
                enrollment_id: "D:501".into(),
                set_name: "baseline".into(),
            }),
        ];
        let HookOutput::Actions(got) = actions(asked) else {
            panic!("actions convert to actions");
        };
        assert_eq!(
            got,
            [
                host::Action::Enqueue(host::EnqueueCommand {
                    enrollment_ids: vec!["D".into()],
                    command: host::CommandSpec::TypedJson("{}".into()),
                    priority: -3,
                    ttl_seconds: Some(60),
                }),
                host::Action::Enqueue(host::EnqueueCommand {
                    enrollment_ids: vec![],
                    command: host::CommandSpec::RawPlist(vec![1]),
                    priority: 0,
                    ttl_seconds: None,
                }),
                host::Action::Retry(host::RetryCommand {
                    enrollment_id: "D".into(),
                    command_uuid: "C".into(),
                    after_seconds: 5,
                }),
                host::Action::Push(vec!["D".into()]),
                host::Action::SetAttribute(host::DeviceAttribute {
                    device_id: "D".into(),
                    key: "k".into(),
                    value: "v".into(),
                }),
                host::Action::ClearAttribute(host::DeviceAttributeKey {
                    device_id: "D".into(),
                    key: "k".into(),
                }),
                host::Action::Emit(host::Event {
                    sink: "s".into(),
                    topic: "t".into(),
                    payload_json: "{}".into(),
                }),
                host::Action::AssignSet(host::SetAssignment {
                    enrollment_id: "D".into(),
                    set_name: "remediation".into(),
                }),
                host::Action::UnassignSet(host::SetAssignment {
                    enrollment_id: "D:501".into(),
                    set_name: "baseline".into(),
                }),
            ]
        );
        for (w, h) in [
            (wit::Decision::Allow, host::Decision::Allow),
            (
                wit::Decision::Deny("no".into()),
                host::Decision::Deny("no".into()),
            ),
            (wit::Decision::Abstain, host::Decision::Abstain),
        ] {
            assert_eq!(host::Decision::from(w), h);
        }
    }

    fn state(
        active: bool,
        valid: &str,
        token: &str,
    ) -> (host::DeclarationState, wit::DeclarationState) {
        (
            host::DeclarationState {
                active,
                valid: valid.into(),
                server_token: token.into(),
                reasons_json: r#"[{"code":"Error.ConfigurationCannotBeApplied"}]"#.into(),
            },
            wit::DeclarationState {
                active,
                valid: valid.into(),
                server_token: token.into(),
                reasons_json: r#"[{"code":"Error.ConfigurationCannotBeApplied"}]"#.into(),
            },
        )
    }

    #[test]
    fn a_ddm_status_event_converts_whole_with_first_and_later_reports() {
        let (he, we) = enrollment();
        let (h_old, w_old) = state(true, "valid", "t1");
        let (h_new, w_new) = state(false, "invalid", "t2");
        let (h_first, w_first) = state(true, "unknown", "t3");
        let e = host::DdmStatusEvent {
            event_id: "E".into(),
            enrollment: he,
            declarations: vec![
                host::DeclarationChange {
                    identifier: "com.example.passcode".into(),
                    category: "configuration".into(),
                    old: Some(h_old),
                    new: h_new,
                },
                host::DeclarationChange {
                    identifier: "com.example.activation".into(),
                    category: "activation".into(),
                    old: None,
                    new: h_first,
                },
            ],
            items: vec![
                host::StatusItemChange {
                    name: "passcode.is-compliant".into(),
                    old_json: Some("true".into()),
                    new_json: "false".into(),
                },
                host::StatusItemChange {
                    name: "device.operating-system.version".into(),
                    old_json: None,
                    new_json: r#""17.5""#.into(),
                },
            ],
        };
        assert_eq!(
            ddm_status_event(&e),
            wit::DdmStatusEvent {
                event_id: "E".into(),
                enrollment: we,
                declarations: vec![
                    wit::DeclarationChange {
                        identifier: "com.example.passcode".into(),
                        category: "configuration".into(),
                        old: Some(w_old),
                        new: w_new,
                    },
                    wit::DeclarationChange {
                        identifier: "com.example.activation".into(),
                        category: "activation".into(),
                        old: None,
                        new: w_first,
                    },
                ],
                items: vec![
                    wit::StatusItemChange {
                        name: "passcode.is-compliant".into(),
                        old_json: Some("true".into()),
                        new_json: "false".into(),
                    },
                    wit::StatusItemChange {
                        name: "device.operating-system.version".into(),
                        old_json: None,
                        new_json: r#""17.5""#.into(),
                    },
                ],
            }
        );
    }

    #[test]
    fn a_token_request_converts_whole() {
        let (he, we) = enrollment();
        let r = host::TokenRequest {
            event_id: "E".into(),
            enrollment: he,
            token_service_type: "com.apple.maid".into(),
        };
        assert_eq!(
            token_request(&r),
            wit::TokenRequest {
                event_id: "E".into(),
                enrollment: we,
                token_service_type: "com.apple.maid".into(),
            }
        );
    }
}
