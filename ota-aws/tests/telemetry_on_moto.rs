//! The telemetry history on DynamoDB (moto): what ota appends and what the IoT topic rule
//! writes (the device's message in base64, the broker's time) read back alike, by device,
//! metric, time range and limit, with the retention and the TTL attribute.

mod moto;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use ota_aws::DynamoTelemetry;
use ota_core::names::ThingName;
use ota_core::ports::{TelemetryPoint, TelemetryQuery, TelemetryStore};
use serde_json::{Value, json};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn thing(s: &str) -> ThingName {
    ThingName::parse(s).unwrap()
}

fn point(name: &str, at: DateTime<Utc>, values: Value) -> TelemetryPoint {
    TelemetryPoint { thing: thing(name), at, values: values.as_object().cloned().unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_from_ota_and_from_the_topic_rule_are_queried_alike() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("tel1");
    let clients = server.clients().await;
    ota_aws::provision::create_resources(&clients, &settings).await.unwrap();
    let table = settings.table("telemetry");
    let store = DynamoTelemetry::new(clients.dynamodb.clone(), &table);

    // 60 points (more than one batch), at sub-millisecond times, with a float that DynamoDB's
    // number type would shorten.
    let points: Vec<TelemetryPoint> = (0..60)
        .map(|i| {
            point(
                "co2_monitor-01",
                t0() + Duration::minutes(i) + Duration::nanoseconds(1_500),
                json!({"co2_ppm": 600 + i, "temperature_c": 21.0}),
            )
        })
        .collect();
    store.append(points.clone()).await.unwrap();
    let all = store.query(&TelemetryQuery::of(thing("co2_monitor-01"))).await.unwrap();
    assert_eq!(all, points, "exact times and values, oldest first");

    // What the topic rule writes for a device's message on dt/ota/co2_monitor-02/telemetry.
    let message = r#"{"co2_ppm":900,"temperature_c":22.0}"#;
    let at = t0() + Duration::minutes(5);
    clients
        .dynamodb
        .put_item()
        .table_name(&table)
        .item("thing", AttributeValue::S("co2_monitor-02".into()))
        .item("at", AttributeValue::N(at.timestamp_millis().to_string()))
        .item("expires_at", AttributeValue::N((at + Duration::days(7)).timestamp().to_string()))
        .item("payload_b64", AttributeValue::S(aws_smithy_types::base64::encode(message)))
        .send()
        .await
        .unwrap();
    let got = store.query(&TelemetryQuery::of(thing("co2_monitor-02"))).await.unwrap();
    assert_eq!(got, [point("co2_monitor-02", at, json!({"co2_ppm": 900, "temperature_c": 22.0}))]);

    // Metric, range (since inclusive, until exclusive) and limit (the newest, oldest first).
    let q = TelemetryQuery {
        metric: Some("co2_ppm".into()),
        since: Some(points[10].at),
        until: Some(points[13].at),
        limit: None,
        thing: thing("co2_monitor-01"),
    };
    let got = store.query(&q).await.unwrap();
    assert_eq!(got.iter().map(|p| p.values["co2_ppm"].as_i64().unwrap()).collect::<Vec<_>>(), [610, 611, 612]);
    assert!(got.iter().all(|p| p.values.len() == 1), "only the metric");
    let newest = TelemetryQuery { limit: Some(3), ..TelemetryQuery::of(thing("co2_monitor-01")) };
    assert_eq!(store.query(&newest).await.unwrap(), points[57..]);
    let none = TelemetryQuery { metric: Some("humidity".into()), ..TelemetryQuery::of(thing("co2_monitor-01")) };
    assert!(store.query(&none).await.unwrap().is_empty());

    // The TTL attribute: the point's time plus the retention, in epoch seconds.
    let item = clients
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("thing", AttributeValue::S("co2_monitor-01".into()))
        .key("at", AttributeValue::N(points[0].at.timestamp_millis().to_string()))
        .send()
        .await
        .unwrap();
    let expires = item.item().unwrap()["expires_at"].as_n().unwrap().parse::<i64>().unwrap();
    assert_eq!(expires, (points[0].at + Duration::days(7)).timestamp());
    let ttl = clients.dynamodb.describe_time_to_live().table_name(&table).send().await.unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_drops_old_points_and_bad_batches_store_nothing() {
    let Some(server) = moto::start() else { return };
    let settings = server.settings("tel2");
    let clients = server.clients().await;
    ota_aws::provision::create_resources(&clients, &settings).await.unwrap();
    let store =
        DynamoTelemetry::with_retention(clients.dynamodb.clone(), settings.table("telemetry"), Duration::days(2));
    assert_eq!(store.retention(), Duration::days(2));

    store.append(vec![point("energy_meter-01", t0(), json!({"power_w": 40}))]).await.unwrap();
    store.append(vec![point("energy_meter-02", t0(), json!({"power_w": 7}))]).await.unwrap();
    store.append(vec![point("energy_meter-01", t0() + Duration::days(1), json!({"power_w": 41}))]).await.unwrap();
    // Two days and a minute after the first: that device's first point goes, not the other's.
    store
        .append(vec![point("energy_meter-01", t0() + Duration::days(2) + Duration::minutes(1), json!({"power_w": 42}))])
        .await
        .unwrap();
    let q = |name: &str| TelemetryQuery::of(thing(name));
    assert_eq!(store.query(&q("energy_meter-01")).await.unwrap().len(), 2);
    assert_eq!(store.query(&q("energy_meter-02")).await.unwrap().len(), 1);

    // Two reports in one millisecond: one item, the later kept.
    store
        .append(vec![
            point("energy_meter-03", t0(), json!({"power_w": 1})),
            point("energy_meter-03", t0() + Duration::microseconds(10), json!({"power_w": 2})),
        ])
        .await
        .unwrap();
    let got = store.query(&q("energy_meter-03")).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].values["power_w"], 2);

    let big = "x".repeat(ota_core::ports::MAX_TELEMETRY_BYTES);
    let err = store
        .append(vec![
            point("energy_meter-04", t0(), json!({"power_w": 1})),
            point("energy_meter-04", t0() + Duration::minutes(1), json!({"blob": big})),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, ota_core::Error::Invalid { .. }), "{err}");
    assert!(store.query(&q("energy_meter-04")).await.unwrap().is_empty(), "none of the batch is stored");

    let dropped = store.prune(t0() + Duration::days(1) + Duration::minutes(1)).await.unwrap();
    assert_eq!(dropped, 3, "energy_meter-01's second day, energy_meter-02's and energy_meter-03's points");
    assert_eq!(store.query(&q("energy_meter-01")).await.unwrap().len(), 1);
}
