//! Errors of the ONNX front end. Each names the file, tensor, input or node at fault.

use std::fmt;
use std::path::PathBuf;

/// One node the front end cannot take, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeIssue {
    pub node: String,
    pub op_type: String,
    pub domain: String,
    pub opset: i64,
    pub reason: String,
}

impl fmt::Display for NodeIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = if self.domain.is_empty() { String::new() } else { format!("{}::", self.domain) };
        write!(f, "node `{}` ({domain}{}, opset {}): {}", self.node, self.op_type, self.opset, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid ONNX model (corrupt or truncated protobuf): {message}")]
    Decode { path: String, message: String },
    #[error("the model has no graph")]
    NoGraph,
    #[error("unsupported model: {0}")]
    Model(String),
    #[error("tensor `{tensor}`: {reason}")]
    Tensor { tensor: String, reason: String },
    #[error("graph input `{input}`: {reason}")]
    Input { input: String, reason: String },
    #[error("graph output `{output}`: {reason}")]
    Output { output: String, reason: String },
    #[error("{} node{} cannot be compiled:\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list(.0))]
    Nodes(Vec<NodeIssue>),
}

fn list(issues: &[NodeIssue]) -> String {
    issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n")
}

/// Why one node could not be converted.
#[derive(Debug, Clone, PartialEq)]
pub enum ConvertError {
    /// Valid ONNX that d2nnc does not handle (an op, attribute value or dtype).
    Unsupported(String),
    /// A malformed node (missing required attribute, wrong arity…).
    Invalid(String),
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Unsupported(r) => write!(f, "unsupported: {r}"),
            ConvertError::Invalid(r) => write!(f, "invalid: {r}"),
        }
    }
}

pub type ConvertResult<T> = Result<T, ConvertError>;

pub fn unsupported<T>(reason: impl Into<String>) -> ConvertResult<T> {
    Err(ConvertError::Unsupported(reason.into()))
}

pub fn invalid<T>(reason: impl Into<String>) -> ConvertResult<T> {
    Err(ConvertError::Invalid(reason.into()))
}
