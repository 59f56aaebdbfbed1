//! The Places API as pure functions: a parsed HTTP request in, a response
//! (status, body, and the facts the request log wants) out. Google's legacy
//! Nearby Search and Places API (New) `searchNearby`, in Google's shapes and
//! key order. No sockets here: the event loop is in [`super::server`], the
//! data in [`super::places`] and [`super::index`].

use std::str::FromStr;

use serde_json::{json, Map, Number, Value};

use super::index::Grid;
use super::places::{Place, Places};

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
            content_type: "application/json; charset=UTF-8",
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
    let mut text = crate::places::google_json::to_google_style(value);
    text.push('\n');
    text.into_bytes()
}

/// The places and their index: everything a query needs.
#[derive(Debug)]
pub struct Service {
    places: Places,
    grid: Grid,
}

impl Service {
    /// Indexes the places.
    pub fn new(places: Places) -> Service {
        let grid = Grid::build(&places.coordinates());
        Service { places, grid }
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
    fn legacy(&self, params: &[(String, String)]) -> Response {
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
        let results: Vec<Value> = self
            .nearby(lat, lng, radius_m, MAX_RESULTS)
            .iter()
            .map(legacy_place)
            .collect();
        facts.results = results.len();
        let status = if results.is_empty() {
            "ZERO_RESULTS"
        } else {
            "OK"
        };
        let body = json!({"html_attributions": [], "results": results, "status": status});
        Response::json(200, &body, facts)
    }

    /// Places API (New): `POST .../v1/places:searchNearby`.
    fn search_nearby(&self, req: &Request, params: &[(String, String)]) -> Response {
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

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
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

/// Splits a query string into decoded name/value pairs (`+` is a space).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
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
    String::from_utf8_lossy(&out).into_owned()
}

/// A number exactly as the data file wrote it (no float round trip).
fn number_text(text: &str, fallback: f64) -> Value {
    Number::from_str(text)
        .ok()
        .or_else(|| Number::from_f64(fallback))
        .map_or(Value::Null, Value::Number)
}

/// A computed coordinate, printed like Google's (at most 7 decimals).
fn coordinate(x: f64) -> Value {
    let text = format!("{x:.7}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    number_text(text, x)
}

/// A deterministic, Google-looking place id: `ChIJ` + base64url("GeoNames" + id).
pub fn place_id(geonameid: u32) -> String {
    let mut raw = b"GeoNames".to_vec();
    raw.extend_from_slice(&geonameid.to_be_bytes());
    format!("ChIJ{}", base64url(&raw))
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The admin1 code when it reads as an abbreviation (US states, GB nations);
/// elsewhere GeoNames uses numbers that mean nothing to a reader.
fn region<'a>(place: &Place<'a>) -> Option<&'a str> {
    let a = place.admin1;
    (!a.is_empty() && a.bytes().all(|b| b.is_ascii_alphabetic())).then_some(a)
}

fn vicinity(place: &Place) -> String {
    match region(place) {
        Some(region) => format!("{region}, {}", place.country),
        None => place.country.to_string(),
    }
}

fn legacy_place(place: &Place) -> Value {
    // A locality's viewport grows with its population: about 2 km across for
    // a village, up to 80 km for a metropolis.
    let half_km = (2.0 + (place.population as f64).sqrt() / 50.0).min(40.0);
    let dlat = half_km / 111.195;
    let dlng = dlat / place.lat.to_radians().cos().max(0.01);
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

    #[test]
    fn field_masks() {
        assert!(FieldMask::parse("*").wants("id"));
        let m = FieldMask::parse("places.id, places.displayName.text");
        assert!(m.wants("id") && m.wants("displayName") && !m.wants("types"));
    }
}
