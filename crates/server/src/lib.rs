//! altscore's data plane: the one implementation of every scoring RPC, on tonic.
//!
//! The Python control plane builds [`server::DataPlane`] (through the binding), hands it each
//! gated model ([`model::ServingModel`]) and swaps them atomically; everything per request
//! happens here: decoding ([`codec`] + `altscore-wire`), feature-store enrichment ([`store`]),
//! routing, prediction, explanations and policy ([`plane`]), the prediction log ([`log`]),
//! metrics ([`metrics`]), errors ([`errors`]), transport and limits ([`server`]; [`conn`]: the
//! accept loop and the connection limit; [`deadline`]: every call's deadline), TLS with certificates re-read from disk ([`tls`]), who
//! may change state ([`auth`]). The Open Inference Protocol v2 ([`oip`]) is an adapter onto the
//! same batch path.

pub mod auth;
pub mod codec;
pub mod config;
pub mod conn;
pub mod deadline;
pub mod errors;
pub mod log;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod outcomes;
pub mod plane;
pub mod proto;
pub mod recent_ids;
pub mod server;
pub mod service;
pub mod store;
pub mod tl2cgen;
pub mod tls;
