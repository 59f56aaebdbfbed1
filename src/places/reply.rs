//! From a Places HTTP answer to the JSON a WHATSAT reply carries.
//!
//! This module owns the reply pipeline ([`render_reply`]): deciding whether an
//! answer is a result, Google's own error, or a failure of ours; cutting the
//! results to the client's bound. Places API (New) answers are converted to
//! the legacy shape first ([`super::new_api`]), so clients see one format
//! whichever API the server uses. Printing is [`super::google_json`]'s job
//! (and, for legacy answers, [`super::reprint`]'s streaming fast path);
//! getting the bytes is [`super::http`]'s and the event loop's. Everything
//! here is pure.

use serde_json::{Map, Value};

use super::google_json::{error_json, squeeze, to_google_style};
use super::http::Api;
use super::new_api::new_to_legacy;
use super::reprint;

/// The JSON text for a WHATSAT reply (ends with `"\n\n"`) and what to log about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Google-style JSON, squeezed, ending with `"\n\n"`.
    pub json: String,
    /// The number of results sent, or why there are none (for the log; never holds a key).
    pub outcome: Result<usize, String>,
}

/// Turns a Places answer (status code and body) into the reply's JSON, results cut to `bound`.
pub fn render_reply(api: Api, status: u16, body: &[u8], bound: usize) -> Rendered {
    // A legacy answer is printed straight from its bytes when that gives the
    // same reply; the streaming printer says `None` wherever it might not.
    if api == Api::Legacy && (200..300).contains(&status) {
        if let Some(printed) = reprint::render_legacy(body, bound) {
            let outcome = legacy_outcome(
                printed.sent,
                printed.status.as_deref(),
                printed.error_message.as_deref(),
                status,
            );
            return Rendered {
                json: printed.json,
                outcome,
            };
        }
    }
    render_via_value(api, status, body, bound)
}

/// [`render_reply`] through a parsed `serde_json::Value`: every case, and the reference for the fast path.
pub(super) fn render_via_value(api: Api, status: u16, body: &[u8], bound: usize) -> Rendered {
    let http_ok = (200..300).contains(&status);
    let parsed = serde_json::from_slice::<Value>(body);
    // Both APIs' front ends answer some failures (a bad key, quota) with
    // `{"error": {...}}`, whatever the status code.
    if let Ok(v) = &parsed {
        if let Some(rendered) = google_error(v, status) {
            return rendered;
        }
    }
    match (api, parsed) {
        (Api::Legacy, Ok(Value::Object(answer))) if http_ok || is_legacy_error(&answer) => {
            legacy_reply(answer, bound, status)
        }
        (Api::New, Ok(Value::Object(answer))) if http_ok => match answer.get("places") {
            None | Some(Value::Array(_)) => match new_to_legacy(&Value::Object(answer)) {
                Value::Object(legacy) => legacy_reply(legacy, bound, status),
                // new_to_legacy always builds an object; this arm only keeps
                // the match total without a panic.
                _ => failure(
                    format!("Places answered HTTP {status} with an unusable answer"),
                    None,
                ),
            },
            Some(_) => failure(
                format!("Places answered HTTP {status} with places that are not a list"),
                None,
            ),
        },
        (_, Ok(_)) if http_ok => failure(
            format!("Places answered HTTP {status} with JSON that is not an object"),
            None,
        ),
        (_, Err(e)) if http_ok => failure(
            format!("Places answered HTTP {status} with a body that is not JSON"),
            Some(e.to_string()),
        ),
        _ => failure(format!("Places answered HTTP {status}"), None),
    }
}

/// A legacy answer (or a converted one): results cut to `bound`, printed, squeezed.
fn legacy_reply(mut answer: Map<String, Value>, bound: usize, http: u16) -> Rendered {
    let sent = match answer.get_mut("results") {
        Some(Value::Array(results)) => {
            results.truncate(bound);
            results.len()
        }
        _ => 0,
    };
    let outcome = legacy_outcome(
        sent,
        answer.get("status").and_then(Value::as_str),
        answer.get("error_message").and_then(Value::as_str),
        http,
    );
    Rendered {
        json: squeeze(&to_google_style(&Value::Object(answer))),
        outcome,
    }
}

/// What the log says of a legacy answer: results sent, or Google's status and message.
pub(super) fn legacy_outcome(
    sent: usize,
    status: Option<&str>,
    message: Option<&str>,
    http: u16,
) -> Result<usize, String> {
    match status {
        Some("OK" | "ZERO_RESULTS") => Ok(sent),
        Some(status) => Err(match message {
            Some(m) => format!("{status}: {m} (HTTP {http})"),
            None => format!("{status} (HTTP {http})"),
        }),
        None => Err(format!("Places answered HTTP {http} without a status")),
    }
}

