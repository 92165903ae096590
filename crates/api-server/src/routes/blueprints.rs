//! `/blueprints`: the example blueprints, and checking a blueprint before creating a workspace
//! from it (errors come back with the line and column they are at).

use std::path::Path as FsPath;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::caller::Caller;
use crate::evaluate;
pub use crate::evaluate::Outcome;
use crate::extract::{Json, Path};
use crate::problem::{ApiError, ApiResult, Problem};
use crate::state::State;

/// An example blueprint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Example {
    pub name: String,
    pub description: String,
    /// The Nickel source.
    pub source: String,
}

/// Reads the examples (`*.ncl`, not the contract) of `dir`, sorted by name.
pub fn load_examples(dir: &FsPath) -> std::io::Result<Vec<Example>> {
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.extension().and_then(|e| e.to_str()) != Some("ncl") || name == "k8shell" {
            continue;
        }
        let source = std::fs::read_to_string(&path)?;
        // Examples carry their description in the source; compiling each at start would be slow.
        let description = source
            .lines()
            .find_map(|l| l.trim().strip_prefix("description = \""))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        examples.push(Example {
            name: name.to_owned(),
            description,
            source,
        });
    }
    examples.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(examples)
}

#[utoipa::path(get, path = "/blueprints", tag = "blueprints",
    responses((status = 200, body = Vec<Example>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list(state: State, _caller: Caller) -> Json<Vec<Example>> {
    Json(state.blueprints.clone())
}

#[utoipa::path(get, path = "/blueprints/{name}", tag = "blueprints",
    params(("name" = String, Path, description = "Example name")),
    responses((status = 200, body = Example),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn get(
    state: State,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Example>> {
    state
        .blueprints
        .iter()
        .find(|b| b.name == name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("there is no example blueprint {name:?}")))
}

/// A blueprint to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Validate {
    /// Nickel source.
    pub source: String,
    /// The file name errors refer to (default `blueprint.ncl`).
    pub file: Option<String>,
}

/// Where an error is.
#[derive(Debug, Serialize, ToSchema)]
pub struct BlueprintError {
    pub message: String,
    /// 1-based, when the error points into the source.
    pub line: Option<u32>,
    pub column: Option<u32>,
}

/// The verdict on a blueprint.
#[derive(Debug, Serialize, ToSchema)]
pub struct Validation {
    pub valid: bool,
    /// The compiled workspace spec, when valid.
    #[schema(value_type = Option<Object>)]
    pub spec: Option<serde_json::Value>,
    /// The image tag it would build (`bp-<hash>`), when valid.
    pub image_tag: Option<String>,
    pub errors: Vec<BlueprintError>,
}

#[utoipa::path(post, path = "/blueprints/validate", tag = "blueprints", request_body = Validate,
    responses((status = 200, body = Validation, description = "Checked: `valid` says how it went"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn validate(
    state: State,
    _caller: Caller,
    Json(body): Json<Validate>,
) -> ApiResult<Json<Validation>> {
    if body.source.len() > 256 * 1024 {
        return Err(ApiError::bad_request("a blueprint may be at most 256 KiB"));
    }
    let file = body.file.unwrap_or_else(|| "blueprint.ncl".to_owned());
    let shown = file.clone();
    let outcome = evaluate_posted(&state, body.source, file).await?;
    Ok(Json(match outcome {
        evaluate::Outcome::Compiled { spec, image_tag } => Validation {
            valid: true,
            image_tag: Some(image_tag),
            spec: Some(spec),
            errors: Vec::new(),
        },
        evaluate::Outcome::Invalid { message } => {
            let (line, column) = position(&message, &shown);
            Validation {
                valid: false,
                spec: None,
                image_tag: None,
                errors: vec![BlueprintError {
                    message,
                    line,
                    column,
                }],
            }
        }
    }))
}

/// Evaluates a blueprint someone sent, under the evaluator's limits (see `evaluate`).
pub async fn evaluate_posted(
    state: &crate::state::AppState,
    source: String,
    file: String,
) -> ApiResult<evaluate::Outcome> {
    Ok(match &state.config.evaluator {
        // In a child process with CPU and memory limits.
        Some(evaluator) => evaluate::evaluate(evaluator, &source, &file)
            .await
            .map_err(|error| match error {
                evaluate::EvaluateError::Limits => ApiError::bad_request(error.to_string()),
                evaluate::EvaluateError::Spawn(_) => {
                    tracing::error!(%error, "blueprint evaluator");
                    ApiError::unavailable("blueprints cannot be checked right now")
                }
            })?,
        // No evaluator binary (the server runs inside another program): off the request
        // threads, without limits.
        None => tokio::task::spawn_blocking(move || {
            match k8shell_blueprint::compile_source(&source, &file) {
                Ok(compiled) => evaluate::Outcome::Compiled {
                    spec: serde_json::from_str(&compiled.canonical_json).unwrap_or_default(),
                    image_tag: compiled.image_tag(),
                },
                Err(error) => evaluate::Outcome::Invalid {
                    message: error.to_string(),
                },
            }
        })
        .await
        .map_err(|_| ApiError::unavailable("the blueprint check stopped unexpectedly"))?,
    })
}

/// The first `file:LINE:COLUMN` in a diagnostic.
fn position(message: &str, file: &str) -> (Option<u32>, Option<u32>) {
    let needle = format!("{file}:");
    for (start, _) in message.match_indices(&needle) {
        let rest = &message[start + needle.len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().and_then(|l| l.parse().ok());
        let column = parts
            .next()
            .map(|c| {
                c.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|c| c.parse().ok());
        if line.is_some() {
            return (line, column);
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn positions_come_from_the_diagnostic() {
        let message = "error: contract broken\n  ┌─ web.ncl:7:12\n  │";
        assert_eq!(super::position(message, "web.ncl"), (Some(7), Some(12)));
        assert_eq!(super::position("no position", "web.ncl"), (None, None));
    }
}
