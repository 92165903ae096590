//! authz: deny-by-default Rego policies, evaluated with regorus, every decision logged.
//!
//! Without the `server` feature this crate is only [`client`], which other services link.

#[cfg(feature = "server")]
pub mod bundle;
pub mod client;
#[cfg(feature = "server")]
mod config;
#[cfg(feature = "server")]
pub mod decide;
#[cfg(feature = "server")]
pub mod reload;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
mod service;

#[cfg(feature = "server")]
pub use server::*;
