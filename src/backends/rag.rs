//! The `rag` adapter (placeholder until the rag backend lands).

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::backend::{Backend, CallContext, SessionState};
use crate::error::{Error, Result};
use crate::tool::ToolSpec;

/// The `rag` backend.
#[derive(Debug)]
pub struct RagBackend {
    defaults: Map<String, Value>,
}

impl RagBackend {
    /// A backend with these defaults.
    pub fn new(defaults: Map<String, Value>) -> Result<Self> {
        Ok(RagBackend { defaults })
    }
}

#[async_trait]
impl Backend for RagBackend {
    fn name(&self) -> &str {
        "rag"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        let _ = &self.defaults;
        Vec::new()
    }

    async fn call(&self, tool: &str, _: Value, _: Option<&mut SessionState>, _: &CallContext<'_>) -> Result<Value> {
        Err(Error::ToolNotFound(tool.to_owned()))
    }
}
