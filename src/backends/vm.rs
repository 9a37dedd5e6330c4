//! The `vm` adapter (placeholder until the vm backend lands).

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::backend::{Backend, CallContext, SessionState};
use crate::error::{Error, Result};
use crate::tool::ToolSpec;

/// The `vm` backend.
#[derive(Debug)]
pub struct VmBackend {
    defaults: Map<String, Value>,
}

impl VmBackend {
    /// A backend with these defaults.
    pub fn new(defaults: Map<String, Value>) -> Result<Self> {
        Ok(VmBackend { defaults })
    }
}

#[async_trait]
impl Backend for VmBackend {
    fn name(&self) -> &str {
        "vm"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        let _ = &self.defaults;
        Vec::new()
    }

    async fn call(&self, tool: &str, _: Value, _: Option<&mut SessionState>, _: &CallContext<'_>) -> Result<Value> {
        Err(Error::ToolNotFound(tool.to_owned()))
    }
}
