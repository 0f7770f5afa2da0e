//! The host's plugin event model: what the core hands plugins (check-ins, command results, enrollment
//! requests, schedule ticks, declarative management status changes, token requests, rollout promotions and
//! steps) and what it gets back (decisions, actions, tokens). The core builds and reads only these types;
//! each served WIT version converts to and from them where a call crosses into wasm (`bindings::v0_N`), so
//! serving a new version touches no caller. Names and fields follow the newest WIT `types` and `rollout`
//! interfaces, which document each field; an older version is given what it has words for.

/// The kind of command channel a message speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// A device's own channel (UDID).
    Device,
    /// The device channel of a User Enrollment (EnrollmentID).
    UserEnrollmentDevice,
    /// A macOS user channel (`UDID:UserID`).
    User,
    /// A Shared iPad user (`UDID:UserShortName`).
    SharedIpadUser,
    /// The user channel of a User Enrollment (`EnrollmentID:EnrollmentUserID`).
    UserEnrollmentUser,
}

pub use crate::policies::stages::Stage;

/// A command channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrollment {
    /// The queue id: what commands are enqueued to.
    pub id: String,
    /// The device this channel belongs to (UDID or EnrollmentID).
    pub device_id: String,
    pub kind: ChannelKind,
    pub user_id: Option<String>,
    pub user_short_name: Option<String>,
}

/// What the server knows of a device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceFacts {
    pub serial_number: Option<String>,
    pub platform: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub device_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckinKind {
    Authenticate,
    TokenUpdate,
    CheckOut,
    UserAuthenticate,
    SetBootstrapToken,
    GetBootstrapToken,
    DeclarativeManagement,
    GetToken,
}

/// A check-in message accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckinEvent {
    /// Unique per event: the same id is in the server's log and the plugin audit log.
    pub event_id: String,
    pub kind: CheckinKind,
    pub enrollment: Enrollment,
    pub device: DeviceFacts,
    /// For a TokenUpdate: how many the channel has sent since it last authenticated, this one included.
    pub token_update_count: Option<u32>,
    pub awaiting_configuration: Option<bool>,
    /// The exact plist received; passed on only to plugins granted `raw-payloads`.
    pub raw: Option<Vec<u8>>,
}

/// A command result's status (Idle is not a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStatus {
    Acknowledged,
    Error,
    CommandFormatError,
    NotNow,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ErrorChainItem {
    pub code: Option<i64>,
    pub domain: Option<String>,
    pub description: Option<String>,
}

/// One value of a property list; dictionaries and arrays are the nodes their members name as `parent`.
#[derive(Debug, Clone, PartialEq)]
pub enum PlistValue {
    Dictionary,
    Array,
    String(String),
    Integer(i64),
    Real(f64),
    Boolean(bool),
    Data(Vec<u8>),
    /// RFC 3339.
    Date(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlistNode {
    /// Index of the enclosing dictionary or array; none for the root (node 0).
    pub parent: Option<u32>,
    /// The key, for members of a dictionary.
    pub key: Option<String>,
    pub value: PlistValue,
}

/// A property list as its nodes in document order; node 0 is the root.
pub type PlistTree = Vec<PlistNode>;

/// A device's result for a command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResultEvent {
    pub event_id: String,
    pub enrollment: Enrollment,
    pub device: DeviceFacts,
    pub command_uuid: String,
    pub request_type: String,
    pub status: CommandStatus,
    pub error_chain: Vec<ErrorChainItem>,
    /// The device's whole report.
    pub report: PlistTree,
    /// The exact report bytes; passed on only to plugins granted `raw-payloads`.
    pub raw: Option<Vec<u8>>,
    /// For a copy queued by a `retry` action: the CommandUUID of the first of the chain.
    pub retry_of: Option<String>,
}

/// Asked at Authenticate, before anything is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentRequest {
    pub event_id: String,
    pub enrollment: Enrollment,
    /// Facts from this Authenticate.
    pub device: DeviceFacts,
    /// SHA-256 (hex) of the identity certificate presented.
    pub identity_fingerprint: String,
    /// Passed on only to plugins granted `raw-payloads`.
    pub raw: Option<Vec<u8>>,
}

/// A tick of a schedule the plugin's manifest names.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleEvent {
    pub event_id: String,
    pub name: String,
}

