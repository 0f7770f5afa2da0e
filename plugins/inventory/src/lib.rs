//! Device inventory as attributes.
//!
//! * An acknowledged `DeviceInformation` sets one attribute per scalar in `QueryResponses`
//!   (`OSVersion` becomes `inv.os_version`, `BatteryLevel` `inv.battery_level`, ...).
//! * An acknowledged `SecurityInfo` sets attributes for FileVault, SIP, firewall, passcode, secure
//!   boot, management status and so on, where the device reports them.
//! * A device channel's first TokenUpdate (its enrollment completing) and each acknowledged
//!   DeviceInformation or SecurityInfo it answers remember the device in KV (`device:<id>`); its CheckOut
//!   forgets it. A device enrolled before the plugin is remembered at its first such answer.
//! * Each night, every remembered device is asked for DeviceInformation and SecurityInfo again, in
//!   batches of [`BATCH_DEVICES`] (the server takes at most 1000 enrollment ids per call); the
//!   `nightly-batch` schedule sends the following batches until the round is done. Each batch reads
//!   one page of device keys, after the last device queued (`kv::list` with `start_after`).
//!
//! Configuration: `{"attribute_prefix": "inv."}`.

use mdm_plugin_sdk::actions::{MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE};
use mdm_plugin_sdk::prelude::*;
use serde::Deserialize;

/// KV prefix of remembered devices.
pub const DEVICE_PREFIX: &str = "device:";
/// KV key of a nightly round in progress: the last device id queued.
pub const CURSOR_KEY: &str = "nightly:cursor";
/// Devices per batch: two commands each, within the server's 1000 enrollment ids per call.
pub const BATCH_DEVICES: usize = actions::MAX_ENQUEUE_IDS / 2;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Put before every attribute key.
    pub attribute_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            attribute_prefix: "inv.".into(),
        }
    }
}

/// Checks a configuration.
pub fn validate(text: &str) -> PluginResult<()> {
    let c: Config = config::parse(text)?;
    if c.attribute_prefix.len() > 64 {
        return Err("attribute_prefix is at most 64 bytes".into());
    }
    Ok(())
}

/// SecurityInfo values kept, by path under `SecurityInfo`, and their attribute names.
pub const SECURITY_INFO: &[(&[&str], &str)] = &[
    (&["FDE_Enabled"], "fde_enabled"),
    (
        &["FDE_HasPersonalRecoveryKey"],
        "fde_has_personal_recovery_key",
    ),
    (
        &["FDE_HasInstitutionalRecoveryKey"],
        "fde_has_institutional_recovery_key",
    ),
    (&["SystemIntegrityProtectionEnabled"], "sip_enabled"),
    (&["FirewallSettings", "FirewallEnabled"], "firewall_enabled"),
    (
        &["FirewallSettings", "BlockAllIncoming"],
        "firewall_block_all_incoming",
    ),
    (
        &["FirewallSettings", "StealthMode"],
        "firewall_stealth_mode",
    ),
    (&["PasscodePresent"], "passcode_present"),
    (&["PasscodeCompliant"], "passcode_compliant"),
    (
        &["PasscodeCompliantWithProfiles"],
        "passcode_compliant_with_profiles",
    ),
    (&["HardwareEncryptionCaps"], "hardware_encryption_caps"),
    (
        &["AuthenticatedRootVolumeEnabled"],
        "authenticated_root_volume_enabled",
    ),
    (&["SecureBoot", "SecureBootLevel"], "secure_boot_level"),
    (&["SecureBoot", "ExternalBootLevel"], "external_boot_level"),
    (
        &["FirmwarePasswordStatus", "PasswordExists"],
        "firmware_password_exists",
    ),
    (&["IsRecoveryLockEnabled"], "recovery_lock_enabled"),
    (&["RemoteDesktopEnabled"], "remote_desktop_enabled"),
    (&["ManagementStatus", "EnrolledViaDEP"], "enrolled_via_dep"),
    (
        &["ManagementStatus", "UserApprovedEnrollment"],
        "user_approved_enrollment",
    ),
    (
        &["ManagementStatus", "IsUserEnrollment"],
        "is_user_enrollment",
    ),
    (
        &["ManagementStatus", "IsActivationLockManageable"],
        "activation_lock_manageable",
    ),
    (
        &["BootstrapTokenAllowedForAuthentication"],
        "bootstrap_token_allowed_for_authentication",
    ),
    (
        &["BootstrapTokenRequiredForSoftwareUpdate"],
        "bootstrap_token_required_for_software_update",
    ),
    (
        &["BootstrapTokenRequiredForKernelExtensionApproval"],
        "bootstrap_token_required_for_kext_approval",
    ),
];

