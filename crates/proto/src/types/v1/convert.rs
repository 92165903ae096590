//! Conversions between wire types and domain types, with typed errors.

use uuid::Uuid;

use super::Id;

/// An id on the wire was not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {value:?}: expected a UUID like 0190f1a2-7b3c-7def-8123-456789abcdef")]
pub struct IdError {
    pub value: String,
}

impl From<Uuid> for Id {
    fn from(id: Uuid) -> Self {
        Self {
            value: id.hyphenated().to_string(),
        }
    }
}

impl TryFrom<&Id> for Uuid {
    type Error = IdError;

    fn try_from(id: &Id) -> Result<Self, Self::Error> {
        Uuid::parse_str(&id.value).map_err(|_| IdError {
            value: id.value.clone(),
        })
    }
}

impl TryFrom<Id> for Uuid {
    type Error = IdError;

    fn try_from(id: Id) -> Result<Self, Self::Error> {
        Uuid::try_from(&id)
    }
}

/// A timestamp on the wire was outside what k8shell represents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {seconds}s {nanos}ns: expected a time between years -9999 and 9999")]
pub struct TimestampError {
    pub seconds: i64,
    pub nanos: i32,
}

/// The wire form of a point in time.
pub fn timestamp(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: i32::try_from(at.nanosecond()).unwrap_or(0),
    }
}

/// A point in time from its wire form.
pub fn from_timestamp(at: &prost_types::Timestamp) -> Result<time::OffsetDateTime, TimestampError> {
    let error = || TimestampError {
        seconds: at.seconds,
        nanos: at.nanos,
    };
    let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_bad_ones_say_why() {
        let at = time::macros::datetime!(2026-12-01 17:49:01.123456789 UTC);
        assert_eq!(from_timestamp(&timestamp(at)), Ok(at));
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(
            from_timestamp(&far)
                .unwrap_err()
                .to_string()
                .contains("invalid timestamp")
        );
    }

    #[test]
    fn ids_round_trip_and_bad_ones_say_why() {
        let id = Uuid::now_v7();
        let wire = Id::from(id);
        assert_eq!(Uuid::try_from(&wire), Ok(id));
        let err = Uuid::try_from(Id {
            value: "not-a-uuid".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("not-a-uuid"));
    }
}
