//! Query ranges and filters, defined once for every backend: which keys a
//! page may hold given a cursor and a time range, what a valid filter is, and
//! the day buckets of a time range.
//!
//! Keys are `"<timestamp>#<seq>"` ([`super::keys`]): fixed width, so byte
//! order is time order. A range is exclusive at both ends: after the cursor
//! (or at `from`), before `to`.

use super::keys::time_floor;
use super::model::ErrorCode;
use super::time::{TIMESTAMP_LEN, Timestamp};

/// Why a filter cannot be answered. The messages say what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// An empty category.
    #[error("`category` is empty; give a category name")]
    EmptyCategory,
    /// A category with a control character, which no stored event has.
    #[error("`category` contains a control character; no event's category does")]
    ControlInCategory,
    /// A scan of a time index bucketed by day (DynamoDB's) without a start.
    #[error(
        "this backend's time index is bucketed by day, so a query without a category (events) or a code (error records) needs `from`"
    )]
    NeedsFrom,
}

/// What a query answer says when `from` is after `to`: a valid range, and an
/// empty one (`from` inclusive, `to` exclusive), most likely swapped.
fn reversed_range(from: Option<Timestamp>, to: Option<Timestamp>) -> Option<String> {
    match (from, to) {
        (Some(from), Some(to)) if from > to => Some(format!(
            "`from` ({from}) is after `to` ({to}), so the range is empty; `from` is inclusive and `to` exclusive"
        )),
        _ => None,
    }
}

/// Which events to list: a category, a time range of `timestamp`, both, or
/// neither (every event, by time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this category.
    pub category: Option<String>,
    /// From this time, inclusive.
    pub from: Option<Timestamp>,
    /// Up to this time, exclusive.
    pub to: Option<Timestamp>,
    /// Only this application's (a key restricted to its own app).
    pub app: Option<String>,
}

impl EventFilter {
    /// A filter, checked.
    pub fn new(
        category: Option<String>,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Self, FilterError> {
        if category.as_deref() == Some("") {
            return Err(FilterError::EmptyCategory);
        }
        if category
            .as_deref()
            .is_some_and(|c| c.chars().any(char::is_control))
        {
            return Err(FilterError::ControlInCategory);
        }
        Ok(Self {
            category,
            from,
            to,
            app: None,
        })
    }

    /// The same filter, narrowed to `app` when it is given.
    pub fn only_app(mut self, app: Option<&str>) -> Self {
        self.app = app.map(str::to_owned);
        self
    }

    /// When `from` is after `to`, what to tell the caller: nothing matches.
    pub fn reversed_range(&self) -> Option<String> {
        reversed_range(self.from, self.to)
    }
}

/// Which error records to list: a code, a range of `received_at`, or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFilter {
    /// Only this code.
    pub code: Option<ErrorCode>,
    /// Received from this time, inclusive.
    pub from: Option<Timestamp>,
    /// Received before this time, exclusive.
    pub to: Option<Timestamp>,
    /// Only this application's (a key restricted to its own app).
    pub app: Option<String>,
}

impl ErrorFilter {
    /// A filter, checked.
    pub fn new(
        code: Option<ErrorCode>,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Self, FilterError> {
        Ok(Self {
            code,
            from,
            to,
            app: None,
        })
    }

    /// The same filter, narrowed to `app` when it is given.
    pub fn only_app(mut self, app: Option<&str>) -> Self {
        self.app = app.map(str::to_owned);
        self
    }

    /// When `from` is after `to`, what to tell the caller: nothing matches.
    pub fn reversed_range(&self) -> Option<String> {
        reversed_range(self.from, self.to)
    }
}

/// The keys one page may hold: after the cursor, within `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Every key in the range is greater than this.
    after: String,
    /// Every key in the range is less than this.
    before: String,
}

