//! The service-level metrics operators alert on, read from `/metrics` after driving the server: command
//! latency from enqueue to first delivery and to the final result, enrollment steps, check-in handling
//! time, the fleet gauges and certificate expiry. And what ships for operators (docs/OPERATIONS.md's metric
//! table, the alert rules, the Grafana dashboard) names only metrics the server exposes.

use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, TestServer};
use serde_json::json;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// The value of one series (`name{labels}` exactly as exposed), if present.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

async fn scrape(s: &TestServer) -> String {
    s.api(reqwest::Method::GET, "/metrics", None, None)
        .await
        .text()
}

#[tokio::test]
async fn command_latency_counts_from_enqueue_to_first_delivery_and_to_the_result() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| c.telemetry.gauges_interval_secs = 1).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        // Delivered 12 s after the enqueue, NotNow'd, delivered again, acknowledged 20 s after the enqueue.
        s.clock.advance_ms(12_000);
        let r = s.connect(&dev, dev.idle(None)).await;
        let uuid = mdm_tests::device::ReceivedCommand::parse(&r.body)
            .expect("the command")
            .uuid;
        s.clock.advance_ms(3_000);
        let not_now = dev.report(None, "NotNow", &uuid, Default::default());
        assert_eq!(s.connect(&dev, not_now).await.status, 200);
        s.clock.advance_ms(5_000);
        let r = s.connect(&dev, dev.idle(None)).await;
        assert!(!r.body.is_empty(), "offered again after Idle");
        let ack = dev.report(None, "Acknowledged", &uuid, Default::default());
        assert_eq!(s.connect(&dev, ack).await.status, 200);

        let m = scrape(&s).await;
        let delivery = r#"mdm_command_delivery_seconds_bucket{le="LE",request_type="ProfileList",priority="normal"}"#;
        let at = |series: &str, le: &str| value(&m, &series.replace("LE", le));
        assert_eq!(at(delivery, "10.0"), Some(0.0), "{m}");
        assert_eq!(at(delivery, "30.0"), Some(1.0), "the first delivery only: {m}");
        let delivered = r#"mdm_command_delivery_seconds_sum{request_type="ProfileList",priority="normal"}"#;
        assert_eq!(value(&m, delivered), Some(12.0));
        let completion = r#"mdm_command_completion_seconds_bucket{le="LE",request_type="ProfileList",priority="normal",status="acknowledged"}"#;
        assert_eq!(at(completion, "10.0"), Some(0.0), "{m}");
        assert_eq!(at(completion, "30.0"), Some(1.0), "{m}");
        let completed = r#"mdm_command_completion_seconds_sum{request_type="ProfileList",priority="normal",status="acknowledged"}"#;
        assert_eq!(value(&m, completed), Some(20.0), "NotNow is not final");

        // Enrollment and check-in handling.
        let attempts = r#"mdm_enrollment_attempts_total{step="authenticate"}"#;
        assert_eq!(value(&m, attempts), Some(1.0), "{m}");
        assert!(!m.contains("mdm_enrollment_failures_total{"), "{m}");
        let handled = |t: &str| {
            let series = format!(r#"mdm_checkin_duration_seconds_count{{message_type="{t}"}}"#);
            value(&m, &series).unwrap_or(0.0)
        };
        assert_eq!(handled("Authenticate"), 1.0, "{m}");
        assert_eq!(handled("CommandReport"), 4.0, "two Idles, NotNow, Acknowledged");
        for kind in ["scep_ca", "profile_signer"] {
            let series = format!(r#"mdm_certificate_not_after_seconds{{kind="{kind}",name="{kind}"}}"#);
            assert!(value(&m, &series).unwrap() > 1.7e9, "{series}: {m}");
        }

        // The fleet gauges job: nothing pending, the device seen within the hour.
        let mut m = String::new();
        for _ in 0..50 {
            m = scrape(&s).await;
            if value(&m, r#"mdm_devices_by_last_seen{within="1h"}"#) == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(value(&m, r#"mdm_devices_by_last_seen{within="1h"}"#), Some(1.0), "{m}");
        assert_eq!(value(&m, r#"mdm_devices_by_last_seen{within="older"}"#), Some(0.0));
        assert_eq!(value(&m, "mdm_commands_pending"), Some(0.0));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_refused_authenticate_counts_as_a_failed_enrollment_step() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        // Another device presenting the first one's identity is refused: an enrollment step that failed.
        let mut other = Device::new(Platform::Ios);
        other.identity = dev.identity.clone();
        let r = s.checkin(&other, other.authenticate()).await;
        assert_eq!(r.status, 403, "{}", r.text());
        let m = scrape(&s).await;
        let attempts = r#"mdm_enrollment_attempts_total{step="authenticate"}"#;
        assert_eq!(value(&m, attempts), Some(2.0), "{m}");
        let failed = r#"mdm_enrollment_failures_total{step="authenticate",reason="refused"}"#;
        assert_eq!(value(&m, failed), Some(1.0), "{m}");
        s.stop().await;
    })
    .await;
}

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Metric families named in `text`: `mdm_` names with the suffixes a family's series carry removed.
fn families_named(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("mdm_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                known.contains(base).then(|| base.to_string())
            })
            .unwrap_or(name);
        out.insert(family);
    }
    out
}

#[test]
fn operators_docs_alerts_and_dashboard_name_only_metrics_the_server_exposes() {
    let metrics = mdm_server::metrics::Metrics::new();
    let exposed: BTreeSet<String> = metrics.families().iter().cloned().collect();
    assert!(
        exposed.contains("mdm_command_delivery_seconds"),
        "{exposed:?}"
    );

    // docs/OPERATIONS.md: one row per family, each exposed, none missing.
    let docs = std::fs::read_to_string(repo_file("docs/OPERATIONS.md")).unwrap();
    let table = docs.split("## Metrics").nth(1).expect("a Metrics section");
    let documented: Vec<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let unique: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(unique.len(), documented.len(), "a metric documented twice");
    assert_eq!(
        unique, exposed,
        "docs/OPERATIONS.md's metric table against /metrics"
    );

    // The alert rules and the dashboard: every metric they read exists.
    let alerts = std::fs::read_to_string(repo_file("deploy/prometheus/alerts.yml")).unwrap();
    let unknown: Vec<_> = families_named(&alerts, &exposed)
        .into_iter()
        .filter(|f| !exposed.contains(f) && !f.starts_with("mdm_server"))
        .collect();
    assert!(unknown.is_empty(), "alerts.yml reads {unknown:?}");
    let dashboard = std::fs::read_to_string(repo_file("deploy/grafana/mdm-server.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "panels with queries: {}", exprs.len());
    let unknown: Vec<_> = families_named(&exprs.join("\n"), &exposed)
        .into_iter()
        .filter(|f| !exposed.contains(f))
        .collect();
    assert!(unknown.is_empty(), "the dashboard reads {unknown:?}");
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(e)) = map.get("expr") {
                out.push(e.clone());
            }
            map.values().for_each(|v| collect_exprs(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