/// A declaration's state as a device reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclarationState {
    pub active: bool,
    /// Apple's `valid`, as reported: `valid`, `invalid` or `unknown`.
    pub valid: String,
    pub server_token: String,
    /// Apple's `reasons`, as JSON (`[]` when none).
    pub reasons_json: String,
}

/// A declaration whose reported state changed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclarationChange {
    pub identifier: String,
    /// `activation`, `configuration`, `asset` or `management`.
    pub category: String,
    /// None on the first report of this declaration.
    pub old: Option<DeclarationState>,
    pub new: DeclarationState,
}

/// A status item whose reported value changed.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusItemChange {
    /// Dotted, e.g. `passcode.is-compliant`.
    pub name: String,
    /// JSON; none on the first report of this item.
    pub old_json: Option<String>,
    /// JSON.
    pub new_json: String,
}

/// What a declarative management status report changed, for the channel that sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct DdmStatusEvent {
    pub event_id: String,
    pub enrollment: Enrollment,
    pub declarations: Vec<DeclarationChange>,
    pub items: Vec<StatusItemChange>,
}

/// A GetToken check-in's question: a token for this service.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRequest {
    pub event_id: String,
    pub enrollment: Enrollment,
    /// The check-in's `TokenServiceType`, e.g. `com.apple.maid`.
    pub token_service_type: String,
}

/// A plugin's answer to an enrollment request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow,
    /// Refuse, with a reason for the audit log.
    Deny(String),
    /// No opinion.
    Abstain,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandSpec {
    /// A typed command as the admin API takes it (JSON with Apple's key names).
    TypedJson(String),
    /// A raw command plist: a whole envelope or a bare Command dictionary.
    RawPlist(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueCommand {
    pub enrollment_ids: Vec<String>,
    pub command: CommandSpec,
    pub priority: i32,
    pub ttl_seconds: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryCommand {
    pub enrollment_id: String,
    pub command_uuid: String,
    pub after_seconds: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAttribute {
    pub device_id: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAttributeKey {
    pub device_id: String,
    pub key: String,
}

/// An event for the sink the admin configured under `sink`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub sink: String,
    pub topic: String,
    pub payload_json: String,
}

/// A named set of declarations and the channel it is assigned to or unassigned from.
#[derive(Debug, Clone, PartialEq)]
pub struct SetAssignment {
    /// A queue id (`Enrollment::id`).
    pub enrollment_id: String,
    pub set_name: String,
}

/// What a plugin asks the server to do; checked against its grants before anything is applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Enqueue(EnqueueCommand),
    Retry(RetryCommand),
    /// Wake these enrollments with an MDM push.
    Push(Vec<String>),
    SetAttribute(DeviceAttribute),
    ClearAttribute(DeviceAttributeKey),
    Emit(Event),
    AssignSet(SetAssignment),
    UnassignSet(SetAssignment),
}

/// A policy rollout as plugins see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutInfo {
    pub policy_id: i64,
    pub policy_name: String,
    pub version: String,
    pub previous: Option<String>,
    pub stage: Stage,
    /// `running`, `paused`, `halted`, `completed` or `rolled-back`.
    pub state: String,
    pub started_by: String,
    pub started_unix_ms: i64,
    pub stage_started_unix_ms: i64,
}

/// Where the devices one stage reached stand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageCounts {
    pub stage: Stage,
    pub devices: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub pending: u64,
}

/// A rollout's gate values against their thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateValues {
    pub failure_ratio: f64,
    pub max_failure_ratio: f64,
    pub reported_ratio: f64,
    pub min_reported_ratio: f64,
}

/// Asked before a round promotes a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct PromotionRequest {
    pub event_id: String,
    pub rollout: RolloutInfo,
    /// None: the promotion completes the rollout.
    pub next_stage: Option<Stage>,
    pub stages: Vec<StageCounts>,
    pub gates: GateValues,
    pub now_unix_ms: i64,
}

/// A plugin's answer to a [`PromotionRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromotionDecision {
    Allow,
    Hold(String),
    Abstain,
}

/// A step a rollout took, after it committed.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutEvent {
    pub event_id: String,
    /// The audit action (`policy.rollout_promoted`, ...).
    pub action: String,
    pub rollout: RolloutInfo,
    pub reason: Option<String>,
    pub actor: String,
    pub at_unix_ms: i64,
}
