//! The Places API as pure functions: a parsed HTTP request in, a response
//! (status, body, and the facts the request log wants) out. Google's legacy
//! Nearby Search and Places API (New) `searchNearby`, in Google's shapes and
//! key order. No sockets here: the event loop is in [`super::server`], the
//! data in [`super::places`] and [`super::index`].
//!
//! Legacy answers, the hot path, are written as text: each place's result
//! object is spelled out by `write_legacy_place` (and kept by `Fragments`
//! after its first use), between a fixed head and tail. Everything else
//! (errors, the New API) is built as a `serde_json::Value` and printed by
//! the herd's own printer, which is also the reference the text path is
//! tested against, byte for byte.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::{json, Map, Number, Value};

use super::index::Grid;
use super::places::{Place, Places};
use proxy_herd::places::google_json::write_string_body;

/// At most this many places in any answer (Google's page size).
pub const MAX_RESULTS: usize = 20;
/// Google's upper bound on a Nearby Search radius, in metres.
pub const MAX_RADIUS_M: f64 = 50_000.0;

const ICON: &str = "https://maps.gstatic.com/mapfiles/place_api/icons/v1/png_71/geocode-71.png";
const NO_KEY: &str = "You must use an API key to authenticate each request to Google Maps \
    Platform APIs. For additional information, please refer to http://g.co/dev/maps-no-account";
const NO_KEY_NEW: &str = "Method doesn't allow unregistered callers (callers without established \
    identity). Please use API Key or other form of API consumer identity to call this API.";
const NO_FIELD_MASK: &str = "FieldMask is a required parameter. See \
    https://cloud.google.com/apis/docs/system-parameters on how to provide it.";

const JSON: &str = "application/json; charset=UTF-8";

// The legacy answer's text around its results, exactly as `print_json`
// prints `{"html_attributions": [], "results": [...], "status": ...}`: the
// answer is these plus the places' fragments joined by ",\n", so the hot
// path needs no `Value` (see `write_legacy_place`).
const LEGACY_HEAD: &str = "{\n   \"html_attributions\" : [],\n   \"results\" : [\n";
const LEGACY_TAIL: &str = "\n   ],\n   \"status\" : \"OK\"\n}\n";
const LEGACY_ZERO_RESULTS: &str = "{\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \
    \"status\" : \"ZERO_RESULTS\"\n}\n";
/// A typical place's fragment is 850 to 950 bytes; a longer name costs at
/// most one reallocation of the answer.
const FRAGMENT_GUESS: usize = 960;

/// The request as the HTTP layer parsed it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The request target: path and query.
    pub target: &'a str,
    /// Header names and values, as received.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body (`Content-Length` bytes).
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// What the request log records about an answered request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Facts {
    /// The location asked about, when it parsed.
    pub location: Option<(f64, f64)>,
    /// The radius in metres, when it parsed.
    pub radius_m: Option<f64>,
    /// How many places the answer holds.
    pub results: usize,
}

/// An HTTP response before framing.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header's value.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// What the log says about it.
    pub facts: Facts,
}

impl Response {
    fn json(status: u16, value: &Value, facts: Facts) -> Response {
        Response {
            status,
            content_type: JSON,
            body: print_json(value),
            facts,
        }
    }

    /// A short plain-text response.
    pub fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=UTF-8",
            body: format!("{text}\n").into_bytes(),
            facts: Facts::default(),
        }
    }
}

/// The one place JSON answers are turned into text.
pub fn print_json(value: &Value) -> Vec<u8> {
    // Google's own text style, from the same printer the herd uses.
    let mut text = proxy_herd::places::google_json::to_google_style(value);
    text.push('\n');
    text.into_bytes()
}

/// The places and their index: everything a query needs.
#[derive(Debug)]
pub struct Service {
    places: Places,
    grid: Grid,
    fragments: Fragments,
}

/// How many bytes of legacy result text [`Fragments`] may keep: about
/// 35,000 places' worth, a fifth of the gazetteer and far more than the
/// neighbourhoods a benchmark or a herd asks about.
const FRAGMENT_BUDGET: usize = 32 << 20;

