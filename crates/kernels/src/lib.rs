//! altscore kernels: the one implementation of every rule a score depends on.
//!
//! - [`plan`]: the feature spec compiled to a plan, and its operations ([`kernels`]);
//! - [`row`]: row validation over one input trait, shared by every source of a row;
//! - [`ensemble`]: the trained `XGBoost` model itself, margins and exact `TreeSHAP`;
//! - [`policy`]: PD to points and decision, and the logistic function;
//! - [`routing`]: the sticky champion / challenger hash;
//! - [`reasons`]: reason codes from `TreeSHAP` contributions;
//! - [`fmt`]: how numbers and client text are written in messages and logs.
//!
//! Pure: no Python, no async runtime, no I/O. The column path (training), the wire codec and the
//! server build on it; the binding exposes it to Python.

pub mod ensemble;
pub mod error;
pub mod fmt;
pub mod kernels;
pub mod plan;
pub mod policy;
pub mod reasons;
pub mod routing;
pub mod row;

pub use error::{BadRows, KernelError, Violation, ViolationKind};
pub use plan::Plan;
