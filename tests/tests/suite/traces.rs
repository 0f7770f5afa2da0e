//! OpenTelemetry traces from the real server binary to a collector: the span tree of a signed check-in
//! that plugins hear, an admin's `traceparent` continued and carried in the JSON log lines, and the
//! `traceparent` an event sink receives naming a span the collector has.

use mdm_server::storage::Storage;
use mdm_tests::device::{Device, Platform};
use mdm_tests::otlp::{ancestors, Collector, Span};
use mdm_tests::process::{admin_key, ServerProcess};
use mdm_tests::sink::Sink;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mdm-server-under-test"))
}

/// `plugins.dir` with serial-allowlist (decide-enrollment, allowing `prefix`), webhook (on-checkin,
/// emitting to the `webhook` sink) and the test plugin in its `http` mode (on-checkin, a GET to `url`).
fn plugins_dir(root: &Path, prefix: &str, url: &str) {
    let mut fetcher = mdm_tests::plugins::manifest("hostile");
    fetcher["hooks"] = json!(["on-checkin"]);
    fetcher["http_allow"] = json!(["127.0.0.1"]);
    fetcher["failure_policy"] = json!({"on-checkin": "fail-open"});
    for (package, id, manifest, config) in [
        (
            "serial-allowlist",
            "serial-allowlist",
            mdm_tests::plugins::manifest("serial-allowlist"),
            json!({"prefixes": [prefix]}),
        ),
        (
            "webhook",
            "webhook",
            mdm_tests::plugins::manifest("webhook"),
            json!({"sink": "webhook"}),
        ),
        (
            "hostile-plugin",
            "hostile",
            fetcher,
            json!({"mode": "http", "url": url}),
        ),
    ] {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(mdm_tests::plugins::build(package), dir.join("plugin.wasm")).unwrap();
        std::fs::write(dir.join("plugin.json"), manifest.to_string()).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    }
}

