//! Named places with optional coordinates, and the great-circle distance between them.

use serde::{Deserialize, Serialize};

/// A place: a name (`Garching`) and, when known, WGS84 coordinates in degrees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Human name of the place; matched case-insensitively.
    pub name: String,
    /// Latitude in degrees, -90..=90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Longitude in degrees, -180..=180.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
}

// Coordinates are checked finite at every entry point, so equality is total in practice.
impl Eq for Location {}

impl Location {
    /// A location known by name only.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            latitude: None,
            longitude: None,
        }
    }

    /// Both coordinates, when both are known.
    pub fn coordinates(&self) -> Option<(f64, f64)> {
        Some((self.latitude?, self.longitude?))
    }

    /// Great-circle distance in kilometres (haversine), when both places have coordinates.
    pub fn distance_km(&self, other: &Location) -> Option<f64> {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (lat1, lon1) = self.coordinates()?;
        let (lat2, lon2) = other.coordinates()?;
        let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
        let dp = (lat2 - lat1).to_radians();
        let dl = (lon2 - lon1).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        Some(2.0 * EARTH_RADIUS_KM * a.sqrt().asin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garching_to_munich_is_about_fifteen_km() {
        let garching = Location {
            name: "Garching".into(),
            latitude: Some(48.2489),
            longitude: Some(11.6532),
        };
        let munich = Location {
            name: "Munich".into(),
            latitude: Some(48.1374),
            longitude: Some(11.5755),
        };
        let d = garching.distance_km(&munich).unwrap();
        assert!((12.0..16.0).contains(&d), "{d}");
        assert_eq!(Location::named("x").distance_km(&munich), None);
    }
}
