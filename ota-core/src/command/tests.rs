use serde_json::{Value, json};

use super::*;

const THING: &str = "co2_monitor-01";

fn machine() -> CommandMachine {
    CommandMachine::new(&ThingName::parse(THING).unwrap(), Capabilities::demo(true), None)
}

fn drain(m: &mut CommandMachine) -> Vec<CommandAction> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn request(m: &mut CommandMachine, id: &str, payload: &str, phase: Phase) -> Vec<CommandAction> {
    let topic = format!("$aws/commands/things/{THING}/executions/{id}/request/json");
    assert!(m.handle_message(&topic, payload.as_bytes(), phase));
    drain(m)
}

/// The only response among `actions`: (execution id, parsed response).
fn response(actions: &[CommandAction]) -> (String, CommandResponse) {
    let mut found = actions.iter().filter_map(|a| match a {
        CommandAction::Publish { topic, payload } => match topics::parse_command(topic) {
            Some((THING, id, CommandTopic::Response)) => {
                Some((id.to_string(), CommandResponse::parse(payload.as_bytes()).unwrap()))
            }
            _ => None,
        },
        _ => None,
    });
    let one = found.next().expect("a response");
    assert!(found.next().is_none(), "one response: {actions:?}");
    one
}

fn reason(r: &CommandResponse) -> (&str, &str) {
    let reason = r.status_reason.as_ref().expect("a reason");
    (reason.reason_code.as_str(), reason.reason_description.as_str())
}

fn published_on(actions: &[CommandAction], want: &str) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            CommandAction::Publish { topic, payload } if topic == want => Some(serde_json::from_str(payload).unwrap()),
            _ => None,
        })
        .collect()
}

const CONFIG_UPDATE: &str = "$aws/things/co2_monitor-01/shadow/name/config/update";

#[test]
fn connecting_subscribes_reports_config_asks_for_desired_and_samples() {
    let mut m = machine();
    m.handle(CommandEvent::Connected { now_ms: 0 });
    let actions = drain(&mut m);
    let subs: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            CommandAction::Subscribe { topic } => Some(topic.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        subs,
        [
            "$aws/commands/things/co2_monitor-01/executions/+/request/json",
            "$aws/things/co2_monitor-01/shadow/name/config/update/delta",
            "$aws/things/co2_monitor-01/shadow/name/config/get/accepted",
        ]
    );
    assert_eq!(
        published_on(&actions, CONFIG_UPDATE),
        [json!({"state": {"reported": {"sample_rate_seconds": 60, "log_level": "info"}}})]
    );
    assert_eq!(published_on(&actions, "$aws/things/co2_monitor-01/shadow/name/config/get"), [json!({})]);
    assert_eq!(actions.last(), Some(&CommandAction::Sample));
}

