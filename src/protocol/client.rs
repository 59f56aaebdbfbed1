//! The client protocol (docs/spec.md §4) as pure functions: `IAMAT` and `WHATSAT`
//! parsed and validated, the `AT` reply formatted, and the `? ` answer to anything
//! else. Lines are bytes: nothing here assumes UTF-8.
//!
//! What the server does with a parsed request (store it, flood it, ask Places)
//! lives in [`crate::herd`]; the bytes come from [`crate::transport`].

use super::{fields, split_exact};

/// A line longer than this (without its terminator) disconnects the client.
pub const MAX_LINE: usize = 64 * 1024;
/// A client that lets this much output wait unread is disconnected.
pub const MAX_BACKLOG: usize = 1024 * 1024;

const NANOS_PER_SEC: i128 = 1_000_000_000;
/// Client times with more whole-second digits than this are absurd (past the
/// year 33000) and rejected; it also keeps the arithmetic far from overflow.
const MAX_SECOND_DIGITS: usize = 12;

/// One client line, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Only white space: ignored, no reply.
    Blank,
    IAmAt(IAmAt<'a>),
    WhatsAt(WhatsAt<'a>),
    /// Anything else: answered with `? ` and the line.
    Invalid,
}

/// `IAMAT client location time`, with its fields as sent.
#[derive(Debug, PartialEq, Eq)]
pub struct IAmAt<'a> {
    pub client: &'a [u8],
    pub location: &'a [u8],
    pub time: &'a [u8],
    /// The client's time in integer nanoseconds since the epoch.
    pub time_ns: i128,
}

/// `WHATSAT client radius bound`, validated.
#[derive(Debug, PartialEq, Eq)]
pub struct WhatsAt<'a> {
    pub client: &'a [u8],
    /// The radius in metres, as exact decimal text (`"10000"`, `"1234.5"`).
    pub radius_m: String,
    /// At most this many places, 1 to 20.
    pub bound: u8,
}

/// A position's coordinates as decimal text without a leading `+`, ready for
/// a Places request (`location=34.068930,-118.445127`).
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Coordinates {
    pub lat: String,
    pub lon: String,
}

/// Parses one line (without its `\n`; a trailing `\r` is white space).
pub fn parse_request(line: &[u8]) -> Request<'_> {
    let Some(command) = fields(line).next() else {
        return Request::Blank;
    };
    match command {
        b"IAMAT" => parse_iamat(line).map_or(Request::Invalid, Request::IAmAt),
        b"WHATSAT" => parse_whatsat(line).map_or(Request::Invalid, Request::WhatsAt),
        _ => Request::Invalid,
    }
}

fn parse_iamat(line: &[u8]) -> Option<IAmAt<'_>> {
    let [_, client, location, time] = split_exact::<4>(line)?;
    parse_location(location)?;
    let time_ns = parse_time(time)?;
    Some(IAmAt {
        client,
        location,
        time,
        time_ns,
    })
}

fn parse_whatsat(line: &[u8]) -> Option<WhatsAt<'_>> {
    let [_, client, radius, bound] = split_exact::<4>(line)?;
    Some(WhatsAt {
        client,
        radius_m: radius_km_to_metres(radius)?,
        bound: parse_bound(bound)?,
    })
}

/// A decimal number split into its digit runs: `12.50` is (`12`, `50`).
struct Decimal<'a> {
    int: &'a [u8],
    frac: &'a [u8],
}

/// Reads `D+(.D+)?` from the front of `s`; returns it and the rest.
fn take_decimal(s: &[u8]) -> Option<(Decimal<'_>, &[u8])> {
    let int_len = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 {
        return None;
    }
    let (int, rest) = s.split_at(int_len);
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let frac_len = after_dot.iter().take_while(|b| b.is_ascii_digit()).count();
        if frac_len == 0 {
            return None;
        }
        let (frac, rest) = after_dot.split_at(frac_len);
        return Some((Decimal { int, frac }, rest));
    }
    Some((Decimal { int, frac: &[] }, rest))
}

