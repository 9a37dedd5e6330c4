//! Adapters from the engine's [`Backend`] trait to the domain crates, one file per backend.
//!
//! Each adapter turns JSON parameters into a domain call and the result into JSON `data`; the
//! domain crates (`backends/*`) know nothing of JSON or sessions. A backend whose Cargo feature
//! is off is still registered by [`builtin`], as a stub whose warm-up fails with a message saying
//! which feature to enable, so the wire format never changes with the build.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::backend::{Backend, CallContext, SessionState};
use crate::error::{Error, Result};
use crate::tool::ToolSpec;

pub mod memory;

#[cfg(feature = "bash")]
pub mod bash;
#[cfg(feature = "mcp")]
pub mod mcp;
#[cfg(feature = "rag")]
pub mod rag;
#[cfg(feature = "vm")]
pub mod vm;

/// The names of the built-in backends.
pub const BUILTIN: [&str; 4] = ["bash", "vm", "rag", "mcp"];

/// Makes the built-in backend `name` with its default config and the operator's policy
/// (`resources.<name>.policy`: what sessions may loosen; see each adapter's documentation).
pub fn builtin(name: &str, config: &Map<String, Value>, policy: &Map<String, Value>) -> Result<Arc<dyn Backend>> {
    let _ = (config, policy);
    match name {
        #[cfg(feature = "bash")]
        "bash" => Ok(Arc::new(bash::BashBackend::with_policy(config.clone(), policy.clone())?)),
        #[cfg(feature = "vm")]
        "vm" => Ok(Arc::new(vm::VmBackend::with_policy(config.clone(), policy.clone())?)),
        #[cfg(feature = "rag")]
        "rag" => Ok(Arc::new(rag::RagBackend::new(config.clone())?)),
        #[cfg(feature = "mcp")]
        "mcp" => Ok(Arc::new(mcp::McpBackend::new(config.clone())?)),
        #[cfg(not(feature = "bash"))]
        "bash" => Ok(Arc::new(Disabled(name.to_owned()))),
        #[cfg(not(feature = "vm"))]
        "vm" => Ok(Arc::new(Disabled(name.to_owned()))),
        #[cfg(not(feature = "rag"))]
        "rag" => Ok(Arc::new(Disabled(name.to_owned()))),
        #[cfg(not(feature = "mcp"))]
        "mcp" => Ok(Arc::new(Disabled(name.to_owned()))),
        other => Err(Error::Config(format!("unknown backend '{other}': built-in ones are bash, vm, rag, mcp"))),
    }
}

/// A built-in backend left out of this build.
#[allow(dead_code)] // unused when every backend feature is on
struct Disabled(String);

#[async_trait]
impl Backend for Disabled {
    fn name(&self) -> &str {
        &self.0
    }

    fn tools(&self) -> Vec<ToolSpec> {
        Vec::new()
    }

    async fn warmup(&self) -> Result<()> {
        Err(Error::backend(format!("this build has no '{0}' backend: rebuild with `--features {0}`", self.0)))
    }

    async fn create_session(&self, _config: &Map<String, Value>) -> Result<SessionState> {
        self.warmup().await.map(|_| unreachable!())
    }

    async fn call(&self, _: &str, _: Value, _: Option<&mut SessionState>, _: &CallContext<'_>) -> Result<Value> {
        self.warmup().await.map(|_| unreachable!())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // CI builds every feature, so the stub a disabled feature registers is tested directly.
    #[tokio::test]
    async fn a_backend_left_out_of_the_build_answers_2003_naming_its_feature() {
        let engine = crate::Engine::builder().backend(Arc::new(Disabled("gpu".into()))).build().unwrap();
        let answer = engine.execute("w", "gpu:render", json!({})).await;
        assert_eq!(answer.code, 2003, "{answer:?}");
        assert!(answer.message.contains("--features gpu"), "{}", answer.message);
        let created = engine
            .create_session(serde_json::from_value(json!({"worker_id": "w", "resource_type": "gpu"})).unwrap())
            .await;
        assert_eq!(created.code, 2003, "{created:?}");
    }
}
