//! WHATSAT end to end: the herd's HTTPS client against `places-offline`, a
//! real TLS server with the development CA, in both Places APIs, with its
//! failure modes.

mod common;

use common::*;

const UCLA: &str = "+34.068930-118.445127";
const KEY: &str = "test-key-7d1f0c";

struct Setup {
    dir: TempDir,
    places: PlacesOffline,
    server: Server,
}

/// places-offline with `places_args`, and one server pointed at it.
fn setup(test: &str, places_args: &[&str], server_args: &[&str], key: Option<&str>) -> Setup {
    let dir = TempDir::new(test);
    let places = PlacesOffline::start(&dir, places_args);
    let (config, port) = lone_herd_file(&dir);
    let log = dir.path("Riley.log");
    let new_api = server_args.windows(2).any(|w| w == ["--places-api", "new"]);
    let url = if new_api {
        places.new_url()
    } else {
        places.legacy_url()
    };
    let mut args: Vec<String> = vec![
        "-c".into(),
        config.display().to_string(),
        "-l".into(),
        log.display().to_string(),
        "--places-url".into(),
        url,
        "--places-ca".into(),
        dev_ca(),
    ];
    args.extend(server_args.iter().map(|s| s.to_string()));
    args.push("Riley".into());
    let env: Vec<(&str, &str)> = key.map(|k| ("PLACES_API_KEY", k)).into_iter().collect();
    let server = start_server_env("Riley", &args, &env, ([127, 0, 0, 1], port).into(), &log);
    Setup {
        dir,
        places,
        server,
    }
}

/// Reports kiwi at UCLA, then asks WHATSAT; returns (AT line, whole answer).
fn ask(server: &Server, radius: &str, bound: u32) -> (String, String) {
    let mut c = server.connect();
    c.send(format!("IAMAT kiwi {UCLA} 1621464827.959498503\n").as_bytes());
    let at = c.read_line();
    c.send(format!("WHATSAT kiwi {radius} {bound}\n").as_bytes());
    (at, c.read_until_blank_line())
}

