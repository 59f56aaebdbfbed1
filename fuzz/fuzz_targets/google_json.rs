//! Arbitrary bytes as JSON, through Google's printer and the reply pipeline.
//!
//! - Whatever parses prints in Google's style as text that parses back to
//!   the same value and prints identically (print -> parse -> print is stable).
//! - `render_reply` never panics, for either API, any status and bound, and
//!   always yields one JSON object ending with the blank line that ends a
//!   WHATSAT reply, with no blank line before it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_herd::places::google_json::to_google_style;
use proxy_herd::places::http::Api;
use proxy_herd::places::reply::{render_reply, Rendered};
use serde_json::Value;

/// Statuses: mostly a success (the interesting path), and the edges around it.
const STATUSES: [u16; 12] = [200, 200, 200, 200, 200, 0, 100, 204, 299, 300, 403, 999];
const BOUNDS: [usize; 4] = [0, 1, 5, 20];

/// The reply is one object ending with the blank line, and none before it.
/// (Re-parsing it is left out: the print -> parse check above covers the
/// printer, and parsing under instrumentation costs most of a run.)
fn check(r: &Rendered, bound: usize) {
    assert!(r.json.starts_with('{'), "{:?}", r.json);
    assert!(r.json.ends_with("}\n\n"), "{:?}", r.json);
    assert!(!r.json[..r.json.len() - 2].contains("\n\n"), "{:?}", r.json);
    if let Ok(sent) = r.outcome {
        assert!(sent <= bound, "{sent} results for bound {bound}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let printed = to_google_style(&value);
        let reparsed: Value = serde_json::from_str(&printed)
            .unwrap_or_else(|e| panic!("printed text does not parse: {e}: {printed:?}"));
        assert_eq!(reparsed, value, "printing changed the value: {printed:?}");
        assert_eq!(to_google_style(&reparsed), printed);
    }
    // Status and bound from the input, so each input is one fixed case.
    let pick = data.iter().fold(data.len(), |h, &b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    let status = STATUSES[pick % STATUSES.len()];
    let bound = BOUNDS[(pick / STATUSES.len()) % BOUNDS.len()];
    for api in [Api::Legacy, Api::New] {
        check(&render_reply(api, status, data, bound), bound);
    }
});
