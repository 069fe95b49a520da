//! Expiry times: our API speaks `chrono`, tough's schema speaks its own timestamp type, and
//! every verification refuses metadata past its `expires`.

use crate::error::{Error, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use std::fmt::Display;
use std::str::FromStr;

/// Converts to tough's timestamp type (inferred at the call site), truncated to whole seconds so
/// the signed form is plain `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn to_tuf<T>(t: DateTime<Utc>) -> Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    let value = t.to_rfc3339_opts(SecondsFormat::Secs, true);
    value.parse().map_err(|e: T::Err| Error::Time {
        reason: e.to_string(),
        value,
    })
}

/// Converts tough's timestamp (anything printing RFC 3339) back to `chrono`.
pub(crate) fn from_tuf(t: impl Display) -> Result<DateTime<Utc>> {
    let value = t.to_string();
    DateTime::parse_from_rfc3339(&value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Time {
            reason: e.to_string(),
            value,
        })
}

/// Refuses `file` when `now` is at or past its expiry.
pub(crate) fn check_not_expired(
    file: &str,
    expires: impl Display,
    now: DateTime<Utc>,
) -> Result<()> {
    let expires = from_tuf(expires)?;
    if now >= expires {
        return Err(Error::Expired {
            file: file.to_string(),
            expires: expires.to_rfc3339_opts(SecondsFormat::Secs, true),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn round_trips_whole_seconds() {
        let t = Utc
            .with_ymd_and_hms(2031, 2, 3, 4, 5, 6)
            .single()
            .expect("time");
        let s: String = to_tuf(t).expect("to");
        assert_eq!(s, "2031-02-03T04:05:06Z");
        assert_eq!(from_tuf(&s).expect("from"), t);
    }

    #[test]
    fn expired_is_refused() {
        let t = Utc
            .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
            .single()
            .expect("time");
        check_not_expired("x.json", "2030-01-01T00:00:01Z", t).expect("valid");
        let err = check_not_expired("x.json", "2030-01-01T00:00:00Z", t).expect_err("expired");
        assert!(err.to_string().contains("x.json expired"), "{err}");
    }
}
