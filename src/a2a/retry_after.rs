//! The `Retry-After` header of an agent that answers HTTP 429 (too many requests) or 503
//! (unavailable): RFC 9110 §10.2.3 allows delta-seconds (`120`) or an HTTP-date in any of
//! its three forms (IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, the obsolete RFC 850
//! `Sunday, 06-Nov-94 08:49:37 GMT` and asctime `Sun Nov  6 08:49:37 1994`). The parse is
//! pure: the clock is passed in, so a date turns into a wait from that moment.

use std::time::Duration;

use jiff::Timestamp;

/// Why a `Retry-After` value is not one a2a can honour (the answer then goes through the
/// ordinary retry policy, as if it had no `Retry-After`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Retry-After is empty")]
    Empty,
    #[error("Retry-After {value:?} is neither delta-seconds nor an HTTP-date")]
    Invalid { value: String },
}

/// The longest delta-seconds a2a reads as such (a larger number is still a wait far beyond
/// any cap, and the arithmetic stays finite): about 31 years.
const MAX_SECONDS: u64 = 1 << 30;

/// The wait a `Retry-After` value asks for, measured from `now`. An HTTP-date in the past
/// asks for no wait.
pub fn parse(value: &str, now: Timestamp) -> Result<Duration, ParseError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ParseError::Empty);
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Delta-seconds: 1*DIGIT. Leading zeros are allowed; a huge number saturates.
        let secs = v.parse::<u64>().unwrap_or(u64::MAX).min(MAX_SECONDS);
        return Ok(Duration::from_secs(secs));
    }
    let at = http_date(v).ok_or_else(|| ParseError::Invalid { value: value.chars().take(64).collect() })?;
    let wait = at.duration_since(now);
    Ok(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// An HTTP-date in any of its three forms, always in GMT.
fn http_date(v: &str) -> Option<Timestamp> {
    if !v.ends_with(" GMT") && !is_asctime(v) {
        return None;
    }
    if let Ok(t) = jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(v) {
        return Some(t);
    }
    for format in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(tm) = jiff::fmt::strtime::parse(format, v)
            && let Ok(dt) = tm.to_datetime()
            && let Ok(z) = dt.to_zoned(jiff::tz::TimeZone::UTC)
        {
            return Some(z.timestamp());
        }
    }
    None
}

/// `Sun Nov  6 08:49:37 1994`: ends in a four-digit year, no zone.
fn is_asctime(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 5 && b[b.len() - 4..].iter().all(u8::is_ascii_digit) && b[b.len() - 5] == b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn delta_seconds_are_a_wait_from_now() {
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(parse("2", now), Ok(Duration::from_secs(2)));
        assert_eq!(parse(" 120 ", now), Ok(Duration::from_secs(120)));
        assert_eq!(parse("0", now), Ok(Duration::ZERO));
        assert_eq!(parse("007", now), Ok(Duration::from_secs(7)));
        assert_eq!(parse("99999999999999999999999", now), Ok(Duration::from_secs(MAX_SECONDS)), "saturates");
    }

    #[test]
    fn every_http_date_form_is_a_wait_until_that_moment() {
        let now = at("1994-11-06T08:49:30Z");
        let seven = Ok(Duration::from_secs(7));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT", now), seven, "IMF-fixdate");
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT", now), seven, "RFC 850");
        assert_eq!(parse("Sun Nov  6 08:49:37 1994", now), seven, "asctime");
        assert_eq!(parse("Sun, 06 Nov 1994 08:00:00 GMT", now), Ok(Duration::ZERO), "a date in the past");
    }

    #[test]
    fn anything_else_is_refused_naming_the_value() {
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(parse("", now), Err(ParseError::Empty));
        for bad in [
            "-1",
            "1.5",
            "soon",
            "2s",
            "Sun, 06 Nov 1994 08:49:37 +0100",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 2999 08:49:37 GMT",
        ] {
            let e = parse(bad, now).expect_err(bad);
            assert_eq!(e.to_string(), format!("Retry-After {bad:?} is neither delta-seconds nor an HTTP-date"));
        }
    }
}
