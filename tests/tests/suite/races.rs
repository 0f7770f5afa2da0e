//! Concurrent check-ins that race on the same rows. Each race resolves to the answer the requests would
//! get one after another — never a 5xx, and nothing acknowledged is lost. On SQLite the single writer
//! serialises them; PostgreSQL (`MDM_TEST_DATABASE_URL`) runs them at once, under read committed.

use mdm_server::storage::entities::enrollment;
use mdm_server::storage::testing::TestDatabase;
use mdm_tests::device::{Device, Platform, User};
use mdm_tests::harness::{each_database, TestServer};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

/// How many times each race is run: one run may happen to serialise.
const ROUNDS: usize = 3;

/// A server with several HTTP workers, as in production, so requests are handled in parallel.
async fn server(db: TestDatabase) -> TestServer {
    TestServer::start_with(db, |c| c.workers = Some(4)).await
}

/// Send each signed check-in at once; their statuses, in no particular order.
async fn at_once(s: &TestServer, messages: Vec<(Device, Vec<u8>)>) -> Vec<u16> {
    // Open the connections first, so the check-ins are not spread out by connection setup.
    let mut warm = tokio::task::JoinSet::new();
    for _ in 0..messages.len() {
        let (http, url) = (s.http.clone(), format!("{}/healthz", s.base));
        warm.spawn(async move { http.get(url).send().await.expect("healthz").status() });
    }
    warm.join_all().await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(messages.len()));
    let mut set = tokio::task::JoinSet::new();
    for (dev, body) in messages {
        let (http, url, sig) = (
            s.http.clone(),
            format!("{}/mdm/checkin", s.base),
            dev.sign(&body),
        );
        let start = start.clone();
        set.spawn(async move {
            start.wait().await;
            let r = http
                .put(url)
                .header("Mdm-Signature", sig)
                .header("Content-Type", "application/x-apple-aspen-mdm-checkin")
                .body(body)
                .send()
                .await
                .expect("response");
            r.status().as_u16()
        });
    }
    set.join_all().await
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn identical_authenticates_at_once_all_succeed() {
    each_database(|db| async move {
        let s = server(db).await;
        for _ in 0..ROUNDS {
            let dev = Device::new(Platform::Ios);
            let statuses = at_once(&s, vec![(dev.clone(), dev.authenticate()); 16]).await;
            assert_eq!(count(&statuses, 200), 16, "{statuses:?}");
            // The device is enrolled once, and goes on normally.
            let r = s.checkin(&dev, dev.token_update(None)).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn first_token_updates_of_a_user_channel_at_once_all_succeed_on_one_row() {
    each_database(|db| async move {
        let s = server(db).await;
        for round in 0..ROUNDS {
            let dev = Device::new(Platform::MacOs);
            s.enroll(&dev).await;
            let user = User::new(&format!("racer{round}"));
            let statuses =
                at_once(&s, vec![(dev.clone(), dev.token_update(Some(&user))); 16]).await;
            assert_eq!(count(&statuses, 200), 16, "{statuses:?}");
            let channel = format!("{}:{}", dev.udid, user.user_id);
            let rows = enrollment::Entity::find()
                .filter(enrollment::Column::Id.eq(channel.as_str()))
                .all(mdm_server::storage::testing::db(&s.storage))
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
            // Every acknowledged TokenUpdate was stored: none was dropped by the race.
            assert_eq!(rows[0].token_update_count, 16);
            assert!(rows[0].enabled);
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn one_certificate_for_ten_devices_at_once_binds_one_and_refuses_the_rest() {
    each_database(|db| async move {
        let s = server(db).await;
        for _ in 0..ROUNDS {
            let first = Device::new(Platform::Ios);
            let devices: Vec<Device> = (0..10)
                .map(|_| Device {
                    identity: first.identity.clone(),
                    ..Device::new(Platform::Ios)
                })
                .collect();
            let statuses = at_once(
                &s,
                devices
                    .iter()
                    .map(|d| (d.clone(), d.authenticate()))
                    .collect(),
            )
            .await;
            assert_eq!(count(&statuses, 200), 1, "{statuses:?}");
            assert_eq!(count(&statuses, 403), 9, "{statuses:?}");
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn one_command_uuid_enqueued_at_once_is_stored_once_and_the_rest_conflict() {
    use base64::{engine::general_purpose::STANDARD, Engine};
    each_database(|db| async move {
        let s = server(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let key = s.key(&[mdm_server::apikeys::Scope::CommandsWrite]).await;
        let auth = format!("Basic {}", STANDARD.encode(format!("nanomdm:{key}")));
        for _ in 0..ROUNDS {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict><key>Command</key>\
                 <dict><key>RequestType</key><string>ProfileList</string></dict><key>CommandUUID</key>\
                 <string>{}</string></dict></plist>",
                uuid::Uuid::new_v4()
            );
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(8));
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let http = s.http.clone();
                let (url, auth, body) = (
                    format!("{}/v1/enqueue/{}", s.base, dev.udid),
                    auth.clone(),
                    body.clone(),
                );
                let start = start.clone();
                set.spawn(async move {
                    start.wait().await;
                    let r = http.put(url).header("Authorization", auth).body(body);
                    r.send().await.expect("response").status().as_u16()
                });
            }
            let statuses = set.join_all().await;
            let ok = statuses.iter().filter(|s| (200..300).contains(*s)).count();
            assert_eq!(ok, 1, "{statuses:?}");
            assert_eq!(count(&statuses, 409), 7, "{statuses:?}");
        }
        s.stop().await;
    })
    .await;
}