/// The value of a digit run, or `None` past `limit` digits (no overflow).
fn digits_value(digits: &[u8], limit: usize) -> Option<u64> {
    let digits = trim_leading_zeros(digits);
    if digits.len() > limit {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u64, |v, d| v * 10 + u64::from(d - b'0')),
    )
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&d| d == b'0').count();
    &digits[zeros..]
}

/// True if `|int.frac| <= max`, compared exactly (no float rounding).
fn within(d: &Decimal, max: u64) -> bool {
    match digits_value(d.int, 3) {
        Some(v) if v < max => true,
        Some(v) if v == max => d.frac.iter().all(|&b| b == b'0'),
        _ => false,
    }
}

/// Validates an ISO 6709 location, `[+-]D+(.D+)?[+-]D+(.D+)?`, latitude in
/// [-90, 90] and longitude in [-180, 180], and returns its coordinates.
pub fn parse_location(text: &[u8]) -> Option<Coordinates> {
    let lon_at = check_location(text)?;
    let (lat_sign, lon_sign) = (text[0], text[lon_at]);
    let text_of = |sign: u8, digits: &[u8]| {
        let mut s = String::with_capacity(digits.len() + 1);
        if sign == b'-' {
            s.push('-');
        }
        // Validated above: only ASCII digits and one dot.
        s.extend(digits.iter().map(|&b| char::from(b)));
        s
    };
    Some(Coordinates {
        lat: text_of(lat_sign, &text[1..lon_at]),
        lon: text_of(lon_sign, &text[lon_at + 1..]),
    })
}

/// True for a valid ISO 6709 location (as [`parse_location`] checks it),
/// without building its coordinates.
pub fn is_location(text: &[u8]) -> bool {
    check_location(text).is_some()
}

/// Checks a location; returns where the longitude's sign is.
fn check_location(text: &[u8]) -> Option<usize> {
    let (lat_sign, rest) = text.split_first()?;
    if !matches!(lat_sign, b'+' | b'-') {
        return None;
    }
    let (lat, rest) = take_decimal(rest)?;
    let lon_at = text.len() - rest.len();
    let (lon_sign, rest) = rest.split_first()?;
    if !matches!(lon_sign, b'+' | b'-') {
        return None;
    }
    let (lon, rest) = take_decimal(rest)?;
    (rest.is_empty() && within(&lat, 90) && within(&lon, 180)).then_some(lon_at)
}

/// Parses POSIX seconds with an optional fraction of 1 to 9 digits into
/// integer nanoseconds. Exact: `1621464827.959498503` keeps every digit.
pub fn parse_time(text: &[u8]) -> Option<i128> {
    let (d, rest) = take_decimal(text)?;
    if !rest.is_empty() || d.frac.len() > 9 {
        return None;
    }
    let secs = digits_value(d.int, MAX_SECOND_DIGITS)?;
    let mut frac = 0i128;
    for i in 0..9 {
        frac = frac * 10 + d.frac.get(i).map_or(0, |&b| i128::from(b - b'0'));
    }
    Some(i128::from(secs) * NANOS_PER_SEC + frac)
}

/// A radius in kilometres, `D+(.D+)?` with a value in (0, 50], as exact metres.
fn radius_km_to_metres(text: &[u8]) -> Option<String> {
    let (d, rest) = take_decimal(text)?;
    if !rest.is_empty() || !within(&d, 50) {
        return None;
    }
    // Shift the decimal point three places: km -> m, as text, so no rounding.
    let mut digits: Vec<u8> = d.int.to_vec();
    let frac = trim_trailing_zeros(d.frac);
    for i in 0..3 {
        digits.push(frac.get(i).copied().unwrap_or(b'0'));
    }
    let int = trim_leading_zeros(&digits);
    let mut out = if int.is_empty() {
        String::from("0")
    } else {
        int.iter().map(|&b| char::from(b)).collect()
    };
    if frac.len() > 3 {
        out.push('.');
        out.extend(frac[3..].iter().map(|&b| char::from(b)));
    }
    // Zero (however it was written) is not a radius.
    (out.bytes().any(|b| b.is_ascii_digit() && b != b'0')).then_some(out)
}