/// Each place's legacy result text (what [`write_legacy_place`] writes),
/// kept from its first answer on, so a later answer copies it instead of
/// formatting four coordinates, an id and the strings again. Rendering every
/// place at start-up would take ~150 MB and longer than loading; filled on
/// use, the cache holds what clients ask about. It is bounded: once
/// `budget` is spent, other places are written afresh each time, so a
/// client sweeping the globe cannot grow memory past it.
struct Fragments {
    /// One slot per row of [`Places`]; 24 bytes each when empty.
    slots: Vec<OnceLock<Box<str>>>,
    /// Bytes that may still be cached.
    budget: AtomicUsize,
}

impl Fragments {
    fn new(rows: usize, budget: usize) -> Fragments {
        Fragments {
            slots: (0..rows).map(|_| OnceLock::new()).collect(),
            budget: AtomicUsize::new(budget),
        }
    }

    /// Appends row `row`'s result text to `out`, from the cache or written
    /// (and cached while the budget lasts). False if there is no such row.
    fn write(&self, out: &mut String, row: usize, places: &Places) -> bool {
        let slot = self.slots.get(row);
        if let Some(text) = slot.and_then(OnceLock::get) {
            out.push_str(text);
            return true;
        }
        let Some(place) = places.get(row) else {
            return false;
        };
        let start = out.len();
        write_legacy_place(out, &place);
        let len = out.len() - start;
        let affordable = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(len))
            .is_ok();
        if let (Some(slot), true) = (slot, affordable) {
            // Another thread may have filled it first; the text is the same.
            let _ = slot.set(out[start..].into());
        }
        true
    }
}

impl fmt::Debug for Fragments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.slots.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("Fragments")
            .field("rows", &self.slots.len())
            .field("cached", &cached)
            .field("budget", &self.budget.load(Ordering::Relaxed))
            .finish()
    }
}

impl Service {
    /// Indexes the places.
    pub fn new(places: Places) -> Service {
        let grid = Grid::build(&places.coordinates());
        let fragments = Fragments::new(places.len(), FRAGMENT_BUDGET);
        Service {
            places,
            grid,
            fragments,
        }
    }

