//! Why a pipeline could not be built or started: each variant names the template, element
//! or package at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot read pipeline template {path}")]
    ReadTemplate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pipeline template {template} uses unknown placeholder {{{placeholder}}}")]
    UnknownPlaceholder {
        template: PathBuf,
        placeholder: String,
    },
    #[error("pipeline template {template} has no element named {name:?}")]
    MissingName { template: PathBuf, name: String },
    #[error("GStreamer element {element:?} is missing: {package}")]
    MissingElement { element: String, package: String },
    #[error("pipeline does not parse: {0}")]
    Parse(String),
    #[error("pipeline does not start: {0}")]
    Start(String),
}
