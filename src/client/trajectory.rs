//! [`Trajectory`]: what an agent did, step by step, as JSON Lines.
//!
//! It owns the shape of one step (what was asked, what came back, how long it took) and renders
//! the whole as JSONL text. Writing the text somewhere is the caller's (off the async workers);
//! deciding the next action is the agent's.

use serde_json::{json, Value};

use super::error::Error;
use crate::protocol::Envelope;

/// The steps of one agent run, in order.
#[derive(Debug, Default, Clone)]
pub struct Trajectory {
    steps: Vec<Value>,
}

impl Trajectory {
    /// An empty trajectory.
    pub fn new() -> Self {
        Trajectory::default()
    }

    /// Records a call of `action` with `params` and its outcome; answers the recorded step.
    /// A failed call is recorded with its envelope (the server's, or one made from the error).
    pub fn record(&mut self, action: &str, params: &Value, outcome: Result<Envelope, Error>) -> &Value {
        let envelope = outcome.unwrap_or_else(Error::into_envelope);
        let step = json!({
            "step": self.steps.len() + 1,
            "action": action,
            "params": params,
            "code": envelope.code,
            "message": envelope.message,
            "data": envelope.data,
            "meta": envelope.meta,
        });
        self.steps.push(step);
        &self.steps[self.steps.len() - 1]
    }

    /// The steps so far.
    pub fn steps(&self) -> &[Value] {
        &self.steps
    }

    /// How many steps answered code 0.
    pub fn successes(&self) -> usize {
        self.steps.iter().filter(|s| s["code"] == 0).count()
    }

    /// One JSON object per line, each line ending in `\n`.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            out.push_str(&step.to_string());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn records_successes_and_failures_as_lines() {
        let mut t = Trajectory::new();
        t.record("mem:echo", &json!({"value": "a"}), Ok(Envelope::ok(json!({"value": "a"}))));
        let timeout = Error::Timeout { url: "http://x".into(), timeout: Duration::from_secs(1) };
        assert_eq!(t.record("mem:sleep", &json!({"ms": 5000}), Err(timeout))["code"], 2002);
        let text = t.to_jsonl();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0]["step"].as_u64(), lines[0]["data"]["value"].as_str()), (Some(1), Some("a")));
        assert_eq!(lines[1]["action"], "mem:sleep");
        assert_eq!(t.successes(), 1);
    }
}
