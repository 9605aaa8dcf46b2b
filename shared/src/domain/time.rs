//! Timestamps: parsing the forms clients send, and the one form The Eye stores.
//!
//! Every timestamp is normalised to UTC with microsecond precision and printed as
//! `YYYY-MM-DDTHH:MM:SS.ffffffZ`: 27 bytes, fixed width, so byte order is time order.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

/// Microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Length of [`Timestamp::to_rfc3339`]'s output.
pub const TIMESTAMP_LEN: usize = 27;

const MIN_YEAR: i32 = 1970;
const MAX_YEAR: i32 = 9999;

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_micros())
    }

    /// From microseconds since the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// This time shifted by `micros` (negative moves back).
    pub const fn add_micros(self, micros: i64) -> Self {
        Self(self.0.saturating_add(micros))
    }

    /// Parses the forms The Eye accepts:
    /// - `YYYY-MM-DD HH:MM:SS[.f…]`, the seed's form, no zone, taken as UTC;
    /// - the same with `T` instead of the space;
    /// - RFC 3339, with `Z` or a `±HH:MM` offset.
    ///
    /// Fractions may have 1–9 digits; digits past the sixth are truncated.
    pub fn parse(input: &str) -> Result<Self, TimestampError> {
        parse(input.as_bytes()).map_err(|reason| TimestampError {
            input: input.chars().take(40).collect(),
            reason,
        })
    }

    /// The stored form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub fn to_rfc3339(self) -> String {
        let mut out = String::with_capacity(TIMESTAMP_LEN);
        self.write_rfc3339(&mut out);
        out
    }

    /// Appends the stored form to `out`.
    pub fn write_rfc3339(self, out: &mut String) {
        let dt = self.datetime();
        let (y, mo, d) = (dt.year(), dt.month(), dt.day());
        let (h, mi, s) = (dt.hour(), dt.minute(), dt.second());
        let micros = self.0.rem_euclid(1_000_000);
        use fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}Z"
        );
    }

    /// The UTC calendar day, `YYYY-MM-DD`: the time bucket of the AWS time indexes.
    pub fn day(self) -> String {
        let dt = self.datetime();
        format!("{:04}-{:02}-{:02}", dt.year(), dt.month(), dt.day())
    }

    /// The start of this timestamp's UTC day.
    pub fn start_of_day(self) -> Self {
        const DAY: i64 = 86_400_000_000;
        Self(self.0.div_euclid(DAY) * DAY)
    }

    fn datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.0).unwrap_or_default()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid timestamp: {reason}")]
