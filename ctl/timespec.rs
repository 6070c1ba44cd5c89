//! The time grammar of `--since`/`--until`: durations (`90s`, `15m`, `1h`,
//! `2d`, `1h30m`, meaning that long ago), `<duration> ago`, `now`, `today`
//! and `yesterday` (local midnight), RFC 3339 timestamps
//! (`2026-11-25T10:00:00Z`, `2026-11-25T10:00:00+01:00`, `2026-11-25 10:00`)
//! and epoch seconds (`@1764064800` or a 9+ digit number).

use iomon::config::parse_duration;

/// Local time's offset from UTC at `epoch_s`, in seconds.
fn local_offset_s(epoch_s: i64) -> i64 {
    let t = epoch_s as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed tm we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            0
        } else {
            tm.tm_gmtoff
        }
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn num(s: &str, what: &str) -> Result<i64, String> {
    s.parse::<i64>().map_err(|_| format!("bad {what} {s:?}"))
}

/// RFC 3339 (and the space-separated, seconds-optional, zone-optional =
/// local forms) to epoch milliseconds.
fn parse_rfc3339(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (date, rest) = s.split_at(s.find(['T', 't', ' ']).unwrap_or(s.len()));
    let rest = rest.get(1..).unwrap_or("");
    let dp: Vec<&str> = date.split('-').collect();
    if dp.len() != 3 {
        return Err(format!("{s:?} is not a date (YYYY-MM-DD)"));
    }
    let (y, mo, d) = (
        num(dp[0], "year")?,
        num(dp[1], "month")?,
        num(dp[2], "day")?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(format!("{s:?}: month or day out of range"));
    }
    // Zone: Z, +HH:MM, -HH:MM, or none (local time).
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let mut h = 0;
    let mut mi = 0;
    let mut sec = 0;
    let mut ms = 0;
    if !clock.is_empty() {
        let cp: Vec<&str> = clock.split(':').collect();
        if cp.len() < 2 || cp.len() > 3 {
            return Err(format!("{s:?}: time must be HH:MM or HH:MM:SS"));
        }
        h = num(cp[0], "hour")?;
        mi = num(cp[1], "minute")?;
        if let Some(sp) = cp.get(2) {
            let (whole, frac) = sp.split_once('.').unwrap_or((sp, ""));
            sec = num(whole, "second")?;
            if !frac.is_empty() {
                let f = format!("{frac:0<3}");
                ms = num(&f[..3], "fraction")?;
            }
        }
        if h > 23 || mi > 59 || sec > 60 {
            return Err(format!("{s:?}: time out of range"));
        }
    }
    let local = (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + ms;
    let offset_s = match zone {
        Some("Z") | Some("z") => 0,
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (zh, zm) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
            sign * (num(zh, "zone hour")? * 3600 + num(zm, "zone minute")? * 60)
        }
        None => local_offset_s(local / 1000),
    };
    u64::try_from(local - offset_s * 1000).map_err(|_| format!("{s:?} is before 1970"))
}

/// Parses a point in time, relative to `now_ms`.
pub fn parse_time(s: &str, now_ms: u64) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let now_s = (now_ms / 1000) as i64;
    let midnight = |days_back: i64| -> u64 {
        let off = local_offset_s(now_s);
        let local = now_s + off;
        let m = local - local.rem_euclid(86_400) - days_back * 86_400 - off;
        (m.max(0) as u64) * 1000
    };
    match lower.as_str() {
        "now" => return Ok(now_ms),
        "today" => return Ok(midnight(0)),
        "yesterday" => return Ok(midnight(1)),
        _ => {}
    }
    if let Some(e) = lower.strip_prefix('@') {
        return e
            .parse::<u64>()
            .map(|v| v * 1000)
            .map_err(|_| format!("bad epoch seconds {t:?}"));
    }
    if lower.len() >= 9 && lower.bytes().all(|b| b.is_ascii_digit()) {
        return lower
            .parse::<u64>()
            .map(|v| v * 1000)
            .map_err(|_| format!("bad epoch seconds {t:?}"));
    }
    let rel = lower.strip_suffix("ago").map(str::trim).unwrap_or(&lower);
    if let Ok(d) = parse_duration(rel) {
        return Ok(now_ms.saturating_sub(d.as_millis() as u64));
    }
    if lower.contains('-') {
        return parse_rfc3339(t);
    }
    Err(format!(
        "{t:?} is not a time: use a duration (1h, 15m, 1h30m, \"2d ago\"), now, today, yesterday, an RFC 3339 time (2026-11-25T10:00:00Z) or epoch seconds (@1764064800)"
    ))
}

/// Formats epoch ms as local `YYYY-MM-DD HH:MM:SS`.
pub fn format_local(ms: u64) -> String {
    let s = (ms / 1000) as i64;
    let (y, m, d, hh, mm, ss) = iomon::units::civil(s + local_offset_s(s));
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_064_800_000; // 2025-11-25T10:00:00Z

    #[test]
    fn durations_and_ago() {
        assert_eq!(parse_time("1h", NOW).unwrap(), NOW - 3_600_000);
        assert_eq!(parse_time("90s", NOW).unwrap(), NOW - 90_000);
        assert_eq!(parse_time("1h30m ago", NOW).unwrap(), NOW - 5_400_000);
        assert_eq!(parse_time("2d ago", NOW).unwrap(), NOW - 172_800_000);
        assert_eq!(parse_time("now", NOW).unwrap(), NOW);
    }

    #[test]
    fn absolute_times() {
        assert_eq!(parse_time("2025-11-25T10:00:00Z", NOW).unwrap(), NOW);
        assert_eq!(parse_time("2025-11-25T11:00:00+01:00", NOW).unwrap(), NOW);
        assert_eq!(
            parse_time("2025-11-25T10:00:00.250Z", NOW).unwrap(),
            NOW + 250
        );
        assert_eq!(parse_time("@1764064800", NOW).unwrap(), NOW);
        assert_eq!(parse_time("1764064800", NOW).unwrap(), NOW);
        assert_eq!(parse_time("1970-01-01T00:00:00Z", NOW).unwrap(), 0);
    }

    #[test]
    fn midnights_are_ordered() {
        let today = parse_time("today", NOW).unwrap();
        let yesterday = parse_time("yesterday", NOW).unwrap();
        assert!(today <= NOW && NOW - today < 86_400_000);
        assert_eq!(today - yesterday, 86_400_000);
    }

    #[test]
    fn nonsense_is_refused_with_the_grammar() {
        let e = parse_time("last tuesday", NOW).unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
        assert!(parse_time("2025-13-01T00:00:00Z", NOW).is_err());
    }

    #[test]
    fn local_format_round_trips() {
        let s = format_local(NOW);
        assert_eq!(parse_time(&s, NOW).unwrap(), NOW, "{s}");
    }
}
