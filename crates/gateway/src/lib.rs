//! Taking a user into a workspace on their behalf, as the ssh-proxy does for SSH connections and
//! the api-server for browser terminals: the clients of the services involved, which workspace
//! is meant, authz's `ssh` decision, the session that records it, the workspace started, session
//! tokens and the channel to its k8shelld.

mod attach;
mod backends;

pub use attach::{Attachment, ClientFacts, Gateway, Stage, Target, WorkspaceInfo, with_bearer};
pub use backends::{Backends, EndpointError};