fn trim_trailing_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().rev().take_while(|&&d| d == b'0').count();
    &digits[..digits.len() - zeros]
}

/// A bound: a whole number from 1 to 20.
fn parse_bound(text: &[u8]) -> Option<u8> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match digits_value(text, 2)? {
        v @ 1..=20 => u8::try_from(v).ok(),
        _ => None,
    }
}

/// Appends a signed time difference with exactly nine fraction digits:
/// `+0.263873386`, `-0.000012345`.
pub fn format_diff(out: &mut Vec<u8>, diff_ns: i128) {
    out.push(if diff_ns < 0 { b'-' } else { b'+' });
    let abs = diff_ns.unsigned_abs();
    let secs = abs / NANOS_PER_SEC.unsigned_abs();
    let frac = abs % NANOS_PER_SEC.unsigned_abs();
    out.extend_from_slice(format!("{secs}.{frac:09}").as_bytes());
}

/// The `AT` line (without `\n`) that answers an IAMAT received at `now_ns`.
pub fn format_at(server: &str, now_ns: i128, req: &IAmAt) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        16 + server.len() + req.client.len() + req.location.len() + req.time.len(),
    );
    out.extend_from_slice(b"AT ");
    out.extend_from_slice(server.as_bytes());
    out.push(b' ');
    format_diff(&mut out, now_ns - req.time_ns);
    for field in [req.client, req.location, req.time] {
        out.push(b' ');
        out.extend_from_slice(field);
    }
    out
}

