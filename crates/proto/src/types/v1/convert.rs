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

#[cfg(test)]
mod tests {
    use super::*;

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
