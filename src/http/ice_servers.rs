//! `GET /api/ice-servers?stream=NAME`: the ICE servers a publisher of NAME should put in
//! its peer connection, TURN with credentials minted for it. Where publishing needs a
//! token, this needs the same one (`?token=` or a bearer header), asked as a publish
//! would be (the publish hook sees `"protocol": "ice-servers"`).

use super::auth::caller_of;
use super::error::{ApiError, stream_name};
use crate::gateway::Gateway;
use crate::ice_servers::{self, IceServer, Turn};
use crate::signalling::auth::authorize_publish;
use crate::signalling::problem::Problem;
use axum::Json;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, Uri};
use std::sync::Arc;
use std::time::SystemTime;

pub async fn list(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    uri: Uri,
    extensions: Extensions,
) -> Result<Json<Vec<IceServer>>, ApiError> {
    let stream = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "stream")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| ApiError(Problem::bad_name()))?;
    let stream = stream_name(&stream)?;
    let caller = caller_of(&headers, &uri, &extensions);
    authorize_publish(&gateway, &stream, "ice-servers", &caller).await?;
    Ok(Json(ice_servers::for_publisher(
        &gateway.config.webrtc,
        stream.as_str(),
        Turn::Given,
        SystemTime::now(),
    )))
}
