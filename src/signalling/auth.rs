//! Who may publish: both signalling protocols ask the gateway's [`Access`] (static
//! tokens, JSON Web Tokens, the publish hook) through this one function, and get its
//! refusal as a [`Problem`].
//!
//! [`Access`]: crate::access::Access

use crate::access::{Allowed, Caller};
use crate::gateway::Gateway;
use crate::name::StreamName;
use crate::signalling::problem::Problem;

/// Whether `caller` may publish `stream` over `protocol` (`websocket`, `whip`), and the
/// publish hook's word on recording it.
pub async fn authorize_publish(
    gateway: &Gateway,
    stream: &StreamName,
    protocol: &'static str,
    caller: &Caller,
) -> Result<Allowed, Problem> {
    gateway
        .access
        .publish(stream, protocol, caller)
        .await
        .map_err(|denied| Problem::denied(&denied))
}
