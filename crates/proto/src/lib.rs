//! The gRPC contracts of k8shell, generated at build time from `proto/` (packages
//! `k8shell.<domain>.v1`), plus the standard gRPC health service every server exposes.

/// `k8shell.types.v1`: types shared by every package.
pub mod types {
    pub mod v1 {
        tonic::include_proto!("k8shell.types.v1");

        mod convert;
        pub use convert::{IdError, TimestampError, from_timestamp, timestamp};
    }
}

/// `k8shell.authz.v1`: access decisions.
pub mod authz {
    pub mod v1 {
        tonic::include_proto!("k8shell.authz.v1");
    }
}

/// `k8shell.identity.v1`: users, keys, tokens, JWTs.
pub mod identity {
    pub mod v1 {
        tonic::include_proto!("k8shell.identity.v1");
    }
}

/// `k8shell.session.v1`: sessions, timelines and recordings.
pub mod session {
    pub mod v1 {
        tonic::include_proto!("k8shell.session.v1");
    }
}

/// `k8shell.provisioner.v1`: workspace lifecycle.
pub mod provisioner {
    pub mod v1 {
        tonic::include_proto!("k8shell.provisioner.v1");
    }
}

/// `k8shell.k8shelld.v1`: the daemon inside every workspace.
pub mod k8shelld {
    pub mod v1 {
        tonic::include_proto!("k8shell.k8shelld.v1");
    }
}

/// The gRPC health checking protocol (`grpc.health.v1`), served by every k8shell server.
pub use tonic_health as health;

/// Largest payload of one stream frame (ARCHITECTURE §3).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
