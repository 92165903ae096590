//! blueprints: the Nickel contract (`blueprints/k8shell.ncl`), the compiler that turns a
//! blueprint file into a [`WorkspaceSpec`], and the image builders.

mod compile;
pub mod nix;
pub mod oci;
mod registry;
pub mod spec;

pub use compile::{
    BUILDER_VERSION, BlueprintError, CONTRACT, Compiled, compile_file, compile_source,
};
pub use spec::WorkspaceSpec;