pub struct TimestampError {
    /// The start of the input, for the message.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// What a valid timestamp looks like, for error messages.
pub const TIMESTAMP_FORMS: &str = "use \"YYYY-MM-DD HH:MM:SS[.ffffff]\" (UTC), \
     \"YYYY-MM-DDTHH:MM:SS[.ffffff]\" or RFC 3339 with Z or an offset";

fn parse(b: &[u8]) -> Result<Timestamp, &'static str> {
    const SHAPE: &str = "expected YYYY-MM-DD HH:MM:SS[.ffffff][Z|±HH:MM]";
    if b.len() < 19 {
        return Err(SHAPE);
    }
    let sep_ok = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b' ' | b'T' | b't')
        && b[13] == b':'
        && b[16] == b':';
    if !sep_ok {
        return Err(SHAPE);
    }
    let year = digits(&b[0..4]).ok_or(SHAPE)? as i32;
    let month = digits(&b[5..7]).ok_or(SHAPE)?;
    let day = digits(&b[8..10]).ok_or(SHAPE)?;
    let hour = digits(&b[11..13]).ok_or(SHAPE)?;
    let minute = digits(&b[14..16]).ok_or(SHAPE)?;
    let second = digits(&b[17..19]).ok_or(SHAPE)?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return Err("the year must be between 1970 and 9999");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("the time of day is out of range");
    }
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or("no such calendar date")?;

    let mut rest = &b[19..];
    let mut micros: i64 = 0;
    if let Some((&b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return Err("the fraction of a second must have 1 to 9 digits");
        }
        for (i, c) in frac[..n].iter().enumerate() {
            if i < 6 {
                micros = micros * 10 + i64::from(c - b'0');
            }
        }
        for _ in n..6 {
            micros *= 10;
        }
        rest = &frac[n..];
    }

    let offset_secs: i64 = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2]).ok_or("the zone offset must be ±HH:MM")?;
            let m = digits(&[*m1, *m2]).ok_or("the zone offset must be ±HH:MM")?;
            if h > 23 || m > 59 {
                return Err("the zone offset is out of range");
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return Err("unexpected text after the time; a zone must be Z or ±HH:MM"),
    };

    let days = i64::from(date.num_days_from_ce() - 719_163); // 719163 = days from CE to 1970-01-01
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Ok(Timestamp(secs * 1_000_000 + micros))
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Timestamp::parse(s)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|e| format!("ERR {}", e.reason))
    }

    #[test]
    fn seed_form_is_utc_with_microseconds() {
        assert_eq!(
            p("2021-01-01 09:15:27.243860"),
            "2021-01-01T09:15:27.243860Z"
        );
    }

    #[test]
    fn t_separator_and_no_fraction() {
        assert_eq!(p("2021-01-01T09:15:27"), "2021-01-01T09:15:27.000000Z");
        assert_eq!(p("2021-01-01 09:15:27"), "2021-01-01T09:15:27.000000Z");
    }

    #[test]
    fn rfc3339_zulu_and_offsets_normalise_to_utc() {
        assert_eq!(p("2021-01-01T09:15:27.5Z"), "2021-01-01T09:15:27.500000Z");
        assert_eq!(
            p("2021-01-01T09:15:27+02:00"),
            "2021-01-01T07:15:27.000000Z"
        );
        assert_eq!(
            p("2021-01-01T01:15:27.000001-03:30"),
            "2021-01-01T04:45:27.000001Z"
        );
        // An offset that crosses midnight and a year boundary.
        assert_eq!(
            p("2021-01-01T00:30:00+01:00"),
            "2020-12-31T23:30:00.000000Z"
        );
    }

    #[test]
    fn nanoseconds_are_truncated_to_microseconds() {
        assert_eq!(
            p("2021-01-01T09:15:27.123456789Z"),
            "2021-01-01T09:15:27.123456Z"
        );
    }

    #[test]
    fn refuses_malformed_and_impossible_times() {
        for bad in [
            "",
            "yesterday",
            "2021-01-01",
            "2021/01/01 09:15:27",
            "2021-02-30 10:00:00",
            "2021-01-01 24:00:00",
            "2021-01-01 09:61:00",
            "2021-01-01 09:15:27.",
            "2021-01-01 09:15:27.1234567890",
            "2021-01-01 09:15:27 UTC",
            "2021-01-01 09:15:27+0200",
            "1969-12-31 23:59:59",
            "2021-01-01 09:15:27Z trailing",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn leap_day_is_accepted() {
        assert_eq!(p("2024-02-29 12:00:00"), "2024-02-29T12:00:00.000000Z");
    }

    #[test]
    fn format_is_fixed_width_and_sorts_like_time() {
        let a = Timestamp::parse("1970-01-01 00:00:00").unwrap();
        let b = Timestamp::parse("2021-01-01 09:15:27.000001").unwrap();
        let c = Timestamp::parse("9999-12-31 23:59:59.999999").unwrap();
        for t in [a, b, c] {
            assert_eq!(t.to_rfc3339().len(), TIMESTAMP_LEN);
        }
        assert!(a.to_rfc3339() < b.to_rfc3339() && b.to_rfc3339() < c.to_rfc3339());
        assert_eq!(a.as_micros(), 0);
    }

    #[test]
    fn round_trips_through_its_own_form() {
        let t = Timestamp::parse("2021-06-30T23:59:59.999999+05:45").unwrap();
        assert_eq!(Timestamp::parse(&t.to_rfc3339()).unwrap(), t);
    }

    #[test]
    fn day_bucket() {
        let t = Timestamp::parse("2021-01-01T23:59:59.999999Z").unwrap();
        assert_eq!(t.day(), "2021-01-01");
        assert_eq!(t.start_of_day().to_rfc3339(), "2021-01-01T00:00:00.000000Z");
    }
}
