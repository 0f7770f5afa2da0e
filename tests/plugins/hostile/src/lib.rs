//! A plugin that does what its configuration's `mode` says, most of it hostile. Built against the raw WIT
//! bindings: any component-model toolchain can write plugins, the SDK only makes it shorter.

wit_bindgen::generate!({
    path: "../../../wit/v0.2",
    world: "plugin",
});

use exports::mdm::plugin::hooks::Guest;
use mdm::plugin::types::{
    Action, CheckinEvent, CommandResultEvent, CommandSpec, DdmStatusEvent, Decision,
    DeviceAttribute, EnqueueCommand, EnrollmentRequest, ScheduleEvent, SetAssignment, TokenRequest,
};

struct Hostile;

/// Initialised data (restored from the module's image for each instance) and 2 MiB of zeroed memory
/// (more than the pool keeps resident, so both ways of resetting a slot are crossed). `remember` reports
/// whether a call found them as a new instance must, then scribbles over both.
static mut GENERATION: u64 = 7;
static mut SCRATCH: [u8; 2 << 20] = [0; 2 << 20];

fn remember() -> String {
    // SAFETY: an instance runs one call on one thread; nothing else touches these.
    unsafe {
        let generation = std::ptr::addr_of_mut!(GENERATION);
        let scratch = &mut *std::ptr::addr_of_mut!(SCRATCH);
        let fresh = generation.read_volatile() == 7 && scratch.iter().all(|b| *b == 0);
        generation.write_volatile(8);
        scratch.fill(0xAB);
        std::hint::black_box(&scratch);
        if fresh { "fresh" } else { "stale" }.to_string()
    }
}

fn mode() -> String {
    let cfg = mdm::plugin::config::get();
    serde_json::from_str::<serde_json::Value>(&cfg)
        .ok()
        .and_then(|v| v.get("mode").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| "ok".into())
}

/// A string setting from the configuration (empty when absent).
fn setting(key: &str) -> String {
    let cfg = mdm::plugin::config::get();
    serde_json::from_str::<serde_json::Value>(&cfg)
        .ok()
        .and_then(|v| v.get(key).and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_default()
}

fn tag(device_id: &str) -> Action {
    Action::SetAttribute(DeviceAttribute {
        device_id: device_id.to_string(),
        key: "hostile".into(),
        value: "was here".into(),
    })
}

fn url() -> String {
    setting("url")
}

/// The misbehaviour; Ok carries the actions to return.
fn misbehave(device_id: &str) -> Result<Vec<Action>, String> {
    match mode().as_str() {
        "loop" => loop {
            std::hint::black_box(0u64);
        },
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![0xAB; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "panic" => panic!("hostile plugin panics"),
        "error" => Err("hostile plugin returns an error".into()),
        "huge" => Ok((0..10_000)
            .map(|i| {
                Action::SetAttribute(DeviceAttribute {
                    device_id: device_id.to_string(),
                    key: format!("k{i}"),
                    value: "x".repeat(64),
                })
            })
            .collect()),
        "flood" => Ok((0..50)
            .map(|i| {
                Action::Enqueue(EnqueueCommand {
                    enrollment_ids: (0..100).map(|j| format!("FLOOD-{i}-{j}")).collect(),
                    command: CommandSpec::TypedJson(r#"{"RequestType":"ProfileList"}"#.into()),
                    priority: 0,
                    ttl_seconds: None,
                })
            })
            .collect()),
        "kv" => {
            mdm::plugin::kv::set("touched", b"1", None).map_err(|e| format!("{e:?}"))?;
            Ok(Vec::new())
        }
        "http" => {
            let r = mdm::plugin::http::fetch(&mdm::plugin::http::Request {
                method: "GET".into(),
                url: url(),
                headers: Vec::new(),
                body: None,
            });
            match r {
                Ok(resp) => Ok(vec![Action::SetAttribute(DeviceAttribute {
                    device_id: device_id.to_string(),
                    key: "http-status".into(),
                    value: resp.status.to_string(),
                })]),
                Err(e) => Err(format!("http refused: {e:?}")),
            }
        }
        "push" => Ok(vec![Action::Push(vec![device_id.to_string()])]),
        // A valid action, then one refused only when applied (a command the queue does not know), or
        // one refused when checked (a push to no one): neither call may leave the attribute set.
        "half-applied" => Ok(vec![
            tag(device_id),
            Action::Enqueue(EnqueueCommand {
                enrollment_ids: vec![device_id.to_string()],
                command: CommandSpec::TypedJson(r#"{"RequestType":"NoSuchCommand"}"#.into()),
                priority: 0,
                ttl_seconds: None,
            }),
        ]),
        "half-checked" => Ok(vec![tag(device_id), Action::Push(Vec::new())]),
        "remember" => Ok(vec![Action::SetAttribute(DeviceAttribute {
            device_id: device_id.to_string(),
            key: "instance".into(),
            value: remember(),
        })]),
        "tag" => Ok(vec![tag(device_id)]),
        // Whether or not it was granted `ddm-assign`.
        "assign" => Ok(vec![Action::AssignSet(SetAssignment {
            enrollment_id: device_id.to_string(),
            set_name: setting("set"),
        })]),
        _ => Ok(Vec::new()),
    }
}

/// A token as the configuration says: `token` gives the `token` setting's bytes, `token-huge` one byte
/// more than the server takes, `token-empty` none at all; other modes misbehave as for any hook, then
/// have no token.
fn token(device_id: &str) -> Result<Option<Vec<u8>>, String> {
    match mode().as_str() {
        "token" => Ok(Some(setting("token").into_bytes())),
        "token-huge" => Ok(Some(vec![0x5A; 64 * 1024 + 1])),
        "token-empty" => Ok(Some(Vec::new())),
        _ => misbehave(device_id).map(|_| None),
    }
}

impl Guest for Hostile {
    fn decide_enrollment(req: EnrollmentRequest) -> Result<Decision, String> {
        if mode() == "deny" {
            return Ok(Decision::Deny("hostile says no".into()));
        }
        misbehave(&req.enrollment.device_id).map(|_| Decision::Abstain)
    }

    fn on_checkin(event: CheckinEvent) -> Result<Vec<Action>, String> {
        misbehave(&event.enrollment.device_id)
    }

    fn on_command_result(event: CommandResultEvent) -> Result<Vec<Action>, String> {
        misbehave(&event.enrollment.device_id)
    }

    fn on_schedule(_: ScheduleEvent) -> Result<Vec<Action>, String> {
        Ok(Vec::new())
    }

    fn on_ddm_status(event: DdmStatusEvent) -> Result<Vec<Action>, String> {
        misbehave(&event.enrollment.device_id)
    }

    fn provide_token(request: TokenRequest) -> Result<Option<Vec<u8>>, String> {
        token(&request.enrollment.device_id)
    }

    fn validate_config(config: String) -> Result<(), String> {
        serde_json::from_str::<serde_json::Value>(&config)
            .map(|_| ())
            .map_err(|e| format!("config is not JSON: {e}"))
    }
}

export!(Hostile);
