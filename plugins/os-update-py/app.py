"""When a device reports an OS below the minimum, schedule an update to the target version and tell a sink.

The Python twin of plugins/os-update (Rust) and plugins/os-update-js: the same configuration
({"minimum_os": "17.0", "target_os": "17.5"}), the same actions for the same events. Built with
componentize-py against wit/v0.3 (see README.md).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config, log, types

SINK = "os-alerts"


def version(v):
    """A version's leading numbers: "17.4.1" is [17, 4, 1]."""
    numbers = []
    for part in v.split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return numbers


def older(os_version, minimum):
    return version(os_version) < version(minimum)


def settings(text):
    """The configuration, checked: two versions, nothing else."""
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise Err(f"configuration is not JSON: {e}")
    if not isinstance(cfg, dict) or set(cfg) != {"minimum_os", "target_os"}:
        raise Err("configuration is {\"minimum_os\": ..., \"target_os\": ...}")
    for key in ("minimum_os", "target_os"):
        if not isinstance(cfg[key], str) or not version(cfg[key]):
            raise Err(f"{key} must be a version such as \"17.0\"")
    return cfg


def reported_os(report):
    """QueryResponses.OSVersion from the report's flat node list, if it is there."""
    responses = next(
        (i for i, n in enumerate(report) if n.parent == 0 and n.key == "QueryResponses"), None
    )
    if responses is None:
        return None
    for n in report:
        if n.parent == responses and n.key == "OSVersion" and isinstance(n.value, types.PlistValue_String):
            return n.value.value
    return None


class Hooks(exports.Hooks):
    def on_command_result(self, event):
        if event.request_type != "DeviceInformation" or event.status != types.CommandStatus.ACKNOWLEDGED:
            return []
        os_version = reported_os(event.report)
        if os_version is None:
            return []
        cfg = settings(config.get())
        if not older(os_version, cfg["minimum_os"]):
            return []
        log.log(log.Level.INFO, "scheduling an OS update",
                [("device_id", event.enrollment.device_id), ("os", os_version)])
        update = {"RequestType": "ScheduleOSUpdate",
                  "Updates": [{"ProductVersion": cfg["target_os"], "InstallAction": "InstallASAP"}]}
        payload = {"device_id": event.enrollment.device_id, "os_version": os_version,
                   "target_os": cfg["target_os"]}
        return [
            types.Action_Enqueue(types.EnqueueCommand(
                enrollment_ids=[event.enrollment.id],
                command=types.CommandSpec_TypedJson(json.dumps(update)),
                priority=0,
                ttl_seconds=None,
            )),
            types.Action_Emit(types.Event(sink=SINK, topic="os.update-scheduled",
                                          payload_json=json.dumps(payload))),
        ]

    def validate_config(self, text):
        settings(text)

    # The hooks this plugin does not subscribe to (the manifest says which are called).
    def decide_enrollment(self, request):
        return types.Decision_Abstain()

    def on_checkin(self, event):
        return []

    def on_schedule(self, event):
        return []

    def on_ddm_status(self, event):
        return []

    def provide_token(self, request):
        return None

    def decide_promotion(self, request):
        from wit_world.imports import rollout
        return rollout.PromotionDecision_Abstain()

    def on_rollout(self, event):
        return []