    /// How many places are loaded.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// Whether no place is loaded.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// The places within `radius_m` of (lat, lng), nearest first, at most `limit`.
    pub fn nearby(&self, lat: f64, lng: f64, radius_m: f64, limit: usize) -> Vec<Place<'_>> {
        self.grid
            .nearby(lat, lng, radius_m, limit)
            .iter()
            .filter_map(|hit| self.places.get(hit.index as usize))
            .collect()
    }

    /// Answers one request.
    pub fn handle(&self, req: &Request) -> Response {
        let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
        let params = parse_query(query);
        if path.ends_with("/nearbysearch/json") {
            if req.method != "GET" {
                return Response::text(405, "Method Not Allowed");
            }
            self.legacy(&params)
        } else if path.ends_with("/places:searchNearby") {
            if req.method != "POST" {
                return Response::text(405, "Method Not Allowed");
            }
            self.search_nearby(req, &params)
        } else {
            Response::text(404, "Not Found")
        }
    }

    /// Legacy Nearby Search: `GET .../nearbysearch/json?location=LAT,LNG&radius=M&key=K`.
    fn legacy(&self, params: &[Param]) -> Response {
        let get = |name: &str| param(params, name);
        let location = get("location").and_then(parse_location);
        let radius_m = get("radius").and_then(|r| parse_radius(r.trim()));
        let mut facts = Facts {
            location,
            radius_m,
            results: 0,
        };
        // Google checks the key before anything else.
        if get("key").is_none_or(str::is_empty) {
            return legacy_error("REQUEST_DENIED", NO_KEY, facts);
        }
        let Some((lat, lng)) = location else {
            return legacy_error(
                "INVALID_REQUEST",
                "Invalid request. Invalid 'location' parameter.",
                facts,
            );
        };
        let Some(radius_m) = radius_m else {
            return legacy_error(
                "INVALID_REQUEST",
                "Invalid request. Invalid 'radius' parameter: it must be > 0 and <= 50000.",
                facts,
            );
        };
        let hits = self.grid.nearby(lat, lng, radius_m, MAX_RESULTS);
        let mut body = String::with_capacity(
            LEGACY_HEAD.len() + hits.len() * (FRAGMENT_GUESS + 2) + LEGACY_TAIL.len(),
        );
        body.push_str(LEGACY_HEAD);
        for hit in &hits {
            let mark = body.len();
            if facts.results > 0 {
                body.push_str(",\n");
            }
            if self
                .fragments
                .write(&mut body, hit.index as usize, &self.places)
            {
                facts.results += 1;
            } else {
                body.truncate(mark);
            }
        }
        if facts.results == 0 {
            body.clear();
            body.push_str(LEGACY_ZERO_RESULTS);
        } else {
            body.push_str(LEGACY_TAIL);
        }
        Response {
            status: 200,
            content_type: JSON,
            body: body.into_bytes(),
            facts,
        }
    }

    /// The legacy answer as it was built before `write_legacy_place`:
    /// through a `Value` and the herd's printer. The reference the tests
    /// hold the text path to, byte for byte.
    #[cfg(test)]
    fn legacy_reference(&self, lat: f64, lng: f64, radius_m: f64) -> Vec<u8> {
        let results: Vec<Value> = self
            .nearby(lat, lng, radius_m, MAX_RESULTS)
            .iter()
            .map(legacy_place)
            .collect();
        let status = if results.is_empty() {
            "ZERO_RESULTS"
        } else {
            "OK"
        };
        print_json(&json!({"html_attributions": [], "results": results, "status": status}))
    }

    /// Places API (New): `POST .../v1/places:searchNearby`.
    fn search_nearby(&self, req: &Request, params: &[Param]) -> Response {
        let key = req.header("x-goog-api-key").or(param(params, "key"));
        if key.is_none_or(str::is_empty) {
            return new_error(403, "PERMISSION_DENIED", NO_KEY_NEW, Facts::default());
        }
        let body: Value = match serde_json::from_slice(req.body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return new_error(
                    400,
                    "INVALID_ARGUMENT",
                    "Invalid JSON payload received. Expected an object.",
                    Facts::default(),
                )
            }
            Err(e) => {
                let message = format!("Invalid JSON payload received. {e}");
                return new_error(400, "INVALID_ARGUMENT", &message, Facts::default());
            }
        };
        let circle = &body["locationRestriction"]["circle"];
        let lat = circle["center"]["latitude"].as_f64();
        let lng = circle["center"]["longitude"].as_f64();
        let location = lat.zip(lng).filter(|&(lat, lng)| valid_lat_lng(lat, lng));
        let radius_m = circle["radius"].as_f64().filter(|&r| valid_radius(r));
        let mut facts = Facts {
            location,
            radius_m,
            results: 0,
        };
        let invalid = |message: &str| new_error(400, "INVALID_ARGUMENT", message, facts);
        let Some(mask) = req
            .header("x-goog-fieldmask")
            .or(param(params, "$fields"))
            .or(param(params, "fields"))
            .filter(|m| !m.trim().is_empty())
        else {
            return invalid(NO_FIELD_MASK);
        };
        let Some((lat, lng)) = location else {
            return invalid("locationRestriction.circle.center is missing or out of range.");
        };
        let Some(radius_m) = radius_m else {
            return invalid("locationRestriction.circle.radius must be > 0 and <= 50000.0.");
        };
        let limit = match &body["maxResultCount"] {
            Value::Null => MAX_RESULTS,
            Value::Number(n) => match n.as_u64() {
                Some(n @ 1..=20) => n as usize,
                _ => return invalid("maxResultCount must be between 1 and 20."),
            },
            _ => return invalid("maxResultCount must be between 1 and 20."),
        };
        let fields = FieldMask::parse(mask);
        let places: Vec<Value> = self
            .nearby(lat, lng, radius_m, limit)
            .iter()
            .map(|p| new_place(p, &fields))
            .collect();
        facts.results = places.len();
        // Google leaves out an empty list entirely.
        let body = if places.is_empty() {
            json!({})
        } else {
            json!({ "places": places })
        };
        Response::json(200, &body, facts)
    }
}

