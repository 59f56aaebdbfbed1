//! Places API (New) answers converted to the legacy Nearby Search shape, so
//! that clients see one format whichever API the server uses (docs/spec.md
//! section 4). Pure; [`super::reply`] decides what a reply is.

use serde_json::{Map, Value};

/// Converts a Places API (New) `searchNearby` answer to the legacy Nearby Search shape.
pub fn new_to_legacy(v: &Value) -> Value {
    let results: Vec<Value> = match v.get("places") {
        Some(Value::Array(places)) => places.iter().map(place_to_result).collect(),
        _ => Vec::new(),
    };
    let status = if results.is_empty() {
        "ZERO_RESULTS"
    } else {
        "OK"
    };
    let mut answer = Map::new();
    answer.insert("html_attributions".into(), Value::Array(Vec::new()));
    answer.insert("results".into(), Value::Array(results));
    answer.insert("status".into(), status.into());
    Value::Object(answer)
}

/// One New API place as a legacy result, keys in the legacy (alphabetical) order.
fn place_to_result(place: &Value) -> Value {
    let mut result = Map::new();
    let mut copy = |to: &str, from: Option<&Value>| {
        if let Some(value) = from {
            result.insert(to.into(), value.clone());
        }
    };
    copy("business_status", place.get("businessStatus"));
    let mut location = Map::new();
    if let Some(loc) = place.get("location") {
        // Cloned, not converted: the number text stays Google's.
        for (to, from) in [("lat", "latitude"), ("lng", "longitude")] {
            if let Some(value) = loc.get(from) {
                location.insert(to.into(), value.clone());
            }
        }
    }
    let geometry = (!location.is_empty()).then(|| {
        let mut geometry = Map::new();
        geometry.insert("location".into(), Value::Object(location));
        Value::Object(geometry)
    });
    copy("geometry", geometry.as_ref());
    let name = match place.get("displayName") {
        Some(Value::Object(display)) => display.get("text"),
        other => other.filter(|v| v.is_string()),
    };
    copy("name", name);
    copy("place_id", place.get("id"));
    copy("rating", place.get("rating"));
    copy("types", place.get("types"));
    copy("user_ratings_total", place.get("userRatingCount"));
    copy(
        "vicinity",
        place
            .get("shortFormattedAddress")
            .or_else(|| place.get("formattedAddress")),
    );
    Value::Object(result)
}
