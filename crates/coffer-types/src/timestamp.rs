//! Wall-clock instants with microsecond precision, stored as an integer and rendered as
//! RFC 3339 in UTC (the form Cloudflare's API returns).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let micros = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            // A clock before 1970 is a misconfigured host; clamp rather than panic.
            Err(_) => 0,
        };
        Timestamp(micros)
    }

    pub const fn from_unix_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// Adds a number of seconds, saturating.
    pub fn plus_seconds(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs.saturating_mul(1_000_000)))
    }

    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            // Only reachable for instants outside years 0..=9999, which `now()` cannot make.
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
    }

    /// Parses an RFC 3339 date-time. Instants that fall outside years 1970 to 9999 in UTC are
    /// refused (`None`): they could not be rendered back.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        // The Unix time does not depend on the offset (and, unlike converting to UTC, cannot
        // panic at the edges of the representable range). 253402300799 is 9999-12-31T23:59:59Z.
        if !(0..=253_402_300_799).contains(&t.unix_timestamp()) {
            return None;
        }
        let micros = t.unix_timestamp_nanos() / 1000;
        i64::try_from(micros).ok().map(Timestamp)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3339_utc_and_parses_back() {
        let t = Timestamp::from_unix_micros(1_695_322_592_624_632);
        assert_eq!(t.to_rfc3339(), "2023-09-21T18:56:32.624632Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
        // Year 10000 in UTC, though 9999 in its own offset; and before the epoch.
        assert_eq!(Timestamp::parse_rfc3339("9999-12-31T23:59:59-23:59"), None);
        assert_eq!(Timestamp::parse_rfc3339("1969-12-31T23:59:59Z"), None);
        assert!(Timestamp::parse_rfc3339("9999-12-31T23:59:59Z").is_some());
    }

    #[test]
    fn now_is_after_2020() {
        assert!(Timestamp::now().unix_micros() > 1_577_836_800_000_000);
    }
}
