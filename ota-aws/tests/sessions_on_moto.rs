//! Chat sessions on DynamoDB (moto): what one Lambda instance saves, another loads, so a
//! "yes" typed in the chat confirms the plan shown whichever instance answers; sessions stay
//! with their owner, expire when idle and are trimmed to the limits.

mod moto;

use chrono::{DateTime, Duration, Utc};
use ota_aws::sessions::DynamoSessions;
use ota_core::agent::{ChatMessage, PendingAction, Session, SessionLimits, SessionStore};
use ota_core::names::DeviceType;

fn at(min: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(min)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_saved_by_one_instance_is_loaded_by_another_and_only_by_its_owner() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("chat");
    let clients = server.clients().await;
    ota_aws::provision::create_resources(&clients, &settings).await.unwrap();
    let limits = SessionLimits { max_sessions: 10, max_messages: 4, idle: Duration::minutes(30) };
    let a = DynamoSessions::new(clients.dynamodb.clone(), settings.table("sessions"), limits);
    let b = DynamoSessions::new(server.clients().await.dynamodb, settings.table("sessions"), limits);

    let mut session = Session::new("s-1", "olivia", at(0));
    for i in 0..4 {
        session.messages.push(ChatMessage::user(format!("q{i}")));
        session.messages.push(ChatMessage::assistant(format!("a{i}")));
    }
    let pending =
        PendingAction::SetOta { device_types: vec![DeviceType::parse("beehive_scale").unwrap()], enabled: true };
    session.pending = Some(pending.clone());
    a.save(session).await.unwrap();

    let loaded = b.load("s-1", "olivia", at(5)).await.unwrap().expect("the other instance sees it");
    assert_eq!(loaded.pending, Some(pending));
    let kept = ["q2", "a2", "q3", "a3"];
    let texts: Vec<String> = loaded
        .messages
        .iter()
        .map(|m| match m {
            ChatMessage::User { text } | ChatMessage::Assistant { text, .. } => text.clone(),
            ChatMessage::Tool { content, .. } => content.clone(),
        })
        .collect();
    assert_eq!(texts, kept, "trimmed to the limit");
    let err = b.load("s-1", "mallory", at(5)).await.unwrap_err();
    assert!(matches!(err, ota_core::Error::Conflict(_)), "never another caller's session: {err}");
    let err = b.save(Session::new("s-1", "mallory", at(5))).await.unwrap_err();
    assert!(matches!(err, ota_core::Error::Conflict(_)), "nor replaced by them (conditional write): {err}");
    assert_eq!(b.load("s-1", "olivia", at(6)).await.unwrap().unwrap().messages.len(), kept.len(), "intact");
    assert!(b.load("s-1", "olivia", at(31)).await.unwrap().is_none(), "idle past the limit");
    assert!(b.load("s-2", "olivia", at(1)).await.unwrap().is_none());

    // An oversized conversation is cut to fit an item, never refused.
    let mut big = Session::new("s-big", "olivia", at(0));
    for _ in 0..4 {
        big.messages.push(ChatMessage::user("x".repeat(200_000)));
    }
    a.save(big).await.unwrap();
    let big = b.load("s-big", "olivia", at(1)).await.unwrap().unwrap();
    assert!(big.messages.len() < 2, "{}", big.messages.len());
}