/// The JSON of an answer, parsed.
fn json_of(answer: &str) -> serde_json::Value {
    let body = answer.split_once('\n').expect("an AT line").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn whatsat_answers_with_the_at_line_and_nearby_places_in_googles_style() {
    let s = setup("golden", &[], &[], Some(KEY));
    let (at, answer) = ask(&s.server, "10", 3);
    let (first, json) = answer.split_once('\n').unwrap();
    assert_eq!(first, at);
    // The golden answer: Google's text style, byte for byte.
    let golden =
        std::fs::read_to_string(repo_root().join("tests/data/whatsat_ucla_10km_3.txt")).unwrap();
    assert_eq!(json, golden);
    assert!(json.ends_with("}\n\n"));
    // The squeeze rule: no blank line inside, exactly one at the end.
    assert!(!json.trim_end_matches('\n').contains("\n\n"));
}

#[test]
fn the_bound_cuts_the_results() {
    let s = setup("bound", &[], &[], Some(KEY));
    for bound in [1, 5, 20] {
        let (_, answer) = ask(&s.server, "50", bound);
        let v = json_of(&answer);
        assert_eq!(
            v["results"].as_array().unwrap().len(),
            bound as usize,
            "{answer}"
        );
        assert_eq!(v["status"], "OK");
    }
}

#[test]
fn places_receives_the_location_and_the_radius_in_metres() {
    let s = setup("received", &[], &[], Some(KEY));
    ask(&s.server, "1.5", 2);
    wait_for("places-offline's log", || {
        let log = s.places.log_text();
        (log.contains("?location=34.068930,-118.445127&radius=1500&key=***")
            && log.contains("radius_m=1500"))
        .then_some(())
    });
}

#[test]
fn the_key_is_sent_to_places_but_never_logged() {
    let s = setup("key", &[], &[], Some(KEY));
    let (_, answer) = ask(&s.server, "10", 1);
    assert_eq!(json_of(&answer)["status"], "OK");
    assert!(!answer.contains(KEY));
    let log = s.server.log_text();
    assert!(log.contains("key=***"), "{log}");
    assert!(!log.contains(KEY), "{log}");
    assert!(!s.server.stderr_text().contains(KEY));
}

#[test]
fn without_a_key_places_denies_and_the_denial_is_passed_through() {
    let s = setup("nokey", &[], &[], None);
    let (_, answer) = ask(&s.server, "10", 1);
    let v = json_of(&answer);
    assert_eq!(v["status"], "REQUEST_DENIED", "{answer}");
    assert!(v["error_message"].is_string());
}

#[test]
fn the_answer_goes_out_in_one_write() {
    let s = setup("onewrite", &[], &[], Some(KEY));
    let mut c = s.server.connect();
    c.send(format!("IAMAT kiwi {UCLA} 1\n").as_bytes());
    c.read_line();
    let before = data_segments_received(&c.stream);
    c.send(b"WHATSAT kiwi 50 20\n");
    let text = c.read_until_blank_line();
    assert_eq!(json_of(&text)["results"].as_array().unwrap().len(), 20);
    // The AT line and the JSON arrived in one segment: one write, counted
    // by the kernel at the socket.
    assert_eq!(
        data_segments_received(&c.stream) - before,
        1,
        "{} bytes",
        text.len()
    );
}

#[test]
fn the_new_api_is_converted_to_the_legacy_shape() {
    let s = setup("newapi", &[], &["--places-api", "new"], Some(KEY));
    let (at, answer) = ask(&s.server, "10", 4);
    assert!(answer.starts_with(&at));
    let v = json_of(&answer);
    assert_eq!(v["status"], "OK");
    assert_eq!(v["html_attributions"], serde_json::json!([]));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    let first = &results[0];
    assert!(first["geometry"]["location"]["lat"].is_number(), "{answer}");
    assert!(
        first["name"].is_string() && first["place_id"].is_string(),
        "{answer}"
    );
    assert!(first["types"].is_array(), "{answer}");
    // Same places as the legacy API gives, in the same order.
    let legacy = setup("newapi-legacy", &[], &[], Some(KEY));
    let (_, legacy_answer) = ask(&legacy.server, "10", 4);
    assert_eq!(names(&v), names(&json_of(&legacy_answer)));
    let log = s.places.log_text();
    assert!(log.contains("POST /v1/places:searchNearby"), "{log}");
}

#[test]
fn connections_are_kept_alive_and_reused() {
    let s = setup("reuse", &[], &[], Some(KEY));
    for _ in 0..5 {
        let (_, answer) = ask(&s.server, "10", 1);
        assert_eq!(json_of(&answer)["status"], "OK");
    }
    let log = s.server.log_text();
    assert_eq!(count(&log, "TLS handshake done"), 1, "{log}");
    assert_eq!(count(&log, "reused for places#"), 4, "{log}");
}

/// Every failure keeps the reply's shape: AT line, error JSON, blank line.
fn assert_error_answer(server: &Server, needle: &str) {
    let (at, answer) = ask(server, "10", 3);
    let (first, json) = answer.split_once('\n').unwrap();
    assert_eq!(first, at);
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["status"], "UNKNOWN_ERROR", "{answer}");
    assert_eq!(v["results"], serde_json::json!([]));
    assert_eq!(v["html_attributions"], serde_json::json!([]));
    let message = v["error_message"].as_str().unwrap();
    assert!(message.contains(needle), "{message}");
    let log = server.log_text();
    assert!(log.contains("failed:") && log.contains(needle), "{log}");
    // The server goes on serving.
    let mut c = server.connect();
    c.send(b"IAMAT after +1-1 1\n");
    assert!(c.read_line().starts_with("AT Riley "));
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let tls = repo_root().join("data/tls");
    let cert = tls.join("untrusted.pem").display().to_string();
    let key = tls.join("untrusted.key").display().to_string();
    let s = setup(
        "untrusted",
        &["--cert", &cert, "--key", &key],
        &[],
        Some(KEY),
    );
    assert_error_answer(&s.server, "certificate");
}

#[test]
fn an_http_500_gives_the_error_answer() {
    let s = setup("http500", &["--fail", "http500"], &[], Some(KEY));
    assert_error_answer(&s.server, "500");
}

#[test]
fn a_connection_closed_without_an_answer_gives_the_error_answer() {
    let s = setup("closed", &["--fail", "close"], &[], Some(KEY));
    assert_error_answer(&s.server, "HTTP");
}

#[test]
fn a_body_that_is_not_json_gives_the_error_answer() {
    let s = setup("notjson", &["--fail", "not-json"], &[], Some(KEY));
    assert_error_answer(&s.server, "JSON");
}

#[test]
fn an_unreachable_places_gives_the_error_answer() {
    // The harness's herds point Places at a closed local port.
    let mut herd = Herd::new("unreachable", &[("Riley", &[])]);
    herd.start_named("Riley");
    assert_error_answer(herd.server("Riley"), "connect");
}

