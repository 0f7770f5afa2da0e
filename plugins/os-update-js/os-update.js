// When a device reports an OS below the minimum, schedule an update to the target version and tell a sink.
//
// The JavaScript twin of plugins/os-update (Rust) and plugins/os-update-py: the same configuration
// ({"minimum_os": "17.0", "target_os": "17.5"}), the same actions for the same events. Built with
// jco componentize (componentize-js) against wit/v0.3 (see README.md).

import { get as configText } from 'mdm:plugin/config@0.3.0';
import { log } from 'mdm:plugin/log@0.3.0';

const SINK = 'os-alerts';

// A version's leading numbers: "17.4.1" is [17, 4, 1].
function version(v) {
  const numbers = [];
  for (const part of v.split('.')) {
    if (!/^[0-9]+$/.test(part)) break;
    numbers.push(Number(part));
  }
  return numbers;
}

function older(os, minimum) {
  const [a, b] = [version(os), version(minimum)];
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] < b[i];
  }
  return a.length < b.length;
}

// The configuration, checked: two versions, nothing else. Throwing answers the hook with an error.
function settings(text) {
  let cfg;
  try {
    cfg = JSON.parse(text);
  } catch (e) {
    throw `configuration is not JSON: ${e}`;
  }
  const keys = cfg && typeof cfg === 'object' && !Array.isArray(cfg) ? Object.keys(cfg).sort() : [];
  if (keys.join(',') !== 'minimum_os,target_os') {
    throw 'configuration is {"minimum_os": ..., "target_os": ...}';
  }
  for (const key of keys) {
    if (typeof cfg[key] !== 'string' || version(cfg[key]).length === 0) {
      throw `${key} must be a version such as "17.0"`;
    }
  }
  return cfg;
}

// QueryResponses.OSVersion from the report's flat node list, if it is there.
function reportedOs(report) {
  const responses = report.findIndex((n) => n.parent === 0 && n.key === 'QueryResponses');
  if (responses < 0) return undefined;
  const node = report.find(
    (n) => n.parent === responses && n.key === 'OSVersion' && n.value.tag === 'string',
  );
  return node ? node.value.val : undefined;
}

export const hooks = {
  onCommandResult(event) {
    if (event.requestType !== 'DeviceInformation' || event.status !== 'acknowledged') return [];
    const os = reportedOs(event.report);
    if (os === undefined) return [];
    const cfg = settings(configText());
    if (!older(os, cfg.minimum_os)) return [];
    log('info', 'scheduling an OS update', [['device_id', event.enrollment.deviceId], ['os', os]]);
    const update = {
      RequestType: 'ScheduleOSUpdate',
      Updates: [{ ProductVersion: cfg.target_os, InstallAction: 'InstallASAP' }],
    };
    const payload = { device_id: event.enrollment.deviceId, os_version: os, target_os: cfg.target_os };
    return [
      {
        tag: 'enqueue',
        val: {
          enrollmentIds: [event.enrollment.id],
          command: { tag: 'typed-json', val: JSON.stringify(update) },
          priority: 0,
          ttlSeconds: undefined,
        },
      },
      {
        tag: 'emit',
        val: { sink: SINK, topic: 'os.update-scheduled', payloadJson: JSON.stringify(payload) },
      },
    ];
  },

  validateConfig(text) {
    settings(text);
  },

  // The hooks this plugin does not subscribe to (the manifest says which are called).
  decideEnrollment() {
    return { tag: 'abstain' };
  },
  onCheckin() {
    return [];
  },
  onSchedule() {
    return [];
  },
  onDdmStatus() {
    return [];
  },
  provideToken() {
    return undefined;
  },
  decidePromotion() {
    return { tag: 'abstain' };
  },
  onRollout() {
    return [];
  },
};
