//! Pieces the resources share: times, ids, pagination and action paths (`{id}:start`).

use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::problem::{ApiError, ApiResult};

/// A protobuf time as RFC 3339 text.
pub fn time_text(at: Option<&prost_types::Timestamp>) -> Option<String> {
    let at = k8shell_proto::types::v1::from_timestamp(at?).ok()?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// An id from a message, as text.
pub fn id_text(id: Option<&k8shell_proto::types::v1::Id>) -> String {
    id.map(|id| id.value.clone()).unwrap_or_default()
}

/// Parses an id in a path, with an error naming what it should be.
pub fn parse_id(text: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::bad_request(format!(
            "{text:?} is not a {what} id (a UUID like 0190a5f2-…)"
        ))
    })
}

/// `<id>:<action>` in a path, one of `allowed`.
pub fn action<'a>(target: &'a str, what: &str, allowed: &[&str]) -> ApiResult<(Uuid, &'a str)> {
    let (id, verb) = target.split_once(':').ok_or_else(|| {
        ApiError::not_found(format!(
            "no such action: use POST …/{{id}}:{}",
            allowed.join(" or …:")
        ))
    })?;
    if !allowed.contains(&verb) {
        return Err(ApiError::not_found(format!(
            "{what}s have no action {verb:?}; there is {}",
            allowed.join(", ")
        )));
    }
    Ok((parse_id(id, what)?, verb))
}

/// `?limit=&cursor=`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// At most this many items (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Page {
    pub fn limit(&self) -> ApiResult<u32> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=1000) => Ok(n),
            Some(n) => Err(ApiError::bad_request(format!(
                "limit {n} is out of range: ask for 1 to 1000 items"
            ))),
        }
    }
}