fn legacy_error(status: &str, message: &str, facts: Facts) -> Response {
    let body = json!({
        "error_message": message,
        "html_attributions": [],
        "results": [],
        "status": status,
    });
    Response::json(200, &body, facts)
}

fn new_error(code: u16, status: &str, message: &str, facts: Facts) -> Response {
    let body = json!({"error": {"code": code, "message": message, "status": status}});
    Response::json(code, &body, facts)
}

fn param<'a>(params: &'a [Param], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_ref())
}

fn valid_lat_lng(lat: f64, lng: f64) -> bool {
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng)
}

fn valid_radius(r: f64) -> bool {
    r > 0.0 && r <= MAX_RADIUS_M
}

/// `LAT,LNG` in decimal degrees.
pub fn parse_location(text: &str) -> Option<(f64, f64)> {
    let (lat, lng) = text.split_once(',')?;
    let lat: f64 = lat.trim().parse().ok()?;
    let lng: f64 = lng.trim().parse().ok()?;
    valid_lat_lng(lat, lng).then_some((lat, lng))
}

/// A radius in metres: > 0 and <= 50000.
pub fn parse_radius(text: &str) -> Option<f64> {
    text.parse().ok().filter(|&r| valid_radius(r))
}

/// A decoded query parameter: name and value, borrowed from the target
/// unless decoding changed them.
pub type Param<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Splits a query string into decoded name/value pairs (`+` is a space).
pub fn parse_query(query: &str) -> Vec<Param<'_>> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> Cow<'_, str> {
    // Most parameters hold nothing to decode: no copy for them.
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let pair = bytes
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .zip(bytes.get(i + 2).copied().and_then(hex));
                match pair {
                    Some((hi, lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    // A stray '%' stands for itself, as browsers treat it.
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A number exactly as the data file wrote it (no float round trip).
fn number_text(text: &str, fallback: f64) -> Value {
    Number::from_str(text)
        .ok()
        .or_else(|| Number::from_f64(fallback))
        .map_or(Value::Null, Value::Number)
}

/// A computed coordinate, printed like Google's (at most 7 decimals).
#[cfg(test)]
fn coordinate(x: f64) -> Value {
    let text = format!("{x:.7}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    number_text(text, x)
}

/// A deterministic, Google-looking place id: `ChIJ` + base64url("GeoNames" + id).
pub fn place_id(geonameid: u32) -> String {
    let mut out = String::with_capacity(20);
    write_place_id(&mut out, geonameid);
    out
}

fn write_place_id(out: &mut String, geonameid: u32) {
    let mut raw = *b"GeoNames\0\0\0\0";
    raw[8..].copy_from_slice(&geonameid.to_be_bytes());
    out.push_str("ChIJ");
    write_base64url(out, &raw);
}

#[cfg(test)]
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::new();
    write_base64url(&mut out, bytes);
    out
}

fn write_base64url(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
}

/// The admin1 code when it reads as an abbreviation (US states, GB nations);
/// elsewhere GeoNames uses numbers that mean nothing to a reader.
fn region<'a>(place: &Place<'a>) -> Option<&'a str> {
    let a = place.admin1;
    (!a.is_empty() && a.bytes().all(|b| b.is_ascii_alphabetic())).then_some(a)
}

#[cfg(test)]
fn vicinity(place: &Place) -> String {
    match region(place) {
        Some(region) => format!("{region}, {}", place.country),
        None => place.country.to_string(),
    }
}

/// A locality's viewport half-sizes in degrees (latitude, longitude): it
/// grows with the population, about 2 km across for a village, up to 80 km
/// for a metropolis.
fn viewport_half(place: &Place) -> (f64, f64) {
    let half_km = (2.0 + (place.population as f64).sqrt() / 50.0).min(40.0);
    let dlat = half_km / 111.195;
    let dlng = dlat / place.lat.to_radians().cos().max(0.01);
    (dlat, dlng)
}

/// Writes `place`'s legacy result object exactly as `print_json` prints it
/// as an element of `"results"`: at nesting depth 2 (six spaces before its
/// brace, nine before its keys), with nothing after its closing brace. The
/// pieces are the text `legacy_place` and the printer make, spelled out so
/// that an answer costs string copies instead of a `Value` per place; the
/// tests compare the two for every place in the data file.
fn write_legacy_place(out: &mut String, place: &Place) {
    let (dlat, dlng) = viewport_half(place);
    out.push_str(concat!(
        "      {\n",
        "         \"business_status\" : \"OPERATIONAL\",\n",
        "         \"geometry\" : {\n",
        "            \"location\" : {\n",
        "               \"lat\" : ",
    ));
    write_number(out, place.lat_text, place.lat);
    out.push_str(",\n               \"lng\" : ");
    write_number(out, place.lng_text, place.lng);
    out.push_str(concat!(
        "\n",
        "            },\n",
        "            \"viewport\" : {\n",
        "               \"northeast\" : {\n",
        "                  \"lat\" : ",
    ));
    write_coordinate(out, (place.lat + dlat).min(90.0));
    out.push_str(",\n                  \"lng\" : ");
    write_coordinate(out, place.lng + dlng);
    out.push_str(concat!(
        "\n",
        "               },\n",
        "               \"southwest\" : {\n",
        "                  \"lat\" : ",
    ));
    write_coordinate(out, (place.lat - dlat).max(-90.0));
    out.push_str(",\n                  \"lng\" : ");
    write_coordinate(out, place.lng - dlng);
    out.push_str(concat!(
        "\n",
        "               }\n",
        "            }\n",
        "         },\n",
        "         \"icon\" : ",
    ));
    write_string(out, ICON);
    out.push_str(",\n         \"name\" : ");
    write_string(out, place.name);
    out.push_str(",\n         \"place_id\" : \"");
    write_place_id(out, place.id);
    out.push_str("\",\n         \"reference\" : \"");
    write_place_id(out, place.id);
    out.push_str(concat!(
        "\",\n",
        "         \"scope\" : \"GOOGLE\",\n",
        "         \"types\" : [ \"locality\", \"political\" ],\n",
        "         \"vicinity\" : \"",
    ));
    // The vicinity is one JSON string; escaping works character by
    // character, so escaping its parts in turn gives the same text.
    if let Some(region) = region(place) {
        write_string_body(out, region);
        out.push_str(", ");
    }
    write_string_body(out, place.country);
    out.push_str("\"\n      }");
}

/// A number as [`number_text`] makes it and the printer prints it. Plain
/// decimals (all of the data file's, and every formatted coordinate) are
/// kept verbatim by `serde_json`'s `arbitrary_precision`, so they are copied
/// as they are; anything else takes the `Value` route, to stay identical.
fn write_number(out: &mut String, text: &str, fallback: f64) {
    if is_plain_decimal(text) {
        out.push_str(text);
    } else {
        match number_text(text, fallback) {
            Value::Number(n) => out.push_str(n.as_str()),
            _ => out.push_str("null"),
        }
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`: JSON's number grammar without an exponent.
fn is_plain_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && (int == "0" || !int.starts_with('0')) && frac.is_none_or(all_digits)
}

/// A computed coordinate as `coordinate` makes it: formatted with seven
/// decimals straight into `out`, then trailing zeros and a bare point cut.
fn write_coordinate(out: &mut String, x: f64) {
    use std::fmt::Write;
    let start = out.len();
    // Writing to a String cannot fail.
    let _ = write!(out, "{x:.7}");
    // `{:.7}` always writes a point, so the zeros cut stop at it at the latest.
    while out.len() > start && out.ends_with('0') {
        out.pop();
    }
    if out.len() > start && out.ends_with('.') {
        out.pop();
    }
    if !is_plain_decimal(&out[start..]) {
        // NaN or infinity: only `number_text` knows what the printer makes of it.
        let text = out.split_off(start);
        write_number(out, &text, x);
    }
}

/// A JSON string, quoted and escaped as the herd's printer does it.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    write_string_body(out, s);
    out.push('"');
}

/// One legacy result as a `Value`: the reference [`write_legacy_place`] is
/// tested against.
#[cfg(test)]
fn legacy_place(place: &Place) -> Value {
    let (dlat, dlng) = viewport_half(place);
    let id = place_id(place.id);
    json!({
        "business_status": "OPERATIONAL",
        "geometry": {
            "location": {
                "lat": number_text(place.lat_text, place.lat),
                "lng": number_text(place.lng_text, place.lng),
            },
            "viewport": {
                "northeast": {
                    "lat": coordinate((place.lat + dlat).min(90.0)),
                    "lng": coordinate(place.lng + dlng),
                },
                "southwest": {
                    "lat": coordinate((place.lat - dlat).max(-90.0)),
                    "lng": coordinate(place.lng - dlng),
                },
            },
        },
        "icon": ICON,
        "name": place.name,
        "place_id": id,
        "reference": id,
        "scope": "GOOGLE",
        "types": ["locality", "political"],
        "vicinity": vicinity(place),
    })
}

/// Which of a place's fields a `X-Goog-FieldMask` asks for.
#[derive(Debug)]
struct FieldMask(Option<Vec<String>>);

impl FieldMask {
    fn parse(mask: &str) -> FieldMask {
        let mut fields = Vec::new();
        for path in mask.split(',').map(str::trim) {
            match path {
                "*" | "places" | "places.*" => return FieldMask(None),
                _ => {
                    if let Some(rest) = path.strip_prefix("places.") {
                        let top = rest.split('.').next().unwrap_or(rest);
                        fields.push(top.to_string());
                    }
                }
            }
        }
        FieldMask(Some(fields))
    }

    fn wants(&self, field: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|fields| fields.iter().any(|f| f == field))
    }
}

fn new_place(place: &Place, mask: &FieldMask) -> Value {
    let id = place_id(place.id);
    let formatted = match region(place) {
        Some(region) => format!("{}, {region}, {}", place.name, place.country),
        None => format!("{}, {}", place.name, place.country),
    };
    // Google's field order.
    let all = [
        ("name", json!(format!("places/{id}"))),
        ("id", json!(id)),
        ("types", json!(["locality", "political"])),
        ("formattedAddress", json!(formatted)),
        (
            "location",
            json!({
                "latitude": number_text(place.lat_text, place.lat),
                "longitude": number_text(place.lng_text, place.lng),
            }),
        ),
        (
            "displayName",
            json!({"text": place.name, "languageCode": "en"}),
        ),
        ("businessStatus", json!("OPERATIONAL")),
        ("shortFormattedAddress", json!(place.name)),
    ];
    let mut out = Map::new();
    for (field, value) in all {
        if mask.wants(field) {
            out.insert(field.to_string(), value);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Service {
        let text = "5368361\tLos Angeles\t34.05223\t-118.24368\tUS\tCA\t3820914\n\
                    5393212\tSanta Monica\t34.01949\t-118.49138\tUS\tCA\t91411\n\
                    2988507\tParis\t48.85341\t2.3488\tFR\t11\t2138551\n";
        Service::new(Places::parse(text.to_string()).unwrap())
    }

    fn get(s: &Service, target: &str) -> (Response, Value) {
        let r = s.handle(&Request {
            method: "GET",
            target,
            headers: &[],
            body: b"",
        });
        let v = serde_json::from_slice(&r.body).unwrap();
        (r, v)
    }

    #[test]
    fn legacy_keeps_number_text_and_key_order() {
        let s = service();
        let (r, v) = get(
            &s,
            "/maps/api/place/nearbysearch/json?location=34.0,-118.4&radius=50000&key=k",
        );
        assert_eq!(r.facts.results, 2);
        assert_eq!(r.facts.location, Some((34.0, -118.4)));
        // Santa Monica is nearer to the point than Los Angeles.
        assert_eq!(v["results"][0]["name"], "Santa Monica");
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.contains("\"lng\" : -118.24368"), "{text}");
        assert!(text.find("\"business_status\"") < text.find("\"vicinity\""));
    }

    #[test]
    fn vicinity_uses_only_readable_region_codes() {
        let s = service();
        let (_, v) = get(
            &s,
            "/x/nearbysearch/json?location=48.85,2.35&radius=5000&key=k",
        );
        assert_eq!(v["results"][0]["vicinity"], "FR");
        let (_, v) = get(
            &s,
            "/x/nearbysearch/json?location=34.05,-118.24&radius=500&key=k",
        );
        assert_eq!(v["results"][0]["vicinity"], "CA, US");
    }

    #[test]
    fn place_ids_are_stable_and_url_safe() {
        assert_eq!(place_id(5368361), place_id(5368361));
        assert_ne!(place_id(5368361), place_id(5368362));
        let id = place_id(u32::MAX);
        assert!(id.starts_with("ChIJ") && id.len() == 20, "{id}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(base64url(b"Man"), "TWFu");
        assert_eq!(base64url(b"Ma"), "TWE");
    }

    #[test]
    fn query_strings_decode() {
        let q = parse_query("location=1%2C2&name=a+b&flag&bad=%zz&=v");
        assert_eq!(param(&q, "location"), Some("1,2"));
        assert_eq!(param(&q, "name"), Some("a b"));
        assert_eq!(param(&q, "flag"), Some(""));
        assert_eq!(param(&q, "bad"), Some("%zz"));
        assert_eq!(parse_location(" 1.5 , -2 "), Some((1.5, -2.0)));
        assert_eq!(parse_location("1.5"), None);
        assert_eq!(parse_radius("50000"), Some(50000.0));
        assert_eq!(parse_radius("0"), None);
        assert_eq!(parse_radius("NaN"), None);
    }

    /// The whole gazetteer, loaded once for the tests that need real data.
    fn gazetteer() -> &'static Service {
        static SERVICE: std::sync::OnceLock<Service> = std::sync::OnceLock::new();
        SERVICE.get_or_init(|| {
            let path = concat!(
                concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
                "/data/places/cities1000.tsv"
            );
            Service::new(Places::load(std::path::Path::new(path)).unwrap())
        })
    }

    /// What the printer makes of one result inside `"results"`: printed on
    /// its own, then every line moved two levels (six spaces) right. That is
    /// exactly its text at depth 2, as the printer indents each line by
    /// depth and escapes every newline inside strings.
    fn reference_fragment(place: &Place) -> String {
        let text = proxy_herd::places::google_json::to_google_style(&legacy_place(place));
        format!("      {}", text.replace('\n', "\n      "))
    }

    fn text_fragment(place: &Place) -> String {
        let mut out = String::new();
        write_legacy_place(&mut out, place);
        out
    }

    #[test]
    fn the_gazetteers_places_render_as_the_value_printer_does() {
        let s = gazetteer();
        assert!(s.len() > 100_000, "{}", s.len());
        // Every fifth row (the reference is slow in a debug build), plus
        // every row that takes a rare branch: a name to escape, a number
        // text that is not a plain decimal.
        let odd = |p: &Place| {
            let mut escaped = String::new();
            write_string_body(&mut escaped, p.name);
            escaped != p.name || !is_plain_decimal(p.lat_text) || !is_plain_decimal(p.lng_text)
        };
        let mut checked = 0;
        for i in 0..s.len() {
            let place = s.places.get(i).unwrap();
            if i % 5 != 0 && !odd(&place) {
                continue;
            }
            checked += 1;
            let (text, reference) = (text_fragment(&place), reference_fragment(&place));
            assert!(text == reference, "row {i}:\n{text}\n---\n{reference}");
        }
        assert!(checked > s.len() / 5, "{checked}");
    }

    #[test]
    fn odd_names_and_number_texts_render_as_the_value_printer_does() {
        // Names that need escaping, and number texts that are not plain
        // decimals (serde_json rewrites or rejects them), so the slow
        // branches of the text path are held to the reference too.
        let text =
            "1\t<b>\"Caf\u{e9}\\\u{1}\u{7f}\u{8}\u{c}\u{1f}\u{2603}</b>\t+34.5\t1E1\tUS\tC<A\t9\n\
                    2\tZero\t-0\t034.50\tU\"S\t12\t0\n\
                    3\tDot\t34.\t.5\tFR\t\t1000000000\n\
                    4\tPole\t90\t180\tAQ\tXX\t40000000\n\
                    5\tSouth\t-90.000\t-180\tAQ\tyy\t1\n";
        let s = Service::new(Places::parse(text.to_string()).unwrap());
        for i in 0..s.len() {
            let place = s.places.get(i).unwrap();
            assert_eq!(text_fragment(&place), reference_fragment(&place), "row {i}");
        }
        assert!(text_fragment(&s.places.get(0).unwrap()).contains("\\u003cb\\u003e"));
    }

    #[test]
    fn the_fragment_cache_is_bounded_and_changes_no_byte() {
        let mut s = service();
        let target = "/x/nearbysearch/json?location=34.0,-118.4&radius=50000&key=k";
        let reference = s.legacy_reference(34.0, -118.4, 50000.0);
        // Room for Santa Monica's text and not for Los Angeles' as well.
        let first = text_fragment(&s.places.get(1).unwrap()).len();
        s.fragments = Fragments::new(s.len(), first + 10);
        for _ in 0..3 {
            assert_eq!(get(&s, target).0.body, reference);
        }
        let cached: Vec<bool> = s
            .fragments
            .slots
            .iter()
            .map(|f| f.get().is_some())
            .collect();
        assert_eq!(cached, [false, true, false]);
        assert_eq!(s.fragments.budget.load(Ordering::Relaxed), 10);
        assert!(format!("{s:?}").contains("cached: 1"));
    }

    /// A small deterministic generator (xorshift64*), so failures repeat.
    struct Rng(u64);

    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn legacy_answers_are_byte_for_byte_the_value_rendering() {
        let s = gazetteer();
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        let (mut ok, mut zero) = (0, 0);
        for n in 0..3000 {
            let (lat, lng) = match n % 3 {
                // Anywhere on Earth: mostly ocean, so mostly ZERO_RESULTS.
                0 => (rng.unit() * 180.0 - 90.0, rng.unit() * 360.0 - 180.0),
                // Near a random place, where answers are full.
                1 => {
                    let i = (rng.unit() * s.len() as f64) as usize % s.len();
                    let p = s.places.get(i).unwrap();
                    let lat = (p.lat + (rng.unit() - 0.5) * 0.2).clamp(-90.0, 90.0);
                    let lng = (p.lng + (rng.unit() - 0.5) * 0.2).clamp(-180.0, 180.0);
                    (lat, lng)
                }
                // Around UCLA, the benchmark's neighbourhood.
                _ => (
                    34.068930 + (rng.unit() - 0.5) * 0.5,
                    -118.445127 + (rng.unit() - 0.5) * 0.5,
                ),
            };
            // Log-uniform from 1 m to 50 km, and now and then the maximum.
            let radius = if n % 17 == 0 {
                MAX_RADIUS_M
            } else {
                10f64.powf(rng.unit() * 4.7)
            };
            let target = format!(
                "/maps/api/place/nearbysearch/json?location={lat},{lng}&radius={radius}&key=k"
            );
            let (r, v) = get(s, &target);
            let reference = s.legacy_reference(lat, lng, radius);
            // Asked again, every place now comes from the fragment cache.
            assert!(get(s, &target).0.body == r.body, "{target} changed");
            assert!(
                r.body == reference,
                "{target}:\n{}\n---\n{}",
                String::from_utf8_lossy(&r.body),
                String::from_utf8_lossy(&reference)
            );
            assert_eq!(r.status, 200);
            assert_eq!(r.content_type, JSON);
            let results = v["results"].as_array().unwrap().len();
            assert_eq!(r.facts.results, results);
            if results == 0 {
                zero += 1;
            } else {
                ok += 1;
            }
        }
        assert!(ok > 500 && zero > 500, "{ok} OK, {zero} ZERO_RESULTS");
    }

    #[test]
    fn field_masks() {
        assert!(FieldMask::parse("*").wants("id"));
        let m = FieldMask::parse("places.id, places.displayName.text");
        assert!(m.wants("id") && m.wants("displayName") && !m.wants("types"));
    }
}
