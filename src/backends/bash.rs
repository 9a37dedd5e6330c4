//! The `bash` adapter (placeholder until the bash backend lands).

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::backend::{Backend, CallContext, SessionState};
use crate::error::{Error, Result};
use crate::tool::ToolSpec;

/// The `bash` backend.
#[derive(Debug)]
pub struct BashBackend {
    defaults: Map<String, Value>,
}

impl BashBackend {
    /// A backend with these defaults.
    pub fn new(defaults: Map<String, Value>) -> Result<Self> {
        Ok(BashBackend { defaults })
    }
}

#[async_trait]
impl Backend for BashBackend {
    fn name(&self) -> &str {
        "bash"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        let _ = &self.defaults;
        Vec::new()
    }

    async fn call(&self, tool: &str, _: Value, _: Option<&mut SessionState>, _: &CallContext<'_>) -> Result<Value> {
        Err(Error::ToolNotFound(tool.to_owned()))
    }
}
