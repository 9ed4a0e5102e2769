//! Slots: the moments a cron expression names, in a time zone, and which of
//! them are due, missed or next.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};

/// A cron expression in a time zone: 5 fields, or 6 with seconds first.
#[derive(Debug, Clone)]
pub struct Cron {
    text: String,
    zone: Tz,
    cron: croner::Cron,
}

/// The most missed slots recorded one by one after a long absence; the
/// rest are counted only.
pub const MAX_MISSED_RECORDED: usize = 100;

impl Cron {
    /// Parses `text` in `zone`; the error says what to write.
    pub fn parse(text: &str, zone: Tz) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        if !(fields == 5 || fields == 6) {
            return Err(format!(
                "`{text}` has {fields} fields; write 5 (minute hour day month weekday, like \"*/15 * * * *\") or 6 with seconds first (like \"*/2 * * * * *\")"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| {
                format!("`{text}` is not a cron expression ({e}); write 5 fields like \"*/15 * * * *\", or 6 with seconds first")
            })?;
        Ok(Cron {
            text: text.to_owned(),
            zone,
            cron,
        })
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its time zone.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last slot at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.zone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Which slots are due now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Due {
    /// The slot to run now, if any.
    pub run: Option<DateTime<Utc>>,
    /// Slots passed without a run: recorded as missed (oldest first, at
    /// most [`MAX_MISSED_RECORDED`]).
    pub missed: Vec<DateTime<Utc>>,
    /// Missed slots beyond those, counted only.
    pub missed_uncounted: u64,
}

/// The slots due at `now` for a schedule whose last claimed slot is `last`
/// (`None`: it never ran, and slots count from `since`, the daemon's start,
/// so a new schedule does not catch up on the past). Only the latest slot
/// runs, and only if it is not late by more than `deadline`; the slots
/// before it are missed, as a CronJob's.
pub fn due(
    cron: &Cron,
    last: Option<DateTime<Utc>>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    deadline: Option<std::time::Duration>,
) -> Due {
    let mut due = Due::default();
    let Some(latest) = cron.latest_at_or_before(now) else {
        return due;
    };
    let from = last.unwrap_or(since);
    if latest <= from {
        return due;
    }
    let late = (now - latest).to_std().unwrap_or_default();
    let runs = deadline.is_none_or(|d| late <= d);
    // The slots strictly between `from` and `latest`.
    let mut t = from;
    while let Some(next) = cron.next_after(t) {
        if next >= latest {
            break;
        }
        if due.missed.len() < MAX_MISSED_RECORDED {
            due.missed.push(next);
        } else {
            due.missed_uncounted += 1;
            // Counting a year of every-second slots one by one would stall
            // the daemon: stop, the count is a floor.
            if due.missed_uncounted >= 100_000 {
                break;
            }
        }
        t = next;
    }
    if runs {
        due.run = Some(latest);
    } else if due.missed.len() < MAX_MISSED_RECORDED {
        due.missed.push(latest);
    } else {
        due.missed_uncounted += 1;
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, s)
            .single()
            .expect("time")
    }

    #[test]
    fn five_and_six_fields() {
        let c = Cron::parse("*/15 * * * *", chrono_tz::UTC).expect("5");
        assert_eq!(c.next_after(at(10, 0, 0)), Some(at(10, 15, 0)));
        let c = Cron::parse("*/2 * * * * *", chrono_tz::UTC).expect("6");
        assert_eq!(c.next_after(at(10, 0, 0)), Some(at(10, 0, 2)));
        assert!(Cron::parse("* * * *", chrono_tz::UTC).is_err());
        assert!(Cron::parse("0 0 0 * * * 2026", chrono_tz::UTC).is_err());
    }

    #[test]
    fn time_zones_move_slots() {
        let c = Cron::parse("0 9 * * *", chrono_tz::Europe::Berlin).expect("cron");
        // 09:00 in Berlin is 08:00 UTC in winter.
        assert_eq!(c.next_after(at(0, 0, 0)), Some(at(8, 0, 0)));
    }

    #[test]
    fn only_the_latest_slot_runs_within_the_deadline() {
        let c = Cron::parse("*/15 * * * *", chrono_tz::UTC).expect("cron");
        let d = due(&c, Some(at(10, 0, 0)), at(9, 0, 0), at(10, 46, 0), None);
        assert_eq!(d.run, Some(at(10, 45, 0)));
        assert_eq!(d.missed, vec![at(10, 15, 0), at(10, 30, 0)]);
        let late = std::time::Duration::from_secs(60);
        let d = due(
            &c,
            Some(at(10, 0, 0)),
            at(9, 0, 0),
            at(10, 47, 0),
            Some(late),
        );
        assert_eq!(d.run, None);
        assert_eq!(d.missed.len(), 3);
        let d = due(&c, Some(at(10, 45, 0)), at(9, 0, 0), at(10, 47, 0), None);
        assert_eq!(d, Due::default());
        // A new schedule does not catch up on the slots before the daemon started.
        let d = due(&c, None, at(10, 40, 0), at(10, 47, 0), None);
        assert_eq!((d.run, d.missed.len()), (Some(at(10, 45, 0)), 0));
    }
}