impl KeyRange {
    /// The keys after `cursor` (the last key of the previous page) and in
    /// `[from, to)`.
    pub fn new(cursor: Option<&str>, from: Option<Timestamp>, to: Option<Timestamp>) -> Self {
        // A floor ends with '#', and every key has 32 hex digits after it, so
        // no key equals a floor: "greater than the floor" is "at or after from".
        let floor = from.map(time_floor).unwrap_or_default();
        let after = match cursor {
            Some(c) if c >= floor.as_str() => c.to_owned(),
            _ => floor,
        };
        let before = to.map(time_floor).unwrap_or_else(|| "~".into());
        Self { after, before }
    }

    /// Every key in the range is greater than this one.
    pub fn after(&self) -> &str {
        &self.after
    }

    /// Every key in the range is less than this one.
    pub fn before(&self) -> &str {
        &self.before
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &str) -> bool {
        key > self.after.as_str() && key < self.before.as_str()
    }

    /// The range as inclusive bounds, for DynamoDB's `BETWEEN` (which also
    /// refuses a lower bound above the upper one). Keys have a fixed width
    /// and start with a digit, so every key greater than `after` is greater
    /// than `after` followed by `!`; no key equals the upper floor.
    pub fn inclusive(&self) -> (String, String) {
        (format!("{}!", self.after), self.before.clone())
    }

    /// Whether no key can be in the range.
    pub fn is_empty(&self) -> bool {
        self.after >= self.before
    }

    /// The earliest time a key in the range can have.
    pub fn earliest(&self) -> Option<Timestamp> {
        self.after
            .get(..TIMESTAMP_LEN)
            .and_then(|t| Timestamp::parse(t).ok())
    }

