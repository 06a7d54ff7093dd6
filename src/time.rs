//! Time in one place: every provider timestamp (RFC 3339 with any precision, epoch
//! milliseconds) becomes a [`Timestamp`], and every timestamp written to the mirror uses one
//! fixed-width text format so that text order is time order in SQL.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// An instant in UTC with nanosecond precision.
///
/// Providers disagree on precision (Dynamics 365 sends 7 fractional digits, HighLevel epoch
/// milliseconds); keeping nanoseconds means a watermark never rounds past a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(DateTime<Utc>);

/// A provider sent a timestamp we cannot read.
#[derive(Debug, thiserror::Error)]
#[error("invalid timestamp {value:?}: {reason}")]
pub struct TimestampError {
    value: String,
    reason: String,
}

impl Timestamp {
    /// The current instant.
    pub fn now() -> Self {
        Timestamp(Utc::now())
    }

    /// The Unix epoch, used by some providers as "never" (see [`Timestamp::unless_epoch`]).
    pub const UNIX_EPOCH: Timestamp = Timestamp(DateTime::UNIX_EPOCH);

    /// Parses RFC 3339 with any number of fractional digits and any offset. A leap second
    /// (`23:59:60`) becomes the last nanosecond before the next minute (see
    /// [`Timestamp::from`]).
    pub fn parse_rfc3339(value: &str) -> Result<Self, TimestampError> {
        DateTime::parse_from_rfc3339(value.trim())
            .map(|t| Timestamp::from(t.with_timezone(&Utc)))
            .map_err(|e| TimestampError {
                value: value.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Reads epoch milliseconds (HighLevel's date representation).
    pub fn from_epoch_millis(millis: i64) -> Result<Self, TimestampError> {
        Utc.timestamp_millis_opt(millis)
            .single()
            .map(Timestamp)
            .ok_or_else(|| TimestampError {
                value: millis.to_string(),
                reason: "out of range for epoch milliseconds".into(),
            })
    }

    /// Milliseconds since the Unix epoch (floor).
    pub fn epoch_millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    /// `None` for the Unix epoch itself, which Sinch uses to mean "no message yet".
    pub fn unless_epoch(self) -> Option<Self> {
        (self != Self::UNIX_EPOCH).then_some(self)
    }

    /// The mirror's text form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always 6 fractional digits.
    ///
    /// A fixed width keeps lexical order equal to time order, and SQLite's date functions
    /// accept it. Sub-microsecond digits are truncated (the raw JSON keeps them).
    pub fn to_mirror_text(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// RFC 3339 with all 9 fractional digits, for cursors and request parameters that must
    /// not lose precision.
    pub fn to_rfc3339_nanos(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Nanos, true)
    }

    /// RFC 3339 with exactly 7 fractional digits (.NET ticks), as Dynamics 365 writes them.
    pub fn to_rfc3339_ticks(self) -> String {
        let nanos = self.0.timestamp_subsec_nanos();
        format!("{}.{:07}Z", self.0.format("%Y-%m-%dT%H:%M:%S"), nanos / 100)
    }

    /// RFC 3339 with whole seconds only.
    pub fn to_rfc3339_seconds(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// This instant moved back by `by`, saturating at the epoch.
    pub fn saturating_sub(self, by: Duration) -> Self {
        chrono::Duration::from_std(by)
            .ok()
            .and_then(|d| self.0.checked_sub_signed(d))
            .map(Timestamp)
            .unwrap_or(Self::UNIX_EPOCH)
    }

    /// This instant moved forward by `by`, saturating at the far future.
    pub fn saturating_add(self, by: Duration) -> Self {
        chrono::Duration::from_std(by)
            .ok()
            .and_then(|d| self.0.checked_add_signed(d))
            .map(Timestamp)
            .unwrap_or(Timestamp(DateTime::<Utc>::MAX_UTC))
    }

    /// How long ago this instant was, zero when it lies in the future.
    pub fn elapsed_until(self, later: Timestamp) -> Duration {
        (later.0 - self.0).to_std().unwrap_or(Duration::ZERO)
    }

    /// The underlying chrono value.
    pub fn as_datetime(self) -> DateTime<Utc> {
        self.0
    }
}

impl From<DateTime<Utc>> for Timestamp {
    /// Folds a leap second into the second before it (`23:59:60.5` becomes
    /// `23:59:59.999999999`): chrono would write it back as `:60`, which SQLite's date
    /// functions reject, and the fold keeps it after everything earlier and before the
    /// next minute, so order and watermarks stay right.
    fn from(value: DateTime<Utc>) -> Self {
        if value.nanosecond() >= 1_000_000_000 {
            // A leap second's nanoseconds run on past one billion; 999_999_999 is valid
            // for every instant, so this never fails.
            return Timestamp(value.with_nanosecond(999_999_999).unwrap_or(value));
        }
        Timestamp(value)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_mirror_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_fractional_digits_survive_a_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-03-02T09:15:03.1234567Z").unwrap();
        assert_eq!(t.to_rfc3339_ticks(), "2026-03-02T09:15:03.1234567Z");
        assert_eq!(t.to_rfc3339_nanos(), "2026-03-02T09:15:03.123456700Z");
    }

    #[test]
    fn mirror_text_has_fixed_width_so_text_order_is_time_order() {
        let a = Timestamp::parse_rfc3339("2026-03-02T09:15:03Z").unwrap();
        let b = Timestamp::parse_rfc3339("2026-03-02T09:15:03.5+00:00").unwrap();
        assert_eq!(a.to_mirror_text(), "2026-03-02T09:15:03.000000Z");
        assert_eq!(b.to_mirror_text(), "2026-03-02T09:15:03.500000Z");
        assert!(a.to_mirror_text() < b.to_mirror_text());
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t = Timestamp::parse_rfc3339("2026-03-02T10:15:03+01:00").unwrap();
        assert_eq!(t.to_rfc3339_seconds(), "2026-03-02T09:15:03Z");
    }

    #[test]
    fn epoch_millis_round_trip_and_epoch_means_none() {
        let t = Timestamp::from_epoch_millis(1_772_443_200_123).unwrap();
        assert_eq!(t.epoch_millis(), 1_772_443_200_123);
        let epoch = Timestamp::parse_rfc3339("1970-01-01T00:00:00Z").unwrap();
        assert_eq!(epoch.unless_epoch(), None);
        assert_eq!(t.unless_epoch(), Some(t));
    }

    #[test]
    fn a_leap_second_is_stored_in_a_form_sqlite_reads_and_keeps_its_order() {
        let before = Timestamp::parse_rfc3339("2016-12-31T23:59:59.5Z").unwrap();
        let leap = Timestamp::parse_rfc3339("2016-12-31T23:59:60Z").unwrap();
        let after = Timestamp::parse_rfc3339("2017-01-01T00:00:00Z").unwrap();
        assert_eq!(leap.to_mirror_text(), "2016-12-31T23:59:59.999999Z");
        assert_eq!(leap.to_rfc3339_nanos(), "2016-12-31T23:59:59.999999999Z");
        assert!(before < leap && leap < after);
        let offset = Timestamp::parse_rfc3339("2017-01-01T00:59:60.25+01:00").unwrap();
        assert_eq!(offset, leap);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
        assert!(Timestamp::from_epoch_millis(i64::MAX).is_err());
    }
}
