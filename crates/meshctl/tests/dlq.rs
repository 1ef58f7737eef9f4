//! `meshctl dlq list|replay` and the `dlq` column of `status` against a real mesh: a dead
//! letter stored as shop-events stores one is listed, replayed to its original subject with its
//! original event id (and deleted), and a second replay of the same event id inside the
//! stream's duplicate window is refused with the dead letter kept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
#![allow(clippy::print_stdout)] // the commands' output, shown when the test fails

use std::process::{Command, Output};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use meshctl::state::MeshState;
use tempfile::TempDir;

fn meshctl(dir: &TempDir, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("--state-dir")
        .arg(dir.path())
        .args(args)
        .output()
        .unwrap();
    println!(
        "$ meshctl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Stops the mesh however the test ends.
struct Down<'a>(&'a TempDir);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = meshctl(self.0, &["down"]);
    }
}

fn port() -> String {
    shop_testkit::free_port().unwrap().to_string()
}

/// Stores a dead letter of `event_id` as the runner of consumer `notifications-test` would.
async fn dead_letter(js: &jetstream::Context, event_id: &str, sequence: u64) {
    let mut headers = HeaderMap::new();
    let dlq_id = format!("notifications-test:MESHCTL_TEST:{sequence}");
    headers.insert("Nats-Msg-Id", dlq_id.as_str());
    headers.insert("shop-event-type", "meshctl.test.Replayed");
    headers.insert("shop-dlq-event-id", event_id);
    headers.insert("shop-dlq-subject", "meshctl.test.replayed");
    headers.insert("shop-dlq-consumer", "notifications-test");
    headers.insert("shop-dlq-error", "handler refused it");
    headers.insert("shop-dlq-failures", "5");
    js.publish_with_headers(
        "shop.dlq.notifications-test.meshctl.test.replayed",
        headers,
        "the original payload".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_listed_and_replayed_with_their_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let _down = Down(&dir);
    let notifications = format!("notifications={}:{}", port(), port());
    let (pg, nats) = (port(), port());
    let up = [
        "up",
        "--detach",
        "--pg-port",
        &pg,
        "--nats-port",
        &nats,
        "--only",
        "notifications",
        "--port",
        &notifications,
    ];
    assert!(meshctl(&dir, &up).status.success(), "up --detach failed");
    let state = MeshState::load(dir.path()).unwrap().unwrap();
    let client = async_nats::connect(format!("nats://127.0.0.1:{}", state.nats.port))
        .await
        .unwrap();
    let js = jetstream::new(client);
    // Where the original subject is stored (notifications created SHOP_DLQ at start).
    let originals = js
        .create_stream(stream::Config {
            name: "MESHCTL_TEST".into(),
            subjects: vec!["meshctl.test.>".into()],
            duplicate_window: std::time::Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .unwrap();
    let event_id = uuid::Uuid::new_v4().to_string();
    dead_letter(&js, &event_id, 1).await;

    let list = meshctl(&dir, &["dlq", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success());
    assert!(
        listed.contains(&event_id) && listed.contains("notifications-test"),
        "{listed}"
    );
    assert!(listed.contains("handler refused it"), "{listed}");
    let status = String::from_utf8_lossy(&meshctl(&dir, &["status"]).stdout).into_owned();
    let row = status
        .lines()
        .find(|l| l.starts_with("notifications"))
        .unwrap();
    assert!(row.contains("1 DEAD"), "{status}");

    assert!(meshctl(&dir, &["dlq", "replay", "--all"]).status.success());
    let replayed = originals
        .get_last_raw_message_by_subject("meshctl.test.replayed")
        .await
        .unwrap();
    assert_eq!(&replayed.payload[..], b"the original payload");
    let header = |name: &str| replayed.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(
        header("Nats-Msg-Id"),
        Some(event_id.clone()),
        "the original event id"
    );
    assert_eq!(
        header("shop-event-type").as_deref(),
        Some("meshctl.test.Replayed")
    );
    assert_eq!(
        header("shop-dlq-error"),
        None,
        "no dead-letter headers on the original"
    );
    let listed = meshctl(&dir, &["dlq", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("no dead letters"));

    // The same event again, within the duplicate window: JetStream drops it, so the dead
    // letter stays for a later replay.
    dead_letter(&js, &event_id, 2).await;
    let again = meshctl(&dir, &["dlq", "replay", "--all"]);
    assert!(!again.status.success(), "a dropped replay is a failure");
    assert!(String::from_utf8_lossy(&again.stdout).contains("duplicate window"));
    let kept = meshctl(&dir, &["dlq", "list"]);
    assert!(String::from_utf8_lossy(&kept.stdout).contains(&event_id));
    let mut info = originals.clone();
    assert_eq!(info.info().await.unwrap().state.messages, 1, "stored once");

    assert!(meshctl(&dir, &["down"]).status.success());
}
