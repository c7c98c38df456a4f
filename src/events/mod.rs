//! Event webhooks (`hooks.events_url`): what happened to this node's streams —
//! `stream.published`, `stream.ended`, `recording.finished`, `upload.completed` — POSTed
//! as JSON, at least once. [`Events::emit`] writes the event to the [`outbox`] on disk
//! (beside the recordings) and hands it to the one [`delivery`] task without waiting;
//! that task signs each request ([`signature`]) and tries again with backoff until the
//! receiver answers 2xx. A restart, even a crash, loses no event: the outbox is read at
//! start. This module sits low (config, name and stream below it) so that the sessions
//! and the uploads can both emit.

pub mod delivery;
mod event;
mod handle;
pub mod outbox;

pub use delivery::{DeliveryCounters, EVENT_ID_HEADER};
pub use event::{Event, body, new_id};
pub use handle::Events;
