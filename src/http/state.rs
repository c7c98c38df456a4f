//! What the handlers share.

use crate::gateway::Gateway;
use crate::session::Sessions;
use crate::signalling::whip::Whip;
use axum::extract::FromRef;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub sessions: Arc<Sessions>,
    pub whip: Arc<Whip>,
    /// How this node reaches the others of its cluster.
    pub peers: reqwest::Client,
}

impl FromRef<AppState> for Arc<Gateway> {
    fn from_ref(state: &AppState) -> Self {
        state.gateway.clone()
    }
}

impl FromRef<AppState> for Arc<Sessions> {
    fn from_ref(state: &AppState) -> Self {
        state.sessions.clone()
    }
}

impl FromRef<AppState> for Arc<Whip> {
    fn from_ref(state: &AppState) -> Self {
        state.whip.clone()
    }
}
