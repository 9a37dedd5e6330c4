//! The wire types of docs/protocol.md: the envelope, its meta, and the request bodies.
//!
//! Plain serde structs, always compiled, shared by the in-process API and the HTTP facade, so
//! that both answer with the same bytes. Routing and status codes are left to `src/http/`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{code, Error, ErrorCode};

/// The answer to every call (docs/protocol.md §1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// 0 on success, else a code of docs/protocol.md §2.
    pub code: u32,
    /// `"success"` or what went wrong.
    pub message: String,
    /// The tool's data, or on error what helps the caller act.
    #[serde(default)]
    pub data: Value,
    /// Where and how long.
    #[serde(default)]
    pub meta: Meta,
    /// The error's kind, for the HTTP facade's status (not on the wire; `None` on success and
    /// in an envelope read back from the wire).
    #[serde(skip)]
    pub kind: Option<ErrorCode>,
}

/// The envelope's `meta`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    /// Wall time spent in the engine, milliseconds.
    pub execution_time_ms: f64,
    /// The tool's short name.
    pub tool: Option<String>,
    /// The tool's resource type.
    pub resource_type: Option<String>,
    /// The session the call ran in.
    pub session_id: Option<String>,
    /// Whether the call made and destroyed its own session.
    #[serde(default)]
    pub temporary_session: bool,
    /// The request's trace id, or a fresh one.
    #[serde(default)]
    pub trace_id: String,
}

impl Envelope {
    /// A success carrying `data`.
    pub fn ok(data: Value) -> Self {
        Envelope { code: code::SUCCESS, message: "success".into(), data, meta: Meta::default(), kind: None }
    }

    /// A failure: the error's code, message and data.
    pub fn error(err: &Error) -> Self {
        let data = match err.data() {
            Value::Null => Value::Object(Map::new()),
            d => d,
        };
        Envelope { code: err.code(), message: err.to_string(), data, meta: Meta::default(), kind: Some(err.kind()) }
    }

    /// From a result.
    pub fn from_result(r: Result<Value, Error>) -> Self {
        match r {
            Ok(v) => Envelope::ok(v),
            Err(e) => Envelope::error(&e),
        }
    }

    /// Whether the code is 0.
    pub fn is_ok(&self) -> bool {
        self.code == code::SUCCESS
    }

    /// Sets a fresh trace id unless one is given.
    pub fn traced(mut self, trace_id: Option<String>) -> Self {
        self.meta.trace_id = trace_id.unwrap_or_else(new_trace_id);
        self
    }
}

/// Longest worker id, in bytes.
pub const MAX_WORKER_ID: usize = 128;

/// Checks a worker id: 1 to [`MAX_WORKER_ID`] bytes of letters, digits and `-_.:@+=,~#`, and
/// no `..`. It names sessions and their directories, and shows in logs and headers: nothing that
/// could be a path, a line break or a control character gets in. A 1002 naming `worker_id`.
pub fn check_worker_id(id: &str) -> Result<(), Error> {
    // The common case, checked byte by byte: every call passes here.
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"-_.:@+=,~#".contains(b);
    if !id.is_empty() && id.len() <= MAX_WORKER_ID && id.bytes().all(|b| plain(&b)) && !id.contains("..") {
        return Ok(());
    }
    let reason = if id.is_empty() {
        "must not be empty".to_owned()
    } else if id.len() > MAX_WORKER_ID {
        format!("is {} bytes long; at most {MAX_WORKER_ID}", id.len())
    } else if let Some(c) = id.chars().find(|&c| !(c.is_alphanumeric() || "-_.:@+=,~#".contains(c))) {
        format!("{c:?} is not allowed: use letters, digits and -_.:@+=,~#")
    } else if id.contains("..") {
        "must not contain '..'".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::param("worker_id", reason))
}

fn default_params() -> Value {
    Value::Object(Map::new())
}

/// `POST /execute`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// The calling worker.
    #[serde(default)]
    pub worker_id: String,
    /// The tool's name.
    pub action: String,
    /// The tool's parameters.
    #[serde(default = "default_params")]
    pub params: Value,
    /// Overall timeout, seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Echoed in `meta.trace_id`.
    #[serde(default)]
    pub trace_id: Option<String>,
}

impl ExecuteRequest {
    /// A call of `action` with `params` by `worker_id`.
    pub fn new(worker_id: impl Into<String>, action: impl Into<String>, params: Value) -> Self {
        ExecuteRequest { worker_id: worker_id.into(), action: action.into(), params, timeout: None, trace_id: None }
    }