/// Apple key names whose snake_case the generic rule gets wrong.
const NAME_OVERRIDES: &[(&str, &str)] = &[
    ("WiFiMAC", "wifi_mac"),
    (
        "iTunesStoreAccountIsActive",
        "itunes_store_account_is_active",
    ),
    ("iTunesStoreAccountHash", "itunes_store_account_hash"),
    ("IsMDMLostModeEnabled", "is_mdm_lost_mode_enabled"),
    (
        "IsDeviceLocatorServiceEnabled",
        "is_device_locator_service_enabled",
    ),
];

/// An Apple key as a snake_case attribute name: `OSVersion` -> `os_version`,
/// `AvailableDeviceCapacity` -> `available_device_capacity`, `IMEI` -> `imei`.
pub fn snake_case(key: &str) -> String {
    if let Some((_, name)) = NAME_OVERRIDES.iter().find(|(k, _)| *k == key) {
        return (*name).to_owned();
    }
    let chars: Vec<char> = key.chars().collect();
    let mut out = String::with_capacity(key.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push('_');
            }
        }
        if c == '-' || c == ' ' {
            out.push('_');
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Cuts `value` to at most `max` bytes, on a character boundary.
fn truncate(mut value: String, max: usize) -> String {
    if value.len() > max {
        let mut end = max;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

/// `(name, value)` pairs from a DeviceInformation report: every scalar in `QueryResponses`.
pub fn device_information_attributes(report: &Plist) -> Vec<(String, String)> {
    let Some(responses) = report.get("QueryResponses").and_then(Plist::as_dict) else {
        return Vec::new();
    };
    responses
        .iter()
        .filter_map(|(key, value)| Some((snake_case(key), value.to_scalar_string()?)))
        .collect()
}

/// `(name, value)` pairs from a SecurityInfo report, for the values in [`SECURITY_INFO`] present.
pub fn security_info_attributes(report: &Plist) -> Vec<(String, String)> {
    let Some(info) = report.get("SecurityInfo") else {
        return Vec::new();
    };
    SECURITY_INFO
        .iter()
        .filter_map(|(path, name)| {
            let value = info.path(path)?.to_scalar_string()?;
            Some(((*name).to_owned(), value))
        })
        .collect()
}

/// The attribute actions for a command result (none unless it is an acknowledged DeviceInformation
/// or SecurityInfo). Keys and values are cut to the server's limits.
pub fn result_actions(event: &CommandResultEvent, prefix: &str) -> PluginResult<Vec<Action>> {
    if !event.is_acknowledged() {
        return Ok(Vec::new());
    }
    let pairs = match event.request_type.as_str() {
        "DeviceInformation" => device_information_attributes(&event.report()?),
        "SecurityInfo" => security_info_attributes(&event.report()?),
        _ => return Ok(Vec::new()),
    };
    let device_id = &event.enrollment.device_id;
    Ok(pairs
        .into_iter()
        .map(|(name, value)| {
            let key = truncate(format!("{prefix}{name}"), MAX_ATTRIBUTE_KEY);
            actions::set_attribute(device_id, &key, truncate(value, MAX_ATTRIBUTE_VALUE))
        })
        .collect())
}

/// What a check-in means for the list of remembered devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remember {
    /// Nothing.
    Nothing,
    /// Remember this device (KV key, enrollment id).
    Add(String, String),
    /// Forget this device (KV key).
    Remove(String),
}

/// Device channels are remembered at their first TokenUpdate and forgotten at CheckOut. (Later
/// TokenUpdates say nothing new; the manifest's `checkins` keeps the server from calling for them.)
pub fn remember(event: &CheckinEvent) -> Remember {
    if !event.enrollment.is_device_channel() {
        return Remember::Nothing;
    }
    let key = device_key(&event.enrollment.id);
    match event.kind {
        CheckinKind::TokenUpdate if event.is_first_token_update() => {
            Remember::Add(key, event.enrollment.id.clone())
        }
        CheckinKind::CheckOut => Remember::Remove(key),
        _ => Remember::Nothing,
    }
}

/// Where a batch's page of device keys starts: after the key of the last device queued (`cursor`),
/// or at the first device for a new round (`cursor` empty).
pub fn page_start(cursor: &str) -> Option<String> {
    (!cursor.is_empty()).then(|| device_key(cursor))
}

/// A batch from a page of device keys listed for it (sorted, up to `size + 1` of them): up to
/// `size` enrollment ids, and the cursor to store (`None`: the round is done, no device is left).
pub fn batch_from_page(keys: &[String], size: usize) -> (Vec<String>, Option<String>) {
    let page = &keys[..keys.len().min(size)];
    let id = |key: &String| key.strip_prefix(DEVICE_PREFIX).map(str::to_owned);
    let next = if keys.len() > size {
        page.last().and_then(id)
    } else {
        None
    };
    let ids = page
        .iter()
        .filter_map(id)
        .filter(|i| !i.is_empty())
        .collect();
    (ids, next)
}

/// The refresh commands for a batch of enrollments.
pub fn refresh_actions(ids: &[String]) -> Vec<Action> {
    if ids.is_empty() {
        return Vec::new();
    }
    vec![
        actions::enqueue(ids, commands::device_information(&[])),
        actions::enqueue(ids, commands::security_info()),
    ]
}

/// Queues the next batch of the round at `cursor` and moves the cursor on (or ends the round).
/// One host call lists the batch's devices, and one device more to tell whether any are left.
fn run_batch(cursor: &str) -> PluginResult<Vec<Action>> {
    let keys = kv::list(
        DEVICE_PREFIX,
        page_start(cursor).as_deref(),
        BATCH_DEVICES as u32 + 1,
    )?;
    let (batch, next) = batch_from_page(&keys, BATCH_DEVICES);
    match &next {
        Some(last) => kv::set_with_ttl(CURSOR_KEY, last, 86_400)?,
        None => {
            kv::delete(CURSOR_KEY)?;
        }
    }
    info!("nightly refresh: {} devices queued", batch.len(); more = next.is_some());
    Ok(refresh_actions(&batch))
}

/// The KV key that remembers a device channel.
pub fn device_key(id: &str) -> String {
    format!("{DEVICE_PREFIX}{id}")
}

/// Remember a device channel under its `key`. Read first: a device answers every night, and a known
/// one costs no write.
fn keep(key: &str, id: &str) -> PluginResult<()> {
    if kv::get(key)?.as_deref() != Some(id.as_bytes()) {
        kv::set(key, id)?;
    }
    Ok(())
}

struct Inventory;

impl Plugin for Inventory {
    fn on_command_result(event: CommandResultEvent) -> PluginResult<Vec<Action>> {
        if !event.is_acknowledged()
            || !matches!(
                event.request_type.as_str(),
                "DeviceInformation" | "SecurityInfo"
            )
        {
            return Ok(Vec::new());
        }
        let config: Config = config::get()?;
        let actions = result_actions(&event, &config.attribute_prefix)?;
        // A device that answers is one to ask again each night, whenever it enrolled.
        if event.enrollment.is_device_channel() {
            let id = &event.enrollment.id;
            keep(&device_key(id), id)?;
        }
        Ok(actions)
    }

    fn on_checkin(event: CheckinEvent) -> PluginResult<Vec<Action>> {
        match remember(&event) {
            Remember::Nothing => {}
            Remember::Add(key, id) => keep(&key, &id)?,
            Remember::Remove(key) => {
                kv::delete(&key)?;
            }
        }
        Ok(Vec::new())
    }

    fn on_schedule(event: ScheduleEvent) -> PluginResult<Vec<Action>> {
        match event.name.as_str() {
            // A new round starts from the first device, replacing any unfinished one.
            "nightly" => run_batch(""),
            "nightly-batch" => match kv::get(CURSOR_KEY)? {
                Some(cursor) => run_batch(&String::from_utf8(cursor)?),
                None => Ok(Vec::new()),
            },
            other => Err(format!("unknown schedule {other:?}").into()),
        }
    }

    fn validate_config(config: &str) -> PluginResult<()> {
        validate(config)
    }
}

export_plugin!(Inventory);

#[cfg(test)]
mod tests {
    use super::*;
    use mdm_plugin_sdk::mock::{self, fixtures};
    use mdm_plugin_sdk::serde_json::{json, Value};

    fn result(request_type: &str, status: CommandStatus, report: Value) -> CommandResultEvent {
        fixtures::command_result(
            fixtures::device_enrollment("UDID-1"),
            request_type,
            status,
            &report,
        )
    }

    fn attrs(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .map(|a| match a {
                Action::SetAttribute(s) => {
                    assert_eq!(s.device_id, "UDID-1");
                    (s.key.clone(), s.value.clone())
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn snake_case_names() {
        for (apple, ours) in [
            ("OSVersion", "os_version"),
            ("BuildVersion", "build_version"),
            ("AvailableDeviceCapacity", "available_device_capacity"),
            ("IMEI", "imei"),
            ("UDID", "udid"),
            ("WiFiMAC", "wifi_mac"),
            ("BluetoothMAC", "bluetooth_mac"),
            ("IsSupervised", "is_supervised"),
            (
                "SupplementalOSVersionExtra",
                "supplemental_os_version_extra",
            ),
            ("DeviceName", "device_name"),
            ("Model", "model"),
        ] {
            assert_eq!(snake_case(apple), ours, "{apple}");
        }
    }

    #[test]
    fn device_information_sets_scalars() {
        let event = result(
            "DeviceInformation",
            CommandStatus::Acknowledged,
            json!({
                "CommandUUID": "c-1",
                "Status": "Acknowledged",
                "UDID": "UDID-1",
                "QueryResponses": {
                    "OSVersion": "14.5",
                    "BuildVersion": "23F79",
                    "DeviceName": "Kim's Mac",
                    "ModelName": "MacBook Pro",
                    "BatteryLevel": 0.87,
                    "AvailableDeviceCapacity": 412.5,
                    "IsSupervised": true,
                    "ServiceSubscriptions": [{"Slot": "One"}],
                    "OSUpdateSettings": {"CatalogURL": "x"}
                }
            }),
        );
        let mut got = attrs(&result_actions(&event, "inv.").unwrap());
        got.sort();
        let expected: Vec<(String, String)> = [
            ("inv.available_device_capacity", "412.5"),
            ("inv.battery_level", "0.87"),
            ("inv.build_version", "23F79"),
            ("inv.device_name", "Kim's Mac"),
            ("inv.is_supervised", "true"),
            ("inv.model_name", "MacBook Pro"),
            ("inv.os_version", "14.5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn security_info_sets_known_values() {
        let event = result(
            "SecurityInfo",
            CommandStatus::Acknowledged,
            json!({
                "Status": "Acknowledged",
                "SecurityInfo": {
                    "FDE_Enabled": false,
                    "SystemIntegrityProtectionEnabled": true,
                    "FirewallSettings": {"FirewallEnabled": false, "StealthMode": true, "Applications": []},
                    "SecureBoot": {"SecureBootLevel": "off"},
                    "FirmwarePasswordStatus": {},
                    "ManagementStatus": {"EnrolledViaDEP": false, "UserApprovedEnrollment": true},
                    "Unknown": 1
                }
            }),
        );
        let got = attrs(&result_actions(&event, "").unwrap());
        let expected: Vec<(String, String)> = [
            ("fde_enabled", "false"),
            ("sip_enabled", "true"),
            ("firewall_enabled", "false"),
            ("firewall_stealth_mode", "true"),
            ("secure_boot_level", "off"),
            ("enrolled_via_dep", "false"),
            ("user_approved_enrollment", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn ignores_other_results() {
        let report = json!({"QueryResponses": {"OSVersion": "1"}});
        for (t, s) in [
            ("DeviceInformation", CommandStatus::Error),
            ("DeviceInformation", CommandStatus::NotNow),
            ("ProfileList", CommandStatus::Acknowledged),
        ] {
            assert!(result_actions(&result(t, s, report.clone()), "inv.")
                .unwrap()
                .is_empty());
        }
        // An acknowledged report without QueryResponses sets nothing.
        assert!(result_actions(
            &result("DeviceInformation", CommandStatus::Acknowledged, json!({})),
            ""
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn long_values_are_cut() {
        let event = result(
            "DeviceInformation",
            CommandStatus::Acknowledged,
            json!({"QueryResponses": {"DeviceName": "é".repeat(3000)}}),
        );
        let got = attrs(&result_actions(&event, "inv.").unwrap());
        assert!(got[0].1.len() <= MAX_ATTRIBUTE_VALUE);
        assert!(got[0].1.len() > MAX_ATTRIBUTE_VALUE - 2);
    }

    #[test]
    fn remembers_device_channels() {
        let dev = fixtures::device_enrollment("UDID-1");
        assert_eq!(
            remember(&fixtures::checkin(CheckinKind::TokenUpdate, dev.clone())),
            Remember::Add("device:UDID-1".into(), "UDID-1".into())
        );
        let mut again = fixtures::checkin(CheckinKind::TokenUpdate, dev.clone());
        again.token_update_count = Some(2);
        assert_eq!(remember(&again), Remember::Nothing, "a later TokenUpdate");
        assert_eq!(
            remember(&fixtures::checkin(CheckinKind::CheckOut, dev.clone())),
            Remember::Remove("device:UDID-1".into())
        );
        assert_eq!(
            remember(&fixtures::checkin(CheckinKind::Authenticate, dev)),
            Remember::Nothing
        );
        let user = fixtures::user_enrollment("UDID-1", "501");
        assert_eq!(
            remember(&fixtures::checkin(CheckinKind::TokenUpdate, user)),
            Remember::Nothing
        );
    }

    #[test]
    fn batches() {
        let keys: Vec<String> = (0..5).map(|i| format!("device:D{i}")).collect();
        let ids =
            |r: std::ops::Range<usize>| -> Vec<String> { r.map(|i| format!("D{i}")).collect() };
        assert_eq!(page_start(""), None);
        assert_eq!(page_start("D1").as_deref(), Some("device:D1"));
        // A page of size + 1 keys: more to come, the cursor is the last id queued.
        assert_eq!(
            batch_from_page(&keys[..3], 2),
            (ids(0..2), Some("D1".into()))
        );
        // The last page.
        assert_eq!(batch_from_page(&keys[3..], 2), (ids(3..5), None));
        assert_eq!(batch_from_page(&keys, 5), (ids(0..5), None));
        assert_eq!(batch_from_page(&[], 5), (vec![], None));
        // A bare `device:` key is no device.
        let odd = vec!["device:".to_owned(), "device:D0".to_owned()];
        assert_eq!(batch_from_page(&odd, 5), (ids(0..1), None));
        assert!(refresh_actions(&[]).is_empty());
    }

    #[test]
    fn a_known_device_is_not_written_again() {
        token_update("UDID-1");
        assert_eq!(mock::kv_writes(), 1);
        // Its answers find it known (a re-enrollment's first TokenUpdate too).
        let info = json!({"QueryResponses": {"OSVersion": "17.5"}});
        Inventory::on_command_result(result(
            "DeviceInformation",
            CommandStatus::Acknowledged,
            info,
        ))
        .unwrap();
        token_update("UDID-1");
        assert_eq!(mock::kv_writes(), 1, "a known device is not written again");
        token_update("UDID-2");
        assert_eq!(mock::kv_writes(), 2);
        assert_eq!(
            mock::kv_snapshot().get("device:UDID-1").map(Vec::as_slice),
            Some(&b"UDID-1"[..])
        );
    }

    #[test]
    fn a_device_enrolled_before_the_plugin_is_remembered_when_it_answers() {
        let info = json!({"QueryResponses": {"OSVersion": "17.5"}});
        let not_now = result("DeviceInformation", CommandStatus::NotNow, json!({}));
        Inventory::on_command_result(not_now).unwrap();
        assert!(mock::kv_snapshot().is_empty(), "only an answer counts");
        let other = result(
            "InstalledApplicationList",
            CommandStatus::Acknowledged,
            json!({}),
        );
        Inventory::on_command_result(other).unwrap();
        assert!(
            mock::kv_snapshot().is_empty(),
            "only what the plugin asks for counts"
        );
        let user = fixtures::command_result(
            fixtures::user_enrollment("UDID-1", "501"),
            "DeviceInformation",
            CommandStatus::Acknowledged,
            &info,
        );
        Inventory::on_command_result(user).unwrap();
        assert!(
            mock::kv_snapshot().is_empty(),
            "a user channel is not a device"
        );
        let answer = result("SecurityInfo", CommandStatus::Acknowledged, json!({}));
        Inventory::on_command_result(answer).unwrap();
        assert_eq!(
            mock::kv_snapshot().get("device:UDID-1").map(Vec::as_slice),
            Some(&b"UDID-1"[..])
        );
    }

    fn token_update(udid: &str) {
        let dev = fixtures::device_enrollment(udid);
        Inventory::on_checkin(fixtures::checkin(CheckinKind::TokenUpdate, dev)).unwrap();
    }

    /// Runs a schedule tick; returns the ids SecurityInfo was queued to, checking that
    /// DeviceInformation went to the same ones, within the server's limits.
    fn tick(name: &str) -> Vec<String> {
        let actions = Inventory::on_schedule(fixtures::schedule(name)).unwrap();
        let mut info = Vec::new();
        let mut security = Vec::new();
        for a in actions {
            match a {
                Action::Enqueue(e) => match e.command.request_type().as_deref() {
                    Some("DeviceInformation") => info.extend(e.enrollment_ids),
                    Some("SecurityInfo") => security.extend(e.enrollment_ids),
                    other => panic!("unexpected command {other:?}"),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(info, security);
        assert!(info.len() + security.len() <= actions::MAX_ENQUEUE_IDS);
        security
    }

    #[test]
    fn nightly_round_covers_every_device_in_batches() {
        // More devices than one host page (1000 keys) and than two batches.
        let n = 2 * BATCH_DEVICES + 20;
        for i in 0..n {
            token_update(&format!("UDID-{i:04}"));
        }
        // Nothing to continue before a round starts.
        assert!(tick("nightly-batch").is_empty());

        let mut queued = tick("nightly");
        assert_eq!(queued.len(), BATCH_DEVICES);
        assert_eq!(
            mock::kv_snapshot().get(CURSOR_KEY).map(Vec::as_slice),
            Some(queued.last().unwrap().as_bytes())
        );
        assert_eq!(mock::kv_ttl(CURSOR_KEY), Some(86_400));
        queued.extend(tick("nightly-batch"));
        assert!(mock::kv_snapshot().contains_key(CURSOR_KEY));
        let last = tick("nightly-batch");
        assert_eq!(last.len(), 20);
        queued.extend(last);
        assert!(!mock::kv_snapshot().contains_key(CURSOR_KEY));
        // The round is done: later batch ticks queue nothing.
        assert!(tick("nightly-batch").is_empty());

        let expected: Vec<String> = (0..n).map(|i| format!("UDID-{i:04}")).collect();
        assert_eq!(queued, expected);

        // CheckOut forgets a device.
        Inventory::on_checkin(fixtures::checkin(
            CheckinKind::CheckOut,
            fixtures::device_enrollment("UDID-0000"),
        ))
        .unwrap();
        assert!(!mock::kv_snapshot().contains_key("device:UDID-0000"));
    }

    #[test]
    fn a_round_follows_devices_coming_and_going() {
        let n = BATCH_DEVICES + 10;
        for i in 0..n {
            token_update(&format!("UDID-{i:04}"));
        }
        let first = tick("nightly");
        assert_eq!(first.len(), BATCH_DEVICES);
        let cursor = first.last().unwrap().clone();
        // Between ticks, the device at the cursor checks out, one ahead of it too, and devices
        // enroll on either side of the cursor.
        for gone in [cursor.clone(), format!("UDID-{:04}", BATCH_DEVICES + 1)] {
            Inventory::on_checkin(fixtures::checkin(
                CheckinKind::CheckOut,
                fixtures::device_enrollment(&gone),
            ))
            .unwrap();
        }
        token_update("UDID-0000-late"); // behind the cursor: next round
        token_update("UDID-9999"); // ahead: this round
        let rest = tick("nightly-batch");
        let mut expected: Vec<String> = (BATCH_DEVICES..n)
            .filter(|&i| i != BATCH_DEVICES + 1)
            .map(|i| format!("UDID-{i:04}"))
            .collect();
        expected.push("UDID-9999".into());
        assert_eq!(rest, expected);
        assert!(!mock::kv_snapshot().contains_key(CURSOR_KEY));

        // A new round starts from the first device again, replacing an unfinished one.
        mock::kv_insert(CURSOR_KEY, b"UDID-0400".to_vec());
        let again = tick("nightly");
        assert_eq!(again.first().map(String::as_str), Some("UDID-0000"));
        assert_eq!(again[1], "UDID-0000-late");
    }

    #[test]
    fn schedule_failures_are_errors() {
        assert!(Inventory::on_schedule(fixtures::schedule("hourly")).is_err());
        mock::fail_kv(Some(mdm_plugin_sdk::kv::KvError::Unavailable(
            "down".into(),
        )));
        assert!(Inventory::on_schedule(fixtures::schedule("nightly")).is_err());
    }

    #[test]
    fn hook_uses_the_configured_prefix() {
        mock::set_config(&json!({"attribute_prefix": "hw."}));
        let event = result(
            "DeviceInformation",
            CommandStatus::Acknowledged,
            json!({"QueryResponses": {"OSVersion": "17.5"}}),
        );
        assert_eq!(
            attrs(&Inventory::on_command_result(event).unwrap()),
            vec![("hw.os_version".to_owned(), "17.5".to_owned())]
        );
        assert!(validate(r#"{"attribute_prefix": "x."}"#).is_ok());
        assert!(validate(r#"{"prefix": "x."}"#).is_err());
        assert!(validate(&format!(r#"{{"attribute_prefix": "{}"}}"#, "x".repeat(65))).is_err());
    }
}
