//! The gazetteer: loads `data/places/cities1000.tsv` (GeoNames, see its
//! README) into one string plus a compact row table. Which places are near a
//! point is [`super::index`]'s job; how they look to clients is [`super::api`]'s.

use std::fmt;
use std::ops::Range;
use std::path::Path;

/// One place, borrowed from the loaded file's text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place<'a> {
    /// The GeoNames id.
    pub id: u32,
    /// The place's name as GeoNames spells it.
    pub name: &'a str,
    /// Latitude, as the decimal text GeoNames wrote.
    pub lat_text: &'a str,
    /// Longitude, as the decimal text GeoNames wrote.
    pub lng_text: &'a str,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lng: f64,
    /// ISO 3166 country code (two letters).
    pub country: &'a str,
    /// GeoNames admin1 code (a US state's abbreviation, or a number elsewhere).
    pub admin1: &'a str,
    /// Population as GeoNames gives it.
    pub population: u64,
}

/// A row keeps only what a query needs hot; the rest is re-split from the
/// line on demand, for the few places an answer shows.
#[derive(Debug, Clone)]
struct Row {
    line: Range<u32>,
    lat: f64,
    lng: f64,
}

/// All places of the data file.
#[derive(Debug)]
pub struct Places {
    text: String,
    rows: Vec<Row>,
}

/// Why the data file could not be loaded.
#[derive(Debug)]
pub struct LoadError(String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

impl Places {
    /// Reads and checks the data file.
    pub fn load(path: &Path) -> Result<Places, LoadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError(format!("cannot read {}: {e}", path.display())))?;
        Places::parse(text).map_err(|e| LoadError(format!("{}: {e}", path.display())))
    }

    /// Parses the TSV text (`#` lines are comments).
    pub fn parse(text: String) -> Result<Places, String> {
        if u32::try_from(text.len()).is_err() {
            return Err("file too large".into());
        }
        let mut rows = Vec::with_capacity(text.len() / 48);
        let mut start = 0usize;
        for (lineno, line) in text.split_inclusive('\n').enumerate() {
            let end = start + line.len();
            let body = line.trim_end_matches(['\n', '\r']);
            if !body.is_empty() && !body.starts_with('#') {
                let place = split_line(body)
                    .ok_or_else(|| format!("line {}: malformed place", lineno + 1))?;
                rows.push(Row {
                    // Fits: the whole text's length was checked above.
                    line: start as u32..(start + body.len()) as u32,
                    lat: place.lat,
                    lng: place.lng,
                });
            }
            start = end;
        }
        Ok(Places { text, rows })
    }

    /// How many places there are.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every place's coordinates (latitude, longitude), in row order, for indexing.
    pub fn coordinates(&self) -> Vec<(f64, f64)> {
        self.rows.iter().map(|r| (r.lat, r.lng)).collect()
    }

    /// The place in row `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<Place<'_>> {
        let row = self.rows.get(i)?;
        self.text
            .get(row.line.start as usize..row.line.end as usize)
            .and_then(split_line)
    }
}

/// Splits and checks one data line: geonameid, name, lat, lng, country, admin1, population.
fn split_line(line: &str) -> Option<Place<'_>> {
    let mut f = line.split('\t');
    let id = f.next()?.parse().ok()?;
    let name = f.next()?;
    let lat_text = f.next()?;
    let lng_text = f.next()?;
    let country = f.next()?;
    let admin1 = f.next()?;
    let population = f.next()?.parse().ok()?;
    if f.next().is_some() {
        return None;
    }
    let lat: f64 = lat_text.parse().ok()?;
    let lng: f64 = lng_text.parse().ok()?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lng) {
        return None;
    }
    Some(Place {
        id,
        name,
        lat_text,
        lng_text,
        lat,
        lng,
        country,
        admin1,
        population,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_and_skips_comments() {
        let text = "#id\tname\n5368361\tLos Angeles\t34.05223\t-118.24368\tUS\tCA\t3820914\n\n12\tX\t1\t2\tIR\t15\t0\n";
        let places = Places::parse(text.to_string()).unwrap();
        assert_eq!(places.len(), 2);
        let la = places.get(0).unwrap();
        assert_eq!(la.name, "Los Angeles");
        assert_eq!(la.lat_text, "34.05223");
        assert_eq!(la.lng, -118.24368);
        assert_eq!(la.admin1, "CA");
        assert_eq!(la.population, 3820914);
        assert_eq!(places.get(1).unwrap().id, 12);
        assert!(places.get(2).is_none());
    }

    #[test]
    fn rejects_bad_lines() {
        assert!(Places::parse("1\tA\t91\t0\tUS\tCA\t1\n".into()).is_err());
        assert!(Places::parse("1\tA\t1\t0\tUS\tCA\n".into()).is_err());
        assert!(Places::parse("x\tA\t1\t0\tUS\tCA\t1\n".into()).is_err());
    }
}