    /// Sets the overall timeout in seconds.
    pub fn timeout(mut self, seconds: f64) -> Self {
        self.timeout = Some(seconds);
        self
    }
}

/// One action of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchAction {
    /// The tool's name.
    pub action: String,
    /// The tool's parameters.
    #[serde(default = "default_params")]
    pub params: Value,
    /// Timeout, seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
}

fn yes() -> bool {
    true
}

/// `POST /execute/batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRequest {
    /// The calling worker.
    #[serde(default)]
    pub worker_id: String,
    /// The actions, in order.
    pub actions: Vec<BatchAction>,
    /// Run concurrently (same-session actions still run in order).
    #[serde(default)]
    pub parallel: bool,
    /// Stop at the first failure (sequential batches).
    #[serde(default = "yes")]
    pub stop_on_error: bool,
    /// Echoed in `meta.trace_id`.
    #[serde(default)]
    pub trace_id: Option<String>,
}

/// `POST /session/create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateSessionRequest {
    /// The owning worker.
    #[serde(default)]
    pub worker_id: String,
    /// The backend.
    pub resource_type: String,
    /// Overrides of the backend's defaults.
    #[serde(default, alias = "session_config")]
    pub config: Option<Map<String, Value>>,
    /// Sets `session_name`.
    #[serde(default)]
    pub custom_name: Option<String>,
}

impl CreateSessionRequest {
    /// A session of `resource_type` for `worker_id`, with the backend's default config.
    pub fn new(worker_id: impl Into<String>, resource_type: impl Into<String>) -> Self {
        CreateSessionRequest {
            worker_id: worker_id.into(),
            resource_type: resource_type.into(),
            config: None,
            custom_name: None,
        }
    }

    /// Sets the session's config (overrides of the backend's defaults); a JSON object.
    pub fn config(mut self, config: Value) -> Self {
        self.config = match config {
            Value::Object(map) => Some(map),
            _ => None,
        };
        self
    }
}

/// `POST /session/destroy` and `/session/refresh` (resource optional there).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRequest {
    /// The owning worker.
    #[serde(default)]
    pub worker_id: String,
    /// The backend; for refresh, absent means all of the worker's sessions.
    #[serde(default)]
    pub resource_type: Option<String>,
}

/// `POST /session/list`, heartbeat, status, disconnect.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerRequest {
    /// The worker.
    #[serde(default)]
    pub worker_id: String,
}

/// `POST /warmup`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WarmupRequest {
    /// Backends to warm; absent or empty means all.
    #[serde(default, alias = "resources")]
    pub backends: Option<Vec<String>>,
}

/// `POST /shutdown`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShutdownRequest {
    /// Cancel running calls instead of letting them finish.
    #[serde(default)]
    pub force: bool,
    /// Destroy every session.
    #[serde(default = "yes")]
    pub cleanup_sessions: bool,
}

impl Default for ShutdownRequest {
    fn default() -> Self {
        ShutdownRequest { force: false, cleanup_sessions: true }
    }
}

/// A fresh 32-hex-digit trace id: unique per process, unpredictable across processes.
pub fn new_trace_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Written digit by digit: `format!` costs a few percent of a no-op call.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (i, word) in [seed, splitmix(seed ^ n)].into_iter().enumerate() {
        for j in 0..16 {
            id[i * 16 + j] = HEX[((word >> (60 - 4 * j)) & 0xf) as usize];
        }
    }
    String::from_utf8_lossy(&id).into_owned()
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// RFC 3339 UTC with whole seconds: `2025-02-04T10:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_738_663_200)), "2025-02-04T10:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn worker_ids_are_bounded_and_printable() {
        for ok in ["w", "my_worker", "sandbox_xxx", "runner-3@host.example:8080", "é-worker", &"a".repeat(128)] {
            assert!(check_worker_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "..", "a..b", "a\0b", "a\r\nX-Evil: 1", "a b", "a\u{202e}b", &"a".repeat(129)] {
            match check_worker_id(bad) {
                Err(Error::Param { field, .. }) => assert_eq!(field, "worker_id"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn trace_ids_are_unique() {
        let a = new_trace_id();
        let b = new_trace_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn create_accepts_session_config_alias() {
        let r: CreateSessionRequest =
            serde_json::from_str(r#"{"worker_id":"w","resource_type":"vm","session_config":{"a":1}}"#).unwrap();
        assert_eq!(r.config.unwrap()["a"], 1);
    }
}
