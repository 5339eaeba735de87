//! `--events json`: a run's events as JSON lines on stderr, which tests and benchmarks read
//! instead of the prose.

mod common;

use common::*;

fn kinds(events: &[serde_json::Value]) -> Vec<&str> {
    events.iter().map(|e| e["didx_event"].as_str().unwrap()).collect()
}

/// Every phase of a run comes as an event, in order, naming the one environment throughout,
/// with the commands' exit codes and milliseconds that never go back.
#[test]
fn a_run_s_events_name_its_environment_and_phases_in_order() {
    let run = didx(&["--events", "json", "--clean", "anycase", "true", "false"]);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 1, "{}", run.show());
        let events = run.events();
        let k = kinds(&events);
        let want = [
            "starting",
            "server_started",
            "client_started",
            "ready",
            "step_started",
            "step_ended",
            "step_started",
            "step_ended",
            "commands_done",
            "removing",
            "removed",
        ];
        let mut at = 0;
        for w in want {
            at += k[at..].iter().position(|x| *x == w).unwrap_or_else(|| panic!("no {w} after {:?} in {k:?}", &k[..at])) + 1;
        }
        let id = run.env_id().expect("an id in the starting event");
        let starting = &events[k.iter().position(|x| *x == "starting").unwrap()];
        assert!(starting["server"].as_str().unwrap().contains(&format!("dind_{id}_server_")), "{starting}");
        assert_eq!(starting["pooled"], false);
        let removing = &events[k.iter().position(|x| *x == "removing").unwrap()];
        assert_eq!(removing["id"], id.as_str());
        let ended: Vec<i64> = events.iter().filter(|e| e["didx_event"] == "step_ended").map(|e| e["code"].as_i64().unwrap()).collect();
        assert_eq!(ended, [0, 1]);
        let ms: Vec<u64> = events.iter().map(|e| e["ms"].as_u64().unwrap()).collect();
        assert!(ms.windows(2).all(|w| w[0] <= w[1]), "{ms:?}");
        // The prose is still there for people.
        assert!(run.stderr.contains("[2/2] false"), "{}", run.show());
        assert_gone(&id);
    });
}

/// An unknown format is a usage error naming the formats, and nothing is created.
#[test]
fn an_unknown_event_format_is_refused_before_anything_starts() {
    let child =
        didx_cmd(&["--events", "xml", "true"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let run = from_output(child.wait_with_output().unwrap());
    assert_eq!(run.code, 2, "{}", run.show());
    let said: Vec<&str> = run.stderr.lines().filter(|l| l.contains("--events")).collect();
    assert_eq!(said.len(), 1, "{}", run.show());
    assert!(said[0].contains("json"), "{}", run.show());
    assert!(run.env_id().is_none(), "{}", run.show());
    assert!(made_by(pid).is_empty(), "created {:?}", made_by(pid));
}