#[test]
fn a_chunked_body_is_read_whole() {
    let s = setup("chunked", &["--chunked"], &[], Some(KEY));
    let (_, answer) = ask(&s.server, "10", 3);
    assert_eq!(json_of(&answer)["results"].as_array().unwrap().len(), 3);
    let golden =
        std::fs::read_to_string(repo_root().join("tests/data/whatsat_ucla_10km_3.txt")).unwrap();
    assert!(answer.ends_with(&golden));
}

#[test]
fn a_slow_places_does_not_hold_up_other_clients() {
    let s = setup("slow", &["--latency-ms", "3000"], &[], Some(KEY));
    let mut asker = s.server.connect();
    asker.send(format!("IAMAT kiwi {UCLA} 1\n").as_bytes());
    asker.read_line();
    asker.send(b"WHATSAT kiwi 10 1\n");
    // While that answer is pending, other clients are answered.
    for i in 0..20 {
        let mut other = s.server.connect();
        other.send(format!("IAMAT other{i} +1-1 1\n").as_bytes());
        assert!(other.read_line().starts_with("AT Riley "));
    }
    let log = s.server.log_text();
    assert!(
        !log.contains("answered:"),
        "Places answered before the others: {log}"
    );
    // And the slow answer still comes.
    let answer = asker.read_until_blank_line();
    assert_eq!(json_of(&answer)["status"], "OK");
}

#[test]
fn a_client_that_leaves_before_its_answer_does_no_harm() {
    let s = setup("leaver", &["--latency-ms", "300"], &[], Some(KEY));
    {
        let mut c = s.server.connect();
        c.send(format!("IAMAT kiwi {UCLA} 1\nWHATSAT kiwi 10 1\n").as_bytes());
        // Leave abruptly: closing with the AT reply unread makes the kernel
        // send a reset, not a half-close (which would still be answered).
        c.stream.set_read_timeout(None).unwrap();
        let mut peek = [0u8; 1];
        c.stream.peek(&mut peek).unwrap();
    }
    wait_for("the dropped answer", || {
        s.server
            .log_text()
            .contains("answer dropped: its client has gone")
            .then_some(())
    });
    // The connection it used is reused for the next client.
    let (_, answer) = ask(&s.server, "10", 1);
    assert_eq!(json_of(&answer)["status"], "OK");
    assert_eq!(count(&s.server.log_text(), "TLS handshake done"), 1);
    let _ = &s.dir;
}

#[test]
fn replies_keep_request_order_behind_a_waiting_whatsat() {
    let s = setup("order", &["--latency-ms", "200"], &[], Some(KEY));
    let mut c = s.server.connect();
    c.send(
        format!("IAMAT kiwi {UCLA} 1\nWHATSAT kiwi 10 1\nIAMAT later +1-1 2\nbogus\n").as_bytes(),
    );
    assert!(c.read_line().contains(" kiwi "));
    let answer = c.read_until_blank_line();
    assert_eq!(json_of(&answer)["status"], "OK");
    assert!(c.read_line().ends_with(" later +1-1 2"));
    assert_eq!(c.read_line(), "? bogus");
}

#[test]
fn a_reused_connection_closed_by_places_is_retried_once_on_a_fresh_one() {
    // Places closes a kept-alive connection as its second request arrives.
    let s = setup("retry", &["--drop-reused"], &[], Some(KEY));
    for _ in 0..3 {
        let (_, answer) = ask(&s.server, "10", 1);
        assert_eq!(json_of(&answer)["status"], "OK", "{answer}");
    }
    let log = s.server.log_text();
    assert_eq!(count(&log, "retried on a fresh connection"), 2, "{log}");
    assert_eq!(count(&log, "TLS handshake done"), 3, "{log}");
    wait_for("places-offline's drops", || {
        (count(&s.places.log_text(), "dropped a reused connection") == 2).then_some(())
    });
}

#[test]
fn without_keep_alive_every_request_opens_a_connection() {
    let s = setup("nokeepalive", &["--no-keep-alive"], &[], Some(KEY));
    for _ in 0..3 {
        let (_, answer) = ask(&s.server, "10", 1);
        assert_eq!(json_of(&answer)["status"], "OK");
    }
    let log = s.server.log_text();
    assert_eq!(count(&log, "TLS handshake done"), 3, "{log}");
    assert_eq!(count(&log, "reused for"), 0, "{log}");
}
