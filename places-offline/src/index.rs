//! The spatial index: a fixed latitude/longitude grid over the places'
//! coordinates, so a query with a radius of at most 50 km reads a few cells
//! instead of scanning ~170,000 rows. Distances are great-circle (haversine).
//! The rows themselves live in [`super::places`].

use std::f64::consts::PI;

/// Mean Earth radius in metres (IUGG), the sphere the distances are on.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Cell side in degrees: at 0.25° a 50 km query reads about 5 x 5 cells at
/// the equator; a finer grid would spend memory on empty ocean.
const CELL_DEG: f64 = 0.25;
const ROWS: usize = (180.0 / CELL_DEG) as usize;
const COLS: usize = (360.0 / CELL_DEG) as usize;

/// Great-circle distance in metres between two points given in degrees.
pub fn haversine_m(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lng2 - lng1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// One hit: the place's position in the input slice and its distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Index into the coordinates the grid was built from.
    pub index: u32,
    /// Distance from the query point in metres.
    pub distance_m: f64,
}

/// Points bucketed by grid cell, stored cell after cell (compressed rows).
#[derive(Debug)]
pub struct Grid {
    /// `starts[c]..starts[c + 1]` are cell `c`'s entries in `points`.
    starts: Vec<u32>,
    /// (lat, lng, index into the input), grouped by cell.
    points: Vec<(f64, f64, u32)>,
}

fn row_of(lat: f64) -> usize {
    (((lat + 90.0) / CELL_DEG).floor().max(0.0) as usize).min(ROWS - 1)
}

fn col_of(lng: f64) -> usize {
    // rem_euclid folds 180° onto -180°: they are one meridian.
    (((lng + 180.0) / CELL_DEG).floor() as i64).rem_euclid(COLS as i64) as usize
}

impl Grid {
    /// Builds the grid over (latitude, longitude) points in degrees.
    pub fn build(coords: &[(f64, f64)]) -> Grid {
        let cell = |&(lat, lng): &(f64, f64)| row_of(lat) * COLS + col_of(lng);
        let mut starts = vec![0u32; ROWS * COLS + 1];
        for c in coords {
            starts[cell(c) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut fill = starts.clone();
        let mut points = vec![(0.0, 0.0, 0u32); coords.len()];
        for (i, c) in coords.iter().enumerate() {
            let slot = &mut fill[cell(c)];
            points[*slot as usize] = (c.0, c.1, i as u32);
            *slot += 1;
        }
        Grid { starts, points }
    }

    /// The points within `radius_m` of (lat, lng), nearest first (ties by
    /// index, so answers are stable), at most `limit` of them.
    pub fn nearby(&self, lat: f64, lng: f64, radius_m: f64, limit: usize) -> Vec<Hit> {
        let mut hits = Vec::new();
        // Angular radius, widened a hair so rounding in the bounds below can
        // never drop a cell that holds a point right on the circle.
        let d = radius_m / EARTH_RADIUS_M * (1.0 + 1e-9) + 1e-12;
        let lat_r = lat.to_radians();
        let row_lo = row_of((lat_r - d).to_degrees());
        let row_hi = row_of((lat_r + d).to_degrees());
        // The cap reaches a pole: every longitude is in range. Otherwise its
        // widest longitude span is asin(sin d / cos lat) (spherical geometry).
        let cols: Box<dyn Iterator<Item = usize>> = if lat_r.abs() + d >= PI / 2.0 {
            Box::new(0..COLS)
        } else {
            let dlng = (d.sin() / lat_r.cos()).min(1.0).asin().to_degrees();
            let lo = ((lng - dlng + 180.0) / CELL_DEG).floor() as i64;
            let hi = ((lng + dlng + 180.0) / CELL_DEG).floor() as i64;
            if hi - lo + 1 >= COLS as i64 {
                Box::new(0..COLS)
            } else {
                Box::new((lo..=hi).map(|c| c.rem_euclid(COLS as i64) as usize))
            }
        };
        for col in cols {
            for row in row_lo..=row_hi {
                let c = row * COLS + col;
                let cell = &self.points[self.starts[c] as usize..self.starts[c + 1] as usize];
                for &(plat, plng, index) in cell {
                    let distance_m = haversine_m(lat, lng, plat, plng);
                    if distance_m <= radius_m {
                        hits.push(Hit { index, distance_m });
                    }
                }
            }
        }
        sort_hits(&mut hits);
        hits.truncate(limit);
        hits
    }
}

fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| {
        a.distance_m
            .total_cmp(&b.distance_m)
            .then(a.index.cmp(&b.index))
    });
}