/// Google's legacy error body: a `status` and an `error_message`.
fn is_legacy_error(answer: &Map<String, Value>) -> bool {
    answer.get("status").is_some_and(Value::is_string)
        && answer.get("error_message").is_some_and(Value::is_string)
}

/// `{"error": {"code", "message", "status"}}` (Google's API error) as a legacy error reply.
fn google_error(v: &Value, http: u16) -> Option<Rendered> {
    let error = v.get("error")?.as_object()?;
    let google_status = error.get("status").and_then(Value::as_str).unwrap_or("");
    let legacy_status = match google_status {
        "PERMISSION_DENIED" | "UNAUTHENTICATED" => "REQUEST_DENIED",
        "INVALID_ARGUMENT" => "INVALID_REQUEST",
        "RESOURCE_EXHAUSTED" => "OVER_QUERY_LIMIT",
        _ => "UNKNOWN_ERROR",
    };
    let fallback = format!("Places answered HTTP {http}");
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or(&fallback);
    Some(Rendered {
        json: error_json(message, legacy_status),
        outcome: Err(format!(
            "{legacy_status}: {message} (HTTP {http}, {})",
            if google_status.is_empty() {
                "no status"
            } else {
                google_status
            }
        )),
    })
}

/// Our own error reply: `message` goes to the client, `detail` only to the log.
fn failure(message: String, detail: Option<String>) -> Rendered {
    let json = error_json(&message, "UNKNOWN_ERROR");
    let outcome = Err(match detail {
        Some(d) => format!("UNKNOWN_ERROR: {message} ({d})"),
        None => format!("UNKNOWN_ERROR: {message}"),
    });
    Rendered { json, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(status: u16, body: &str, bound: usize) -> Rendered {
        checked(render_reply(Api::Legacy, status, body.as_bytes(), bound))
    }

    fn new(status: u16, body: &str, bound: usize) -> Rendered {
        checked(render_reply(Api::New, status, body.as_bytes(), bound))
    }

    /// Every reply, whatever the case, is one squeezed JSON object.
    fn checked(r: Rendered) -> Rendered {
        assert!(r.json.ends_with("}\n\n"), "{:?}", r.json);
        assert!(!r.json[..r.json.len() - 2].contains("\n\n"), "{:?}", r.json);
        let v: Value = serde_json::from_str(&r.json).expect("reply is JSON");
        assert!(v.is_object());
        r
    }

    fn error_text(message: &str, status: &str) -> String {
        format!(
            "{{\n   \"error_message\" : \"{message}\",\n   \"html_attributions\" : [],\n   \
             \"results\" : [],\n   \"status\" : \"{status}\"\n}}\n\n"
        )
    }

    #[test]
    fn legacy_answer_passes_through_cut_to_bound() {
        let body = r#"{"html_attributions":[],"results":[
            {"name":"A","rating":4.50,"types":["cafe","food"]},
            {"name":"B <b>","rating":3},
            {"name":"C"}],"status":"OK"}"#;
        let r = legacy(200, body, 2);
        assert_eq!(
            r.json,
            "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n         \
             \"name\" : \"A\",\n         \"rating\" : 4.50,\n         \
             \"types\" : [ \"cafe\", \"food\" ]\n      },\n      {\n         \
             \"name\" : \"B \\u003cb\\u003e\",\n         \"rating\" : 3\n      }\n   ],\n   \
             \"status\" : \"OK\"\n}\n\n"
        );
        assert_eq!(r.outcome, Ok(2));
        assert_eq!(legacy(200, body, 20).outcome, Ok(3));
    }

    #[test]
    fn legacy_golden_answer_is_unchanged_under_its_bound() {
        let body = include_str!("../../tests/data/legacy_nearby.json");
        let golden = include_str!("../../tests/data/legacy_nearby.google.txt");
        let r = legacy(200, body, 20);
        assert_eq!(r.json, golden);
        assert_eq!(r.outcome, Ok(3));
        let cut = legacy(200, body, 1);
        assert_eq!(cut.outcome, Ok(1));
        let v: Value = serde_json::from_str(&cut.json).unwrap();
        assert_eq!(v["results"].as_array().map(Vec::len), Some(1));
        // Everything but the results is kept, in Google's order.
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["html_attributions", "next_page_token", "results", "status"]
        );
    }

    #[test]
    fn legacy_zero_results() {
        let r = legacy(
            200,
            r#"{"html_attributions":[],"results":[],"status":"ZERO_RESULTS"}"#,
            5,
        );
        assert_eq!(
            r.json,
            "{\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"ZERO_RESULTS\"\n}\n\n"
        );
        assert_eq!(r.outcome, Ok(0));
    }

    #[test]
    fn legacy_google_errors_pass_through() {
        let body = r#"{"error_message":"The provided API key is invalid. ","html_attributions":[],"results":[],"status":"REQUEST_DENIED"}"#;
        let r = legacy(200, body, 5);
        assert_eq!(
            r.json,
            error_text("The provided API key is invalid. ", "REQUEST_DENIED")
        );
        assert_eq!(
            r.outcome,
            Err("REQUEST_DENIED: The provided API key is invalid.  (HTTP 200)".into())
        );
        // Also when the front end sends it with an error status.
        let r = legacy(403, body, 5);
        assert!(r.json.contains("\"status\" : \"REQUEST_DENIED\""));
        assert!(r.outcome.unwrap_err().starts_with("REQUEST_DENIED"));

        let r = legacy(
            200,
            r#"{"html_attributions":[],"results":[],"status":"OVER_QUERY_LIMIT"}"#,
            5,
        );
        assert_eq!(r.outcome, Err("OVER_QUERY_LIMIT (HTTP 200)".into()));
    }

    #[test]
    fn legacy_failures_become_unknown_error() {
        let r = legacy(500, "<html>Internal Server Error</html>", 5);
        assert_eq!(
            r.json,
            error_text("Places answered HTTP 500", "UNKNOWN_ERROR")
        );
        assert_eq!(
            r.outcome,
            Err("UNKNOWN_ERROR: Places answered HTTP 500".into())
        );

        // A JSON object without Google's error fields on an error status.
        let r = legacy(502, r#"{"results":[]}"#, 5);
        assert_eq!(
            r.json,
            error_text("Places answered HTTP 502", "UNKNOWN_ERROR")
        );

        let r = legacy(200, "<html>captive portal</html>", 5);
        assert_eq!(
            r.json,
            error_text(
                "Places answered HTTP 200 with a body that is not JSON",
                "UNKNOWN_ERROR"
            )
        );
        let log = r.outcome.unwrap_err();
        assert!(log.contains("not JSON (expected value"), "{log}");

        for body in ["", "{\"results\":", "{}garbage"] {
            assert!(legacy(200, body, 5).json.contains("not JSON"));
        }
        for body in ["[]", "\"OK\"", "42", "null"] {
            let r = legacy(200, body, 5);
            assert!(r.json.contains("JSON that is not an object"), "{body}");
            assert!(r.outcome.is_err());
        }
    }

    #[test]
    fn legacy_answer_without_status_is_sent_but_logged() {
        let r = legacy(200, r#"{"results":[{"name":"A"}]}"#, 5);
        assert!(r.json.contains("\"name\" : \"A\""));
        assert_eq!(
            r.outcome,
            Err("Places answered HTTP 200 without a status".into())
        );
    }

    const NEW_ANSWER: &str = r#"{"places":[
        {"id":"ChIJZQ9c8IW8woARN0gTXFiTqSU","types":["university","point_of_interest","establishment"],
         "formattedAddress":"Los Angeles, CA 90095, USA",
         "location":{"latitude":34.0689254,"longitude":-118.44518110000001},
         "rating":4.50,"userRatingCount":3172,"businessStatus":"OPERATIONAL",
         "displayName":{"text":"University of California, Los Angeles","languageCode":"en"},
         "shortFormattedAddress":"Los Angeles"},
        {"id":"p2","displayName":{"text":"Caf\u00e9 <Bruin>"},"formattedAddress":"308 Westwood Plaza, Los Angeles"},
        {"id":"p3"}]}"#;

    #[test]
    fn new_answer_in_the_legacy_shape() {
        let r = new(200, NEW_ANSWER, 20);
        let expected = r#"{
   "html_attributions" : [],
   "results" : [
      {
         "business_status" : "OPERATIONAL",
         "geometry" : {
            "location" : {
               "lat" : 34.0689254,
               "lng" : -118.44518110000001
            }
         },
         "name" : "University of California, Los Angeles",
         "place_id" : "ChIJZQ9c8IW8woARN0gTXFiTqSU",
         "rating" : 4.50,
         "types" : [ "university", "point_of_interest", "establishment" ],
         "user_ratings_total" : 3172,
         "vicinity" : "Los Angeles"
      },
      {
         "name" : "Café \u003cBruin\u003e",
         "place_id" : "p2",
         "vicinity" : "308 Westwood Plaza, Los Angeles"
      },
      {
         "place_id" : "p3"
      }
   ],
   "status" : "OK"
}