#[test]
fn reboot_is_refused_mid_update_then_accepted() {
    let mut m = machine();
    for phase in [Phase::Downloading, Phase::Installing, Phase::SelfTest] {
        let id = format!("r-{phase:?}");
        let actions = request(&mut m, &id, r#"{"command":"reboot"}"#, phase);
        let (got, r) = response(&actions);
        assert_eq!(got, id);
        assert_eq!(r.status, ExecutionStatus::Rejected);
        assert_eq!(reason(&r).0, "UPDATE_IN_PROGRESS");
        assert!(!actions.contains(&CommandAction::Reboot));
    }
    let actions = request(&mut m, "r-2", r#"{"command":"reboot","parameters":{}}"#, Phase::Idle);
    assert_eq!(response(&actions).1.status, ExecutionStatus::Succeeded);
    // The answer goes out before the restart.
    assert!(matches!(actions.as_slice(), [CommandAction::Publish { .. }, CommandAction::Reboot]));
}

#[test]
fn the_same_execution_is_answered_once() {
    let mut m = machine();
    let first = request(&mut m, "e-1", r#"{"command":"reboot"}"#, Phase::Idle);
    assert_eq!(first.len(), 2);
    assert!(request(&mut m, "e-1", r#"{"command":"reboot"}"#, Phase::Idle).is_empty());
    // Also one that was refused, and a bad one.
    request(&mut m, "e-2", "{not json", Phase::Idle);
    assert!(request(&mut m, "e-2", r#"{"command":"reboot"}"#, Phase::Idle).is_empty());
    // Remembered for a while, not for ever (bounded memory).
    for i in 0..REMEMBERED_EXECUTIONS {
        request(&mut m, &format!("x-{i}"), r#"{"command":"identify"}"#, Phase::Idle);
    }
    assert_eq!(request(&mut m, "e-1", r#"{"command":"reboot"}"#, Phase::Idle).len(), 2);
}

#[test]
fn bad_json_and_bad_shapes_are_rejected_as_invalid() {
    for payload in ["", "{", "[]", r#"{"command": 7}"#, r#"{"parameters": {}}"#, r#"{"command":"reboot","extra":1}"#] {
        let mut m = machine();
        let actions = request(&mut m, "e-1", payload, Phase::Idle);
        let (_, r) = response(&actions);
        assert_eq!(r.status, ExecutionStatus::Rejected, "{payload}");
        assert_eq!(reason(&r).0, "INVALID_REQUEST", "{payload}");
        assert_eq!(actions.len(), 1, "nothing else happens: {actions:?}");
    }
}

#[test]
fn unknown_and_undeclared_commands_are_unsupported() {
    // recalibrate is not declared by a firmware built without it.
    let mut m = CommandMachine::new(&ThingName::parse(THING).unwrap(), Capabilities::demo(false), None);
    for command in ["self_destruct", "recalibrate", "set_state"] {
        let actions = request(&mut m, command, &format!(r#"{{"command":"{command}"}}"#), Phase::Idle);
        let (_, r) = response(&actions);
        assert_eq!(r.status, ExecutionStatus::Rejected);
        let (code, description) = reason(&r);
        assert_eq!(code, "UNSUPPORTED_COMMAND");
        assert!(
            description.contains(command) && description.contains("reboot, identify, update_config"),
            "{description}"
        );
    }
    // Without settings, update_config is not supported either.
    let caps = Capabilities { commands: vec!["reboot".into()], settings: Default::default() };
    let mut m = CommandMachine::new(&ThingName::parse(THING).unwrap(), caps, None);
    let actions =
        request(&mut m, "u", r#"{"command":"update_config","parameters":{"log_level":"debug"}}"#, Phase::Idle);
    assert_eq!(reason(&response(&actions).1).0, "UNSUPPORTED_COMMAND");
}

#[test]
fn identify_and_recalibrate_are_the_applications_and_their_outcome_is_the_answer() {
    let mut m = machine();
    for (command, error) in [("identify", None), ("recalibrate", None), ("recalibrate", Some("sensor busy"))] {
        let id = format!("{command}-{}", error.is_some());
        let actions =
            request(&mut m, &id, &format!(r#"{{"command":"{command}","parameters":{{"x":1}}}}"#), Phase::Idle);
        let [CommandAction::Run { task, command: got, parameters }] = actions.as_slice() else { panic!("{actions:?}") };
        assert_eq!(got, command);
        assert_eq!(parameters["x"], 1);
        // Nothing is answered before the application is done.
        m.handle(CommandEvent::Done { task: *task, error: error.map(String::from) });
        let (got, r) = response(&drain(&mut m));
        assert_eq!(got, id);
        match error {
            None => assert_eq!(r.status, ExecutionStatus::Succeeded),
            Some(e) => {
                assert_eq!(r.status, ExecutionStatus::Failed);
                assert_eq!(reason(&r), ("ACTION_FAILED", e));
            }
        }
    }
    // A stale or unknown task is ignored.
    m.handle(CommandEvent::Done { task: Task(999), error: None });
    assert!(drain(&mut m).is_empty());
}

#[test]
fn update_config_stores_then_reports_then_answers() {
    let mut m = machine();
    let actions = request(
        &mut m,
        "c-1",
        r#"{"command":"update_config","parameters":{"sample_rate_seconds":10,"log_level":"debug"}}"#,
        Phase::Downloading,
    );
    let [CommandAction::PersistConfig { task, bytes }] = actions.as_slice() else { panic!("{actions:?}") };
    let stored: Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(stored, json!({"sample_rate_seconds": 10, "log_level": "debug"}));
    assert_eq!(m.sample_rate_ms(), 60_000, "in force only once stored");
    m.handle(CommandEvent::Done { task: *task, error: None });
    let actions = drain(&mut m);
    assert_eq!(published_on(&actions, CONFIG_UPDATE), [json!({"state": {"reported": stored}})]);
    assert_eq!(response(&actions).1.status, ExecutionStatus::Succeeded);
    assert_eq!(m.sample_rate_ms(), 10_000);
    // A new boot reads it back.
    let again = CommandMachine::new(&ThingName::parse(THING).unwrap(), Capabilities::demo(true), Some(bytes));
    assert_eq!(again.config(), m.config());
}

#[test]
fn update_config_that_cannot_be_stored_fails_and_changes_nothing() {
    let mut m = machine();
    let actions = request(&mut m, "c", r#"{"command":"update_config","parameters":{"log_level":"warn"}}"#, Phase::Idle);
    let [CommandAction::PersistConfig { task, .. }] = actions.as_slice() else { panic!("{actions:?}") };
    m.handle(CommandEvent::Done { task: *task, error: Some("nvs full".into()) });
    let actions = drain(&mut m);
    let (_, r) = response(&actions);
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert_eq!(reason(&r).0, "STORAGE_ERROR");
    assert!(published_on(&actions, CONFIG_UPDATE).is_empty());
    assert_eq!(m.config()["log_level"], "info");
}

#[test]
fn bad_settings_are_rejected_naming_the_key_and_what_it_takes() {
    let cases = [
        (json!({"sample_rate_seconds": 0}), "OUT_OF_BOUNDS", "\"sample_rate_seconds\" = 0 is out of bounds: 1 to 3600"),
        (json!({"sample_rate_seconds": 3601}), "OUT_OF_BOUNDS", "1 to 3600"),
        (json!({"sample_rate_seconds": 2.5}), "WRONG_TYPE", "\"sample_rate_seconds\" takes an integer"),
        (json!({"sample_rate_seconds": "10"}), "WRONG_TYPE", "takes an integer"),
        (
            json!({"log_level": "verbose"}),
            "NOT_ALLOWED",
            "\"log_level\" = \"verbose\" is not allowed; one of: error, warn, info, debug",
        ),
        (json!({"log_level": 3}), "WRONG_TYPE", "\"log_level\" takes an enum"),
        (
            json!({"colour": "red"}),
            "UNKNOWN_SETTING",
            "unknown setting \"colour\"; this firmware declares: log_level, sample_rate_seconds",
        ),
        // One bad key refuses the whole change.
        (json!({"log_level": "debug", "sample_rate_seconds": -1}), "OUT_OF_BOUNDS", "sample_rate_seconds"),
        (json!({}), "INVALID_REQUEST", "no settings given"),
    ];
    for (parameters, code, says) in cases {
        let mut m = machine();
        let payload = json!({"command": "update_config", "parameters": parameters}).to_string();
        let actions = request(&mut m, "c", &payload, Phase::Idle);
        let (_, r) = response(&actions);
        assert_eq!(r.status, ExecutionStatus::Rejected, "{parameters}");
        let (got, description) = reason(&r);
        assert_eq!(got, code, "{parameters}");
        assert!(description.contains(says), "{parameters}: {description}");
        assert_eq!(actions.len(), 1, "nothing stored: {actions:?}");
        assert_eq!(m.config(), &Capabilities::demo(true).defaults());
    }
}

#[test]
fn setting_types_check_as_declared() {
    let number = SettingSpec { kind: SettingType::Number, min: Some(-1.5), max: None, allowed: vec![], default: None };
    assert!(number.check("k", &json!(-1.5)).is_ok());
    assert!(number.check("k", &json!(7)).is_ok());
    assert_eq!(
        number.check("k", &json!(-2)).unwrap_err().to_string(),
        "setting \"k\" = -2 is out of bounds: at least -1.5"
    );
    let boolean = SettingSpec { kind: SettingType::Boolean, min: None, max: None, allowed: vec![], default: None };
    assert!(boolean.check("b", &json!(true)).is_ok());
    assert_eq!(boolean.check("b", &json!(1)).unwrap_err().code(), "WRONG_TYPE");
    let free = SettingSpec { kind: SettingType::String, min: None, max: None, allowed: vec![], default: None };
    assert!(free.check("s", &json!("anything")).is_ok());
    let listed = SettingSpec { allowed: vec!["a".into()], ..free.clone() };
    assert_eq!(listed.check("s", &json!("b")).unwrap_err().key(), Some("s"));
    let capped = SettingSpec { min: None, max: Some(5.0), ..number };
    assert!(capped.check("k", &json!(6)).unwrap_err().to_string().ends_with("at most 5"));
}

#[test]
fn capabilities_read_as_metadata_json_spells_them() {
    let text = r#"{"commands": ["reboot", "identify"], "settings": {
        "sample_rate_seconds": {"type": "integer", "min": 1, "max": 3600, "default": 60},
        "log_level": {"type": "enum", "allowed": ["error", "warn", "info", "debug"], "default": "info"}}}"#;
    let caps: Capabilities = serde_json::from_str(text).unwrap();
    assert_eq!(caps, Capabilities::demo(false));
    let back: Capabilities = serde_json::from_str(&serde_json::to_string(&caps).unwrap()).unwrap();
    assert_eq!(back, caps);
    assert!(serde_json::from_str::<SettingSpec>(r#"{"type": "colour"}"#).is_err());
    assert!(serde_json::from_str::<SettingSpec>(r#"{"type": "integer", "mni": 1}"#).is_err(), "a typo is an error");
}

#[test]
fn a_config_delta_is_checked_and_stored_like_update_config() {
    let mut m = machine();
    let delta = "$aws/things/co2_monitor-01/shadow/name/config/update/delta";
    assert!(m.handle_message(delta, br#"{"state": {"log_level": "debug"}, "version": 3}"#, Phase::Idle));
    let actions = drain(&mut m);
    let [CommandAction::PersistConfig { task, .. }] = actions.as_slice() else { panic!("{actions:?}") };
    m.handle(CommandEvent::Done { task: *task, error: None });
    let actions = drain(&mut m);
    assert_eq!(
        published_on(&actions, CONFIG_UPDATE),
        [json!({"state": {"reported": {"sample_rate_seconds": 60, "log_level": "debug"}}})]
    );
    assert_eq!(actions.len(), 1, "no execution to answer");

    // A bad value changes nothing; the configuration in force is reported again.
    assert!(m.handle_message(delta, br#"{"state": {"sample_rate_seconds": 0}}"#, Phase::Idle));
    let actions = drain(&mut m);
    assert_eq!(
        published_on(&actions, CONFIG_UPDATE),
        [json!({"state": {"reported": {"sample_rate_seconds": 60, "log_level": "debug"}}})]
    );
    assert_eq!(actions.len(), 1);

    // The document asked for at connect: its delta, if any.
    let get = "$aws/things/co2_monitor-01/shadow/name/config/get/accepted";
    assert!(m.handle_message(
        get,
        br#"{"state": {"desired": {"sample_rate_seconds": 5}, "delta": {"sample_rate_seconds": 5}}}"#,
        Phase::Idle
    ));
    assert!(matches!(drain(&mut m).as_slice(), [CommandAction::PersistConfig { .. }]));
    assert!(m.handle_message(
        get,
        br#"{"state": {"desired": {"log_level": "debug"}, "reported": {"log_level": "debug"}}}"#,
        Phase::Idle
    ));
    assert!(drain(&mut m).is_empty(), "in sync: nothing to do");

    // Not JSON, or no state: ignored.
    assert!(m.handle_message(delta, b"{oops", Phase::Idle));
    assert!(m.handle_message(delta, br#"{"version": 1}"#, Phase::Idle));
    assert!(drain(&mut m).is_empty());
}

#[test]
fn other_topics_are_left_alone() {
    let mut m = machine();
    for topic in [
        "$aws/commands/things/co2_monitor-02/executions/e-1/request/json",
        "$aws/commands/things/co2_monitor-01/executions/e-1/response/accepted/json",
        "$aws/things/co2_monitor-01/jobs/notify-next",
        "$aws/things/co2_monitor-01/shadow/update/delta",
        "$aws/things/co2_monitor-01/shadow/name/other/update/delta",
        "$aws/things/co2_monitor-02/shadow/name/config/update/delta",
    ] {
        assert!(!m.handle_message(topic, br#"{"command":"reboot"}"#, Phase::Idle), "{topic}");
    }
    assert!(drain(&mut m).is_empty());
    // An execution id outside AWS's alphabet is not answered.
    assert!(request(&mut m, "e.1", r#"{"command":"reboot"}"#, Phase::Idle).is_empty());
    assert!(!valid_execution_id(&"e".repeat(65)));
}

#[test]
fn telemetry_goes_out_at_the_configured_rate_with_health_in_the_shadow() {
    let mut m = machine();
    m.handle(CommandEvent::Tick { now_ms: 0 });
    assert!(drain(&mut m).is_empty(), "nothing while disconnected");
    m.handle(CommandEvent::Connected { now_ms: 1_000 });
    assert_eq!(drain(&mut m).last(), Some(&CommandAction::Sample));
    let metrics = json!({"co2_ppm": 612, "temperature_c": 21.5});
    let Value::Object(map) = metrics.clone() else { unreachable!() };
    m.handle(CommandEvent::Sampled { metrics: map.clone(), health: Health::ok() });
    let actions = drain(&mut m);
    assert_eq!(published_on(&actions, "dt/ota/co2_monitor-01/telemetry"), std::slice::from_ref(&metrics));
    assert_eq!(
        published_on(&actions, "$aws/things/co2_monitor-01/shadow/update"),
        [json!({"state": {"reported": {"health": {"status": "ok", "message": ""}, "telemetry": metrics}}})]
    );
    m.handle(CommandEvent::Tick { now_ms: 60_999 });
    assert!(drain(&mut m).is_empty(), "not due before 60 s");
    m.handle(CommandEvent::Tick { now_ms: 61_000 });
    assert_eq!(drain(&mut m), [CommandAction::Sample]);
    m.handle(CommandEvent::Disconnected);
    m.handle(CommandEvent::Tick { now_ms: 200_000 });
    assert!(drain(&mut m).is_empty());

    // Oversized telemetry is not sent; the shadow says why.
    let big: serde_json::Map<String, Value> = (0..200).map(|i| (format!("metric_{i:03}"), json!(i))).collect();
    m.handle(CommandEvent::Sampled { metrics: big, health: Health::ok() });
    let actions = drain(&mut m);
    assert!(published_on(&actions, "dt/ota/co2_monitor-01/telemetry").is_empty());
    let shadow = published_on(&actions, "$aws/things/co2_monitor-01/shadow/update");
    assert_eq!(shadow[0]["state"]["reported"]["health"]["status"], "warning");
    assert!(shadow[0]["state"]["reported"].get("telemetry").is_none());
}

#[test]
fn payloads_are_spelled_as_the_commands_api_spells_them() {
    let r = CommandResponse::new(ExecutionStatus::Rejected, "UPDATE_IN_PROGRESS", "later");
    assert_eq!(
        serde_json::from_str::<Value>(&r.to_payload()).unwrap(),
        json!({"status": "REJECTED", "statusReason": {"reasonCode": "UPDATE_IN_PROGRESS", "reasonDescription": "later"}})
    );
    let plain = CommandResponse { status: ExecutionStatus::Succeeded, status_reason: None, result: None };
    assert_eq!(plain.to_payload(), r#"{"status":"SUCCEEDED"}"#);
    assert_eq!(CommandResponse::parse(br#"{"status":"TIMED_OUT"}"#).unwrap().status, ExecutionStatus::TimedOut);
    for s in
        [ExecutionStatus::InProgress, ExecutionStatus::Succeeded, ExecutionStatus::Failed, ExecutionStatus::Rejected]
    {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
    assert!(!ExecutionStatus::InProgress.is_terminal() && ExecutionStatus::TimedOut.is_terminal());
    let req = CommandRequest { command: "reboot".into(), parameters: Map::new() };
    assert_eq!(CommandRequest::parse(req.to_payload().as_bytes()).unwrap(), req);
    // Every reason code this machine sends matches AWS's pattern.
    for code in [
        "UPDATE_IN_PROGRESS",
        "UNSUPPORTED_COMMAND",
        "INVALID_REQUEST",
        "UNKNOWN_SETTING",
        "WRONG_TYPE",
        "OUT_OF_BOUNDS",
        "NOT_ALLOWED",
        "STORAGE_ERROR",
        "ACTION_FAILED",
        "CONFIG_APPLIED",
        "REBOOTING",
    ] {
        assert!(code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-'));
    }
}

#[test]
fn stored_config_the_firmware_no_longer_accepts_falls_back_to_defaults() {
    let thing = ThingName::parse(THING).unwrap();
    let stored = br#"{"sample_rate_seconds": 99999, "log_level": "warn", "gone": 1}"#;
    let m = CommandMachine::new(&thing, Capabilities::demo(true), Some(stored));
    assert_eq!(m.config(), &json!({"sample_rate_seconds": 60, "log_level": "warn"}).as_object().unwrap().clone());
    let m = CommandMachine::new(&thing, Capabilities::demo(true), Some(b"torn"));
    assert_eq!(m.config(), &Capabilities::demo(true).defaults());
}
