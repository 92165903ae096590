//! Time helpers: UTC everywhere, RFC 3339 on the wire, humantime strings in config.

use std::time::Duration;

pub use time::OffsetDateTime;

/// Now, in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// RFC 3339 text of a UTC time, as events and the REST API write it.
pub fn to_rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Parses a humantime duration (`30m`, `1h 30m`, `250ms`) with an error that shows the forms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid duration {text:?} ({e}); write it like `30s`, `5m` or `1h 30m`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_explain_mistakes() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        let err = parse_duration("thirty minutes").unwrap_err();
        assert!(err.contains("write it like"), "{err}");
    }

    #[test]
    fn rfc3339_is_utc() {
        let at = OffsetDateTime::from_unix_timestamp(0).unwrap();
        assert_eq!(to_rfc3339(at), "1970-01-01T00:00:00Z");
    }
}