"#;
        assert_eq!(r.json, expected);
        assert_eq!(r.outcome, Ok(3));
    }

    #[test]
    fn new_answer_cut_to_bound() {
        let r = new(200, NEW_ANSWER, 2);
        assert_eq!(r.outcome, Ok(2));
        let v: Value = serde_json::from_str(&r.json).unwrap();
        assert_eq!(v["results"][1]["place_id"], "p2");
        assert_eq!(v["status"], "OK");
    }

    #[test]
    fn new_empty_answer_is_zero_results() {
        let expected = "{\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \
                        \"status\" : \"ZERO_RESULTS\"\n}\n\n";
        for body in ["{}", r#"{"places":[]}"#] {
            let r = new(200, body, 5);
            assert_eq!(r.json, expected);
            assert_eq!(r.outcome, Ok(0));
        }
    }

    #[test]
    fn new_errors_map_to_legacy_statuses() {
        let cases = [
            (403, "PERMISSION_DENIED", "REQUEST_DENIED"),
            (401, "UNAUTHENTICATED", "REQUEST_DENIED"),
            (400, "INVALID_ARGUMENT", "INVALID_REQUEST"),
            (429, "RESOURCE_EXHAUSTED", "OVER_QUERY_LIMIT"),
            (500, "INTERNAL", "UNKNOWN_ERROR"),
            (503, "UNAVAILABLE", "UNKNOWN_ERROR"),
        ];
        for (http, google, legacy_status) in cases {
            let body = format!(
                r#"{{"error":{{"code":{http},"message":"Something <went> wrong.","status":"{google}"}}}}"#
            );
            let r = new(http, &body, 5);
            assert_eq!(
                r.json,
                error_text("Something \\u003cwent\\u003e wrong.", legacy_status)
            );
            assert_eq!(
                r.outcome,
                Err(format!(
                    "{legacy_status}: Something <went> wrong. (HTTP {http}, {google})"
                ))
            );
        }
        // The legacy endpoint's front end can answer the same way.
        let r = legacy(
            403,
            r#"{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}"#,
            5,
        );
        assert_eq!(r.json, error_text("denied", "REQUEST_DENIED"));
        // An error object without message or status still gives a clear reply.
        let r = new(400, r#"{"error":{}}"#, 5);
        assert_eq!(
            r.json,
            error_text("Places answered HTTP 400", "UNKNOWN_ERROR")
        );
    }

    #[test]
    fn new_failures_become_unknown_error() {
        let r = new(502, "<html>Bad Gateway</html>", 5);
        assert_eq!(
            r.json,
            error_text("Places answered HTTP 502", "UNKNOWN_ERROR")
        );
        assert!(r.outcome.is_err());
        let r = new(200, "not json", 5);
        assert!(r.json.contains("with a body that is not JSON"));
        let r = new(200, "[1]", 5);
        assert!(r.json.contains("JSON that is not an object"));
        let r = new(200, r#"{"places":{"id":"x"}}"#, 5);
        assert_eq!(
            r.json,
            error_text(
                "Places answered HTTP 200 with places that are not a list",
                "UNKNOWN_ERROR"
            )
        );
        // A legacy-looking body is no answer from the New API.
        let r = new(404, r#"{"status":"NOT_FOUND","error_message":"x"}"#, 5);
        assert_eq!(
            r.json,
            error_text("Places answered HTTP 404", "UNKNOWN_ERROR")
        );
    }

    #[test]
    fn new_to_legacy_tolerates_odd_places() {
        let v: Value = serde_json::from_str(
            r#"{"places":[42, {"location":{"latitude":1.50}}, {"displayName":"Plain","location":{}}]}"#,
        )
        .unwrap();
        let legacy = new_to_legacy(&v);
        assert_eq!(
            to_google_style(&legacy),
            "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {},\n      {\n         \
             \"geometry\" : {\n            \"location\" : {\n               \"lat\" : 1.50\n            \
             }\n         }\n      },\n      {\n         \"name\" : \"Plain\"\n      }\n   ],\n   \
             \"status\" : \"OK\"\n}"
        );
        assert_eq!(new_to_legacy(&Value::Null)["status"], "ZERO_RESULTS");
    }
}