/// The line as received, without its terminator (`\n` or `\r\n`).
pub fn strip_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Appends `? ` + the line as received (without its terminator) + `\n`.
pub fn write_invalid(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(b"? ");
    out.extend_from_slice(strip_terminator(line));
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iamat(line: &[u8]) -> IAmAt<'_> {
        match parse_request(line) {
            Request::IAmAt(r) => r,
            other => panic!("not an IAMAT: {other:?}"),
        }
    }

    fn whatsat(line: &[u8]) -> Option<WhatsAt<'_>> {
        match parse_request(line) {
            Request::WhatsAt(r) => Some(r),
            Request::Invalid => None,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn iamat_from_the_spec() {
        let r = iamat(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503");
        assert_eq!(r.client, b"kiwi.cs.ucla.edu");
        assert_eq!(r.location, b"+34.068930-118.445127");
        assert_eq!(r.time_ns, 1_621_464_827_959_498_503);
        let at = format_at("Riley", 1_621_464_828_223_371_889, &r);
        assert_eq!(
            at,
            b"AT Riley +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
        );
    }

    #[test]
    fn blank_lines_and_separators() {
        assert_eq!(parse_request(b""), Request::Blank);
        assert_eq!(parse_request(b" \t\r\x0b\x0c"), Request::Blank);
        let r = iamat(b"\x0bIAMAT\x0ca\t+1-2\r1\r");
        assert_eq!(
            (r.client, r.location, r.time),
            (&b"a"[..], &b"+1-2"[..], &b"1"[..])
        );
    }

    #[test]
    fn client_ids_are_bytes() {
        let r = iamat(b"IAMAT \xff\xfe\x80 +1-2 3");
        assert_eq!(r.client, b"\xff\xfe\x80");
    }

    #[test]
    fn wrong_commands_and_counts_are_invalid() {
        for line in [
            &b"iamat a +1-2 3"[..],
            b"IAMAT a +1-2",
            b"IAMAT a +1-2 3 4",
            b"HELLO",
            b"WHATSAT a 10",
            b"AT Riley +0.1 a +1-2 3",
        ] {
            assert_eq!(parse_request(line), Request::Invalid, "{line:?}");
        }
    }

    #[test]
    fn locations() {
        let c = parse_location(b"+34.068930-118.445127").unwrap();
        assert_eq!(
            (c.lat.as_str(), c.lon.as_str()),
            ("34.068930", "-118.445127")
        );
        let c = parse_location(b"-90+180").unwrap();
        assert_eq!((c.lat.as_str(), c.lon.as_str()), ("-90", "180"));
        assert!(parse_location(b"+90.000-180.0").is_some());
        assert!(parse_location(b"+0090.0+0").is_some());
        for bad in [
            &b"34.1-118.2"[..],
            b"+34.1",
            b"+34.1-118.",
            b"+.5-118",
            b"+34.1-118.2x",
            b"+90.0000001+0",
            b"+0-180.01",
            b"+91+0",
            b"+0+1000",
            b"++1+1",
            b"+1e5+1",
            b"",
        ] {
            assert_eq!(parse_location(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_are_exact_integer_nanoseconds() {
        assert_eq!(parse_time(b"0"), Some(0));
        assert_eq!(parse_time(b"1.5"), Some(1_500_000_000));
        assert_eq!(parse_time(b"1.000000001"), Some(1_000_000_001));
        assert_eq!(
            parse_time(b"999999999999.999999999"),
            Some(999_999_999_999_999_999_999)
        );
        for bad in [
            &b"1.0000000001"[..],
            b"1.",
            b".5",
            b"-1",
            b"+1",
            b"1e9",
            b"nan",
            b"9999999999999",
            b"",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        // Leading zeros do not count towards the limit and do not overflow.
        let many_zeros = [b"0".repeat(5000), b"1".to_vec()].concat();
        assert_eq!(parse_time(&many_zeros), Some(1_000_000_000));
        assert_eq!(parse_time(&b"9".repeat(5000)), None);
    }

    #[test]
    fn diffs_are_signed_with_nine_digits() {
        let fmt = |ns| {
            let mut v = Vec::new();
            format_diff(&mut v, ns);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(fmt(0), "+0.000000000");
        assert_eq!(fmt(-12_345), "-0.000012345");
        assert_eq!(fmt(263_873_386), "+0.263873386");
        assert_eq!(fmt(-3_000_000_001), "-3.000000001");
        assert_eq!(fmt(86_400_000_000_000), "+86400.000000000");
    }

    #[test]
    fn whatsat_validation() {
        let w = whatsat(b"WHATSAT kiwi.cs.ucla.edu 10 5").unwrap();
        assert_eq!(
            (w.client, w.radius_m.as_str(), w.bound),
            (&b"kiwi.cs.ucla.edu"[..], "10000", 5)
        );
        let radius = |r: &str| whatsat(format!("WHATSAT a {r} 1").as_bytes()).map(|w| w.radius_m);
        assert_eq!(radius("50").as_deref(), Some("50000"));
        assert_eq!(radius("50.000").as_deref(), Some("50000"));
        assert_eq!(radius("0.5").as_deref(), Some("500"));
        assert_eq!(radius("1.2345").as_deref(), Some("1234.5"));
        assert_eq!(radius("0.0001").as_deref(), Some("0.1"));
        assert_eq!(radius("007").as_deref(), Some("7000"));
        for bad in [
            "0", "0.000", "50.001", "60", "-1", "+1", ".5", "1.", "1e1", "x",
        ] {
            assert_eq!(radius(bad), None, "{bad}");
        }
        let bound = |b: &str| whatsat(format!("WHATSAT a 1 {b}").as_bytes()).map(|w| w.bound);
        assert_eq!(bound("1"), Some(1));
        assert_eq!(bound("20"), Some(20));
        assert_eq!(bound("020"), Some(20));
        for bad in ["0", "21", "1.0", "-1", "+1", "99999999999999999999999"] {
            assert_eq!(bound(bad), None, "{bad}");
        }
    }

    #[test]
    fn invalid_echo_keeps_the_line_but_not_its_terminator() {
        let mut out = Vec::new();
        write_invalid(&mut out, b"WHATSAT kiwi 60 5\r\n");
        write_invalid(&mut out, b" odd\x0b line \xff\n");
        write_invalid(&mut out, b"no terminator");
        assert_eq!(
            out,
            b"? WHATSAT kiwi 60 5\n?  odd\x0b line \xff\n? no terminator\n"
        );
    }
}