    /// The UTC days a scan of a day-bucketed time index reads, in order:
    /// from the range's start (`from`, or later after a cursor) to the day
    /// before `to`, or to tomorrow (by `now`) when the range is open.
    pub fn days(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<Vec<String>, FilterError> {
        const DAY: i64 = 86_400_000_000;
        let from = from.ok_or(FilterError::NeedsFrom)?;
        let start = self.earliest().map_or(from, |t| t.max(from));
        let last = to.map_or_else(|| now.add_micros(DAY), |t| t.add_micros(-1));
        let mut out = Vec::new();
        let mut day = start.start_of_day();
        while day <= last {
            out.push(day.day());
            day = day.add_micros(DAY);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::keys::{Seq, ts_seq};

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn a_range_holds_what_is_after_the_cursor_and_within_from_to() {
        let at = t("2021-01-01T00:00:00Z");
        let key = |s: &str, seq| ts_seq(t(s), Seq(seq));
        let r = KeyRange::new(None, Some(at), Some(at.add_micros(1)));
        assert!(
            r.contains(&key("2021-01-01T00:00:00Z", 0)),
            "from is inclusive"
        );
        assert!(
            !r.contains(&key("2021-01-01T00:00:00.000001Z", 0)),
            "to is exclusive"
        );
        assert!(!r.contains(&key("2020-12-31T23:59:59.999999Z", u128::MAX)));
        let r = KeyRange::new(Some(&key("2021-01-01T00:00:00Z", 5)), Some(at), None);
        assert!(
            !r.contains(&key("2021-01-01T00:00:00Z", 5)),
            "the cursor is exclusive"
        );
        assert!(r.contains(&key("2021-01-01T00:00:00Z", 6)));
        // A cursor before `from` (forged, or from a wider query) does not widen it.
        let r = KeyRange::new(Some(&key("2020-01-01T00:00:00Z", 1)), Some(at), None);
        assert!(!r.contains(&key("2020-06-01T00:00:00Z", 1)));
        let open = KeyRange::new(None, None, None);
        assert!(open.contains(&key("1970-01-01T00:00:00Z", 0)));
        assert!(open.contains(&key("9999-12-31T23:59:59.999999Z", u128::MAX)));
    }

    #[test]
    fn inclusive_bounds_select_the_same_keys() {
        let at = t("2021-01-01T00:00:00Z");
        let keys: Vec<String> = (0..4)
            .flat_map(|d| (0..3).map(move |s| ts_seq(at.add_micros(d * 1_000_000), Seq(s))))
            .collect();
        for r in [
            KeyRange::new(None, None, None),
            KeyRange::new(Some(&keys[4]), None, Some(at.add_micros(3_000_000))),
            KeyRange::new(None, Some(at.add_micros(1_000_000)), None),
        ] {
            let (lo, hi) = r.inclusive();
            for k in &keys {
                let between = k.as_str() >= lo.as_str() && k.as_str() <= hi.as_str();
                assert_eq!(between, r.contains(k), "{k} in {r:?}");
            }
        }
    }

    #[test]
    fn a_forged_cursor_past_to_makes_an_empty_range() {
        let to = t("2021-01-02T00:00:00Z");
        let r = KeyRange::new(Some("2030-01-01T00:00:00.000000Z#00"), None, Some(to));
        assert!(r.is_empty());
        assert!(!KeyRange::new(None, None, Some(to)).is_empty());
    }

    #[test]
    fn day_buckets_cover_the_range_and_need_from() {
        let now = t("2021-01-10T00:00:00Z");
        let from = t("2021-01-01T23:00:00Z");
        let r = KeyRange::new(None, Some(from), None);
        let to = t("2021-01-03T00:00:00Z");
        assert_eq!(
            r.days(Some(from), Some(to), now).unwrap(),
            ["2021-01-01", "2021-01-02"]
        );
        let to = t("2021-01-03T00:00:00.000001Z");
        assert_eq!(
            r.days(Some(from), Some(to), now).unwrap(),
            ["2021-01-01", "2021-01-02", "2021-01-03"]
        );
        assert_eq!(
            r.days(Some(from), None, now).unwrap().len(),
            11,
            "to tomorrow"
        );
        // After a cursor, the days before it are skipped.
        let cursor = ts_seq(t("2021-01-02T05:00:00Z"), Seq(1));
        let r = KeyRange::new(Some(&cursor), Some(from), Some(to));
        assert_eq!(
            r.days(Some(from), Some(to), now).unwrap(),
            ["2021-01-02", "2021-01-03"]
        );
        assert_eq!(r.days(None, Some(to), now), Err(FilterError::NeedsFrom));
    }

    #[test]
    fn filters_are_checked_once_for_every_caller() {
        let (a, b) = (t("2021-01-01T00:00:00Z"), t("2021-01-02T00:00:00Z"));
        let every = EventFilter::new(None, None, None).unwrap();
        assert_eq!(every.reversed_range(), None, "every event, by time");
        assert_eq!(
            EventFilter::new(Some(String::new()), None, None),
            Err(FilterError::EmptyCategory)
        );
        assert_eq!(
            EventFilter::new(Some("a\u{9b}".into()), None, None),
            Err(FilterError::ControlInCategory)
        );
        // `from` after `to` is valid and empty, with a warning.
        let reversed = EventFilter::new(None, Some(b), Some(a)).unwrap();
        let warning = reversed.reversed_range().unwrap();
        assert!(warning.contains("is after `to`"), "{warning}");
        assert!(KeyRange::new(None, reversed.from, reversed.to).is_empty());
        let same = EventFilter::new(None, Some(a), Some(a)).unwrap();
        assert_eq!(
            same.reversed_range(),
            None,
            "from = to is an empty range, as the OpenAPI document allows"
        );
        assert!(KeyRange::new(None, same.from, same.to).is_empty());
        assert!(EventFilter::new(Some("c".into()), None, None).is_ok());
        assert!(
            ErrorFilter::new(None, None, None).is_ok(),
            "every error record"
        );
        let reversed = ErrorFilter::new(None, Some(b), Some(a)).unwrap();
        assert!(reversed.reversed_range().is_some());
        assert!(KeyRange::new(None, reversed.from, reversed.to).is_empty());
    }
}
