//! Python's `strftime` for chat templates: the Llama 3.x templates call `strftime_now("%d %b %Y")`
//! for the "Today Date" line, and render a fixed fallback date when it is missing. Dates are UTC
//! and the proleptic Gregorian calendar, from the civil-date arithmetic of H. Hinnant's
//! "chrono-Compatible Low-Level Date Algorithms" (a few lines, rather than a date crate).

use std::fmt::Write;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// (year, month 1..=12, day 1..=31) of `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of the 400-year era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the year from March 1, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `fmt` with Python's codes %Y %y %m %d %B %b %A %a %H %M %S %% (and glibc's unpadded %-d
/// %-m %-H %-M %-S) filled in for `unix_secs` seconds since the epoch, UTC. Another code is an
/// error naming it.
pub fn strftime(fmt: &str, unix_secs: i64) -> Result<String, String> {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday (Monday = 0)
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut code = chars.next();
        let pad = code != Some('-');
        if !pad {
            code = chars.next();
        }
        let num = |out: &mut String, v: i64| {
            let _ = if pad { write!(out, "{v:02}") } else { write!(out, "{v}") };
        };
        match code {
            Some('Y') => {
                let _ = write!(out, "{y}");
            }
            Some('y') => num(&mut out, y.rem_euclid(100)),
            Some('m') => num(&mut out, m.into()),
            Some('d') => num(&mut out, d.into()),
            Some('H') => num(&mut out, hh),
            Some('M') => num(&mut out, mm),
            Some('S') => num(&mut out, ss),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('%') if pad => out.push('%'),
            other => {
                let code: String = other.map_or(String::new(), String::from);
                let dash = if pad { "" } else { "-" };
                return Err(format!("strftime_now: `%{dash}{code}` is not a supported format code"));
            }
        }
    }
    Ok(out)
}

/// [`strftime`] at the current time.
pub fn strftime_now(fmt: &str) -> Result<String, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(fmt, now)
}

#[cfg(test)]
mod tests {
    use super::strftime;

    #[test]
    fn python_codes_on_known_dates() {
        // Values checked against Python: datetime.fromtimestamp(t, timezone.utc).strftime(f).
        let cases = [
            (
                0,
                "%Y-%m-%d %H:%M:%S %a %A %b %B %y",
                "1970-01-01 00:00:00 Thu Thursday Jan January 70",
            ),
            (1_721_952_000, "%d %b %Y", "26 Jul 2024"),
            (951_782_400, "%d %b %Y %a", "29 Feb 2000 Tue"),
            (4_107_542_399, "%Y-%m-%d %H:%M:%S", "2100-02-28 23:59:59"),
            (4_107_542_400, "%-d %-m %Y %%", "1 3 2100 %"),
            (-1, "%Y-%m-%d %H:%M:%S %A", "1969-12-31 23:59:59 Wednesday"),
        ];
        for (t, f, want) in cases {
            assert_eq!(strftime(f, t).unwrap(), want, "{t} {f}");
        }
        let e = strftime("%d %Q", 0).unwrap_err();
        assert!(e.contains("`%Q`"), "{e}");
        assert!(strftime("100%", 0).unwrap_err().contains("`%`"));
    }
}
