//! authz: deny-by-default Rego policies, evaluated with regorus.

pub mod bundle;

pub use bundle::{Bundle, BundleError};