/// The same answer as [`Grid::nearby`] by scanning every point (for tests).
pub fn brute_force(
    coords: &[(f64, f64)],
    lat: f64,
    lng: f64,
    radius_m: f64,
    limit: usize,
) -> Vec<Hit> {
    let mut hits: Vec<Hit> = coords
        .iter()
        .enumerate()
        .filter_map(|(i, &(plat, plng))| {
            let distance_m = haversine_m(lat, lng, plat, plng);
            (distance_m <= radius_m).then_some(Hit {
                index: i as u32,
                distance_m,
            })
        })
        .collect();
    sort_hits(&mut hits);
    hits.truncate(limit);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic, no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.next()
        }
    }

    #[test]
    fn haversine_known_distance() {
        // UCLA to downtown Los Angeles is about 18 km.
        let d = haversine_m(34.068930, -118.445127, 34.05223, -118.24368);
        assert!((d - 18_640.0).abs() < 200.0, "{d}");
        assert_eq!(haversine_m(10.0, 20.0, 10.0, 20.0), 0.0);
        // 180 and -180 are the same meridian.
        assert!(haversine_m(0.0, 180.0, 0.0, -180.0) < 1e-6);
    }

    #[test]
    fn grid_matches_brute_force_on_random_points() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut coords = Vec::new();
        for _ in 0..30_000 {
            coords.push((rng.range(-90.0, 90.0), rng.range(-180.0, 180.0)));
        }
        // Dense clusters where the grid's edges are: poles, the antimeridian.
        let hot: [(f64, f64); 5] = [
            (89.8, 10.0),
            (-89.9, -170.0),
            (0.0, 179.95),
            (65.0, -179.9),
            (34.07, -118.44),
        ];
        for &(lat, lng) in &hot {
            for _ in 0..2_000 {
                let plat = (lat + rng.range(-0.6, 0.6)).clamp(-90.0, 90.0);
                let plng = (lng + rng.range(-0.6, 0.6) + 540.0).rem_euclid(360.0) - 180.0;
                coords.push((plat, plng));
            }
        }
        let grid = Grid::build(&coords);
        let mut nonempty = 0;
        for q in 0..400 {
            let (lat, lng) = if q % 3 == 0 {
                let (hl, hg) = hot[q % hot.len()];
                (
                    (hl + rng.range(-0.5, 0.5)).clamp(-90.0, 90.0),
                    (hg + rng.range(-0.5, 0.5) + 540.0).rem_euclid(360.0) - 180.0,
                )
            } else {
                (rng.range(-90.0, 90.0), rng.range(-180.0, 180.0))
            };
            let radius = rng.range(1.0, 50_000.0);
            let limit = if q % 2 == 0 { 20 } else { usize::MAX };
            let want = brute_force(&coords, lat, lng, radius, limit);
            let got = grid.nearby(lat, lng, radius, limit);
            assert_eq!(got, want, "query {q} at {lat},{lng} r={radius}");
            nonempty += usize::from(!want.is_empty());
        }
        assert!(nonempty > 120, "too few queries found anything: {nonempty}");
    }

    #[test]
    fn empty_grid_answers_nothing() {
        let grid = Grid::build(&[]);
        assert!(grid.nearby(0.0, 0.0, 50_000.0, 20).is_empty());
    }
}

#[cfg(test)]
mod real_data {
    use super::*;
    use crate::places::Places;

    #[test]
    fn grid_matches_brute_force_on_the_committed_places() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .join("data/places/cities1000.tsv");
        let places = Places::load(&path).unwrap();
        assert!(places.len() > 150_000);
        let coords = places.coordinates();
        let grid = Grid::build(&coords);
        // Centres near real places (a stride through the file), all radii.
        for (q, i) in (0..coords.len()).step_by(coords.len() / 40).enumerate() {
            let (lat, lng) = coords[i];
            let (lat, lng) = ((lat + 0.05).min(90.0), lng - 0.05);
            let radius = 1_000.0 + (q as f64 * 1_237.0) % 49_000.0;
            assert_eq!(
                grid.nearby(lat, lng, radius, 20),
                brute_force(&coords, lat, lng, radius, 20),
                "at {lat},{lng} r={radius}"
            );
        }
    }

    /// Prints the mean cost of a 50 km query around real places; run with
    /// `cargo test --release -- --ignored --nocapture query_cost`.
    #[test]
    #[ignore]
    fn query_cost() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .join("data/places/cities1000.tsv");
        let coords = Places::load(&path).unwrap().coordinates();
        let grid = Grid::build(&coords);
        let centres: Vec<(f64, f64)> = coords.iter().step_by(17).copied().collect();
        let start = std::time::Instant::now();
        let mut found = 0;
        for &(lat, lng) in &centres {
            found += grid.nearby(lat, lng, 50_000.0, 20).len();
        }
        let per = start.elapsed() / centres.len() as u32;
        println!(
            "{} queries at 50 km, {per:?} each, {:.1} results on average",
            centres.len(),
            found as f64 / centres.len() as f64
        );
    }
}