fn named<'s>(spans: &'s [Span], name: &str) -> Vec<&'s Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test]
async fn a_signed_check_in_is_one_trace_from_http_to_storage_and_sinks_can_join_theirs() {
    let collector = Collector::start().await;
    let sink = Sink::start(200).await;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let dev = Device::new(Platform::Ios);
    let fetched = format!("{}/fetched", sink.url.trim_end_matches("/events"));
    plugins_dir(&root.path().join("plugins"), &dev.serial[..3], &fetched);
    std::fs::create_dir_all(&data).unwrap();
    let url = format!("sqlite://{}?mode=rwc", data.join("mdm.db").display());
    let storage = Storage::connect(&url, None).await.unwrap();
    storage.migrate().await.unwrap();
    let key = admin_key(&storage).await.unwrap();
    drop(storage);
    let env = [
        ("MDM_TELEMETRY__OTLP_ENDPOINT", collector.url.clone()),
        ("MDM_TELEMETRY__INSTANCE", "replica-a".to_string()),
        // The batch exporter's period, read by the OpenTelemetry SDK: spans reach the collector soon.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ("MDM_LOG__FORMAT", "json".to_string()),
        ("MDM_LOG__FILTER", "info".to_string()),
        (
            "MDM_PLUGINS__DIR",
            root.path().join("plugins").display().to_string(),
        ),
        ("MDM_PLUGINS__SINKS__WEBHOOK__URL", sink.url.clone()),
    ];
    let mut server = ServerProcess::spawn("traced", bin(), &data, &env)
        .await
        .unwrap();
    let http = reqwest::Client::new();

    // A device's signed Authenticate: decide-enrollment and on-checkin plugins hear it.
    let body = dev.authenticate();
    let res = http
        .put(format!("{}/mdm/checkin", server.base))
        .header("Mdm-Signature", dev.sign(&body))
        // A device's traceparent is not taken (a device cannot choose its trace).
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", server.log());
    let complete = |spans: &[Span]| {
        named(spans, "plugin.call").len() >= 3
            && !named(spans, "storage.transaction").is_empty()
            && !named(spans, "sink.post").is_empty()
    };
    let spans = collector.wait_for(Duration::from_secs(30), complete).await;
    assert!(complete(&spans), "spans: {spans:#?}\nlog: {}", server.log());

    let request = spans
        .iter()
        .find(|s| s.name == "PUT /mdm/checkin")
        .unwrap_or_else(|| panic!("the request's span: {spans:#?}"));
    assert!(
        request.parent_span_id.is_empty(),
        "a root: the device's traceparent is ignored"
    );
    assert_ne!(request.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(request.attributes["http.response.status_code"], "200");
    assert_eq!(request.resource["service.name"], "mdm-server");
    assert_eq!(request.resource["service.instance.id"], "replica-a");
    assert!(request.resource.contains_key("service.version"));
    let in_request: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == request.trace_id)
        .cloned()
        .collect();
    let verify = named(&in_request, "identity.verify");
    assert_eq!(verify.len(), 1, "{in_request:#?}");
    assert_eq!(verify[0].attributes["cache"], "miss");
    assert_eq!(ancestors(&in_request, verify[0]), ["PUT /mdm/checkin"]);
    let checkin = named(&in_request, "checkin");
    assert_eq!(checkin.len(), 1, "{in_request:#?}");
    assert_eq!(checkin[0].attributes["message_type"], "Authenticate");
    let calls = named(&in_request, "plugin.call");
    let hooks: Vec<(&str, &str, &str)> = calls
        .iter()
        .map(|c| {
            assert_eq!(ancestors(&in_request, c), ["checkin", "PUT /mdm/checkin"]);
            (
                c.attributes["plugin"].as_str(),
                c.attributes["hook"].as_str(),
                c.attributes["outcome"].as_str(),
            )
        })
        .collect();
    assert!(
        hooks.contains(&("serial-allowlist", "decide-enrollment", "ok")),
        "{hooks:?}"
    );
    assert!(
        hooks.contains(&("webhook", "on-checkin", "ok")),
        "{hooks:?}"
    );
    let host_http = in_request
        .iter()
        .find(|s| s.name == "plugin.host" && s.attributes["call"] == "http")
        .unwrap_or_else(|| panic!("the plugin's HTTP call: {in_request:#?}"));
    assert_eq!(
        ancestors(&in_request, host_http),
        ["plugin.call", "checkin", "PUT /mdm/checkin"]
    );
    let txn = named(&in_request, "storage.transaction");
    assert!(
        txn.iter()
            .any(|t| ancestors(&in_request, t) == ["checkin", "PUT /mdm/checkin"]),
        "{in_request:#?}"
    );

    // Every host call is a span, the in-memory ones too (serial-allowlist reads its config).
    let config_read = in_request
        .iter()
        .find(|s| s.name == "plugin.host" && s.attributes["call"] == "config.get")
        .unwrap_or_else(|| panic!("a config read: {in_request:#?}"));
    assert_eq!(ancestors(&in_request, config_read)[0], "plugin.call");

    // The plugin's request carries the check-in's trace, its host call the parent.
    assert!(sink.wait_for(2, Duration::from_secs(10)).await);
    let received = sink.received();
    let fetch = (received.iter())
        .find(|r| r.topic.is_empty())
        .expect("the plugin's GET");
    let expected = format!("00-{}-{}-01", request.trace_id, host_http.span_id);
    assert_eq!(fetch.traceparent.as_deref(), Some(expected.as_str()));

    // The sink's POST carries the traceparent of the span that sent it.
    let event = (received.iter())
        .find(|r| !r.topic.is_empty())
        .expect("the webhook event");
    let traceparent = event.traceparent.clone().expect("a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    let posted = named(&spans, "sink.post");
    assert!(
        posted
            .iter()
            .any(|p| p.trace_id == parts[1] && p.span_id == parts[2]),
        "{traceparent} names a sink.post span: {posted:#?}"
    );
    // That delivery links to the check-in that committed the event.
    let delivery = spans
        .iter()
        .find(|s| s.name == "events.deliver" && s.trace_id == parts[1])
        .unwrap_or_else(|| panic!("the delivery's span: {spans:#?}"));
    let link = (request.trace_id.clone(), checkin[0].span_id.clone());
    assert!(delivery.links.contains(&link), "{delivery:#?}");

    // An admin's request continues the caller's trace; its log lines carry the trace id.
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let res = http
        .get(format!("{}/api/v1/devices", server.base))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let spans = collector
        .wait_for(Duration::from_secs(30), |s| {
            s.iter().any(|s| s.trace_id == trace)
        })
        .await;
    let admin = spans
        .iter()
        .find(|s| s.trace_id == trace)
        .unwrap_or_else(|| panic!("the admin request's span: {spans:#?}"));
    assert_eq!(admin.name, "GET /api/v1/devices");
    assert_eq!(admin.parent_span_id, parent);
    let span_id = format!("\"span_id\":\"{}\"", admin.span_id);
    let logged = server.log().lines().any(|l| {
        l.contains(&format!("\"trace_id\":\"{trace}\""))
            && l.contains(&span_id)
            && l.contains("/api/v1/devices")
    });
    assert!(
        logged,
        "the access line carries the trace and span ids: {}",
        server.log()
    );
    server.stop();
}
