//! Human-friendly durations ("5s", "10m", "250ms") and sizes ("64MB", "8kB") for the config.

use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A duration written as a string with a unit: `ms`, `s`, `m`, `h`, `d`. `"0"` alone means zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub const fn secs(s: u64) -> Self {
        ConfigDuration(Duration::from_secs(s))
    }
    /// `None` when the duration is zero, which in our config always means "off".
    pub fn non_zero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

/// Parses `"5s"`, `"10m"`, `"250ms"`, `"1h"`, `"2d"`, `"0"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let millis = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s, m, h or d)")),
    };
    number
        .checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(ConfigDuration)
            .map_err(de::Error::custom)
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A byte size written as a string: `"64MB"`, `"8kB"`, `"512"` (bytes). Units are powers of 1024,
/// as in postgresql.conf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

/// Parses `"512"`, `"8kB"`, `"64MB"`, `"1GB"` (case-insensitive unit, optional `B`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        "t" | "tb" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} (use B, kB, MB, GB or TB)")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_size(&text).map(ByteSize).map_err(de::Error::custom)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b != 0 && b % (1 << 30) == 0 {
            write!(f, "{}GB", b >> 30)
        } else if b != 0 && b % (1 << 20) == 0 {
            write!(f, "{}MB", b >> 20)
        } else if b != 0 && b % (1 << 10) == 0 {
            write!(f, "{}kB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MB"), Ok(64 << 20));
        assert_eq!(parse_size("8kB"), Ok(8 << 10));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert!(parse_size("MB").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in ["5s", "250ms", "64MB", "8kB", "512B"] {
            let shown = if text.ends_with('s') {
                ConfigDuration(parse_duration(text).unwrap()).to_string()
            } else {
                ByteSize(parse_size(text).unwrap()).to_string()
            };
            assert_eq!(shown, text);
        }
    }
}

/// A password in the configuration: read like a string, never shown by `{:?}` (configs are
/// logged with Debug).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct HiddenString(pub String);

impl std::fmt::Debug for HiddenString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}
