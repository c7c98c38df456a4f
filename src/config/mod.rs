//! The gateway's configuration: typed `gateway.toml` sections, their defaults, and
//! validation that names the offending key. Plain data, handed down explicitly: addresses,
//! formats and presets are parsed once, as the file is read, into their types.
//!
//! - `sections`: the sections and their defaults;
//! - `values`: the typed values and how they are read from text;
//! - `load`: reading a file, unknown keys, ranges, one problem per line.

mod load;
mod sections;
mod values;

pub use load::ConfigError;
pub use sections::*;
pub use values::{HlsVariant, RecordFormat, StoreKind, StoreUrl, TranscodeMode, X264Preset};
