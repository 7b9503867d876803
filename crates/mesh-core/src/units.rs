//! Human units used in the config file: durations (`250ms`), rates
//! (`100/s`), sizes (`8KiB`) and timestamps (RFC 3339).
//!
//! Every parser is strict: it returns a message naming what was wrong and
//! never panics, whatever the input.

use std::fmt;
use std::time::{Duration, SystemTime};

/// Parses a duration such as `250ms`, `2s`, `1.5s`, `5m`, `1h` or `7d`.
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`. A unit is
/// required; `0` alone is accepted as zero.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(mesh_core::units::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert!(mesh_core::units::parse_duration("250").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{input}` has no unit (use ns, us, ms, s, m, h or d)"))?;
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(format!("`{input}` does not start with a number"));
    }
    let nanos_per_unit: f64 = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3_600e9,
        "d" => 86_400e9,
        _ => {
            return Err(format!(
                "`{input}` has an unknown unit `{unit}` (use ns, us, ms, s, m, h or d)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))?;
    let nanos = value * nanos_per_unit;
    // ~ 292 years: far beyond any sensible policy value.
    if !nanos.is_finite() || nanos > 9.0e18 {
        return Err(format!("`{input}` is too large"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Formats a duration in the shortest unit that is exact (`1500ms`, `2s`, `5m`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    const UNITS: [(u128, &str); 7] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
        (1, "ns"),
    ];
    if nanos == 0 {
        return "0".to_owned();
    }
    for (size, unit) in UNITS {
        if nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

/// The period of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Period {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour (quotas: aligned to the UTC hour).
    Hour,
    /// One day (quotas: aligned to UTC midnight).
    Day,
    /// One calendar month in UTC. Only meaningful for quotas.
    Month,
}

impl Period {
    /// The period's length; a month counts as 30 days here (quotas use the
    /// calendar instead).
    pub fn approx_duration(self) -> Duration {
        match self {
            Period::Second => Duration::from_secs(1),
            Period::Minute => Duration::from_secs(60),
            Period::Hour => Duration::from_secs(3_600),
            Period::Day => Duration::from_secs(86_400),
            Period::Month => Duration::from_secs(30 * 86_400),
        }
    }

    /// The canonical short name (`s`, `min`, `h`, `d`, `month`).
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Second => "s",
            Period::Minute => "min",
            Period::Hour => "h",
            Period::Day => "d",
            Period::Month => "month",
        }
    }
}

/// A count per period, written `100/s`, `5000/h`, `1000000/month`.
///
/// ```
/// use mesh_core::units::{Period, Rate};
/// let r: Rate = "5000/h".parse().unwrap();
/// assert_eq!((r.amount, r.period), (5000, Period::Hour));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// How many per period; always greater than zero.
    pub amount: u64,
    /// The period.
    pub period: Period,
}

impl Rate {
    /// The average interval between two units at this rate.
    pub fn interval(&self) -> Duration {
        // amount > 0 is guaranteed by the parser.
        self.period.approx_duration() / (self.amount.min(u32::MAX as u64) as u32).max(1)
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(input: &str) -> Result<Self, String> {
        let (amount, per) = input
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{input}` is not a rate (write it like `100/s`)"))?;
        let amount: u64 = amount
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a whole number", amount.trim()))?;
        if amount == 0 {
            return Err(format!("`{input}` must allow at least 1 per period"));
        }
        let period = match per.trim() {
            "s" | "sec" | "second" => Period::Second,
            "m" | "min" | "minute" => Period::Minute,
            "h" | "hour" => Period::Hour,
            "d" | "day" => Period::Day,
            "month" => Period::Month,
            other => {
                return Err(format!(
                    "`{other}` is not a period (use s, min, h, d or month)"
                ));
            }
        };
        Ok(Rate { amount, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.amount, self.period.as_str())
    }
}

/// Parses a size: `512B`, `8KiB`, `1MiB`, `1GiB`, `10KB` (decimal), or a
/// bare number of bytes.
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{input}` does not start with a whole number"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "`{other}` is not a size unit (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    value
        .checked_mul(mult)
        .ok_or_else(|| format!("`{input}` is too large"))
}

/// Parses an RFC 3339 timestamp in UTC such as `2026-06-30T00:00:00Z`.
pub fn parse_timestamp(input: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339(input.trim()).map_err(|e| {
        format!("`{input}` is not an RFC 3339 UTC timestamp like 2026-06-30T00:00:00Z ({e})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "10",
            "10x",
            "-1s",
            "1e9999s",
            "1..2s",
            "99999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
    }

    #[test]
    fn rates() {
        let r: Rate = "100/s".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_millis(10));
        assert_eq!(
            "1000000/month".parse::<Rate>().unwrap().period,
            Period::Month
        );
        for bad in ["", "100", "0/s", "x/s", "10/fortnight", "/s", "-1/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_times() {
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("8 lots").is_err());
        assert!(parse_size("99999999999999999GiB").is_err());
        assert!(parse_timestamp("2026-06-30T00:00:00Z").is_ok());
        assert!(parse_timestamp("June 30").is_err());
    }
}
