//! What a workspace pod's status says: ready, still coming up, or failed for a reason the user
//! can act on (an image that cannot be pulled, a container that keeps crashing).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use crate::runtime::RuntimeError;

/// Waiting reasons that mean the image is the problem.
const IMAGE_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
/// Waiting reasons that will not go away by waiting.
const STUCK_REASONS: [&str; 4] = [
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Ready, and not on its way out.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .iter()
            .flat_map(|status| status.conditions.iter().flatten())
            .any(|condition| condition.type_ == "Ready" && condition.status == "True")
}

/// Why the pod will not become ready, if it will not.
pub fn failure(pod: &Pod) -> Option<RuntimeError> {
    let status = pod.status.as_ref()?;
    let name = pod.metadata.name.as_deref().unwrap_or("pod");
    if status.phase.as_deref() == Some("Failed") {
        return Some(RuntimeError::Step {
            step: format!("starting pod {name}"),
            detail: format!(
                "the pod failed: {}",
                status
                    .message
                    .as_deref()
                    .or(status.reason.as_deref())
                    .unwrap_or("no reason given")
            ),
        });
    }
    let containers = [&status.init_container_statuses, &status.container_statuses];
    containers
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|container| container_failure(name, container))
}

fn container_failure(pod: &str, container: &ContainerStatus) -> Option<RuntimeError> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    let detail = match waiting.message.as_deref() {
        Some(message) => format!("{reason}: {message}"),
        None => reason.to_owned(),
    };
    if IMAGE_REASONS.contains(&reason) {
        Some(RuntimeError::Image {
            image: container.image.clone(),
            detail,
        })
    } else if STUCK_REASONS.contains(&reason) {
        Some(RuntimeError::Step {
            step: format!("starting container {} of pod {pod}", container.name),
            detail,
        })
    } else {
        None
    }
}
