//! Fixed calendar windows (UTC): the current minute, hour, day or month, as unix seconds.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Minute,
    Hour,
    Day,
    Month,
}

impl Window {
    pub fn label(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// `[start, end)` of the window holding `now`.
    pub fn bounds(self, now: u64) -> (u64, u64) {
        let span = |s: u64| {
            let start = now - now % s;
            (start, start + s)
        };
        match self {
            Self::Minute => span(60),
            Self::Hour => span(3600),
            Self::Day => span(86_400),
            Self::Month => {
                let (y, m, _) = civil_from_days((now / 86_400) as i64);
                let start = days_from_civil(y, m, 1) as u64 * 86_400;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (start, days_from_civil(ny, nm, 1) as u64 * 86_400)
            }
        }
    }
}

/// Howard Hinnant's days-from-civil: days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_windows() {
        // 2026-11-28T17:00:30Z
        let now = 1_795_885_230;
        assert_eq!(Window::Minute.bounds(now), (1_795_885_200, 1_795_885_260));
        let (s, e) = Window::Month.bounds(now);
        assert_eq!(civil_from_days((s / 86_400) as i64), (2026, 11, 1));
        assert_eq!(civil_from_days((e / 86_400) as i64), (2026, 12, 1));
        let (s, e) = Window::Month.bounds(days_from_civil(2026, 12, 31) as u64 * 86_400 + 5);
        assert_eq!(civil_from_days((s / 86_400) as i64), (2026, 12, 1));
        assert_eq!(civil_from_days((e / 86_400) as i64), (2027, 1, 1));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }
}
