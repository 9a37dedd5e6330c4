//! Tool descriptions, parameter checking, and tools and configs declared as Rust types.
//!
//! A tool's parameters are described once, as a list of [`Param`]; from it this module derives
//! the JSON Schema published by `/tools` and checks a call's `params` before the tool runs, so
//! that every missing, mistyped or out-of-range value is a 1002 naming the field. What a
//! parameter means is left to the backend.
//!
//! The built-in backends do not write that list by hand: each declares its tools as one Rust
//! enum, a variant per tool whose fields are the parameters (serde names them, doc comments
//! describe them, `#[schemars(range(..))]` bounds them), tagged as
//! `#[serde(tag = "tool", content = "params", rename_all = "snake_case")]`. [`tool_specs`]
//! derives the [`ToolSpec`]s from the enum's schema (schemars), and [`parse_call`] turns a
//! checked call into the enum, after which no string is matched again. A variant marked
//! `#[schemars(extend("x-hidden" = true))]` is hidden, `"x-sessionless"` sessionless. Session
//! configs go the same way ([`parse_config`]): one struct per backend, checked against its own
//! schema (an unknown key is a 1002 naming it and listing the known ones), then deserialised.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The JSON type a parameter takes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Kind {
    /// A string.
    String,
    /// One of a fixed set of strings.
    Enum(Vec<String>),
    /// An integer (a float with no fractional part is accepted).
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A list whose items are of the given kind.
    Array(Box<Kind>),
    /// A JSON object.
    Object,
    /// A JSON object whose values are all of the given kind (`env: {"A": "1"}`).
    Map(Box<Kind>),
}

impl Kind {
    fn schema(&self) -> Value {
        match self {
            Kind::String => json!({"type": "string"}),
            Kind::Enum(values) => json!({"type": "string", "enum": values}),
            Kind::Integer => json!({"type": "integer"}),
            Kind::Number => json!({"type": "number"}),
            Kind::Boolean => json!({"type": "boolean"}),
            Kind::Array(item) => json!({"type": "array", "items": item.schema()}),
            Kind::Object => json!({"type": "object"}),
            Kind::Map(item) => json!({"type": "object", "additionalProperties": item.schema()}),
        }
    }

    fn describe(&self) -> String {
        match self {
            Kind::String => "a string".into(),
            Kind::Enum(values) => format!("one of {}", values.join(", ")),
            Kind::Integer => "an integer".into(),
            Kind::Number => "a number".into(),
            Kind::Boolean => "a boolean".into(),
            Kind::Array(item) => format!("a list of {}", plural(&item.describe())),
            Kind::Object => "an object".into(),
            Kind::Map(item) => format!("an object of {}", plural(&item.describe())),
        }
    }

    fn check(&self, field: &str, value: &Value) -> Result<()> {
        let ok = match (self, value) {
            (Kind::String, Value::String(_)) => true,
            (Kind::Enum(values), Value::String(s)) => {
                if values.iter().any(|v| v == s) {
                    true
                } else {
                    return Err(Error::param(field, format!("expected {}, got '{s}'", self.describe())));
                }
            }
            (Kind::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.is_finite())
            }
            (Kind::Number, Value::Number(_)) => true,
            (Kind::Boolean, Value::Bool(_)) => true,
            (Kind::Array(item), Value::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    item.check(&format!("{field}[{i}]"), v)?;
                }
                true
            }
            (Kind::Object, Value::Object(_)) => true,
            (Kind::Map(item), Value::Object(map)) => {
                for (k, v) in map {
                    item.check(&format!("{field}.{k}"), v)?;
                }
                true
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::param(field, format!("expected {}, got {}", self.describe(), type_name(value))))
        }
    }
}

fn plural(s: &str) -> String {
    s.trim_start_matches("an ").trim_start_matches("a ").to_string() + "s"
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// One parameter of a tool.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name in `params`.
    pub name: String,
    /// Its type.
    pub kind: Kind,
    /// Whether a call must give it.
    pub required: bool,
    /// What it means, for the LLM.
    pub description: String,
    /// Smallest allowed value (numbers) or length (strings, lists).
    pub minimum: Option<f64>,
    /// Largest allowed value (numbers) or length (strings, lists).
    pub maximum: Option<f64>,
    /// The value used when it is absent, published in the schema.
    pub default: Option<Value>,
}

impl Param {
    /// A required parameter.
    pub fn required(name: impl Into<String>, kind: Kind, description: impl Into<String>) -> Self {
        Param {
            name: name.into(),
            kind,
            required: true,
            description: description.into(),
            minimum: None,
            maximum: None,
            default: None,
        }
    }

    /// An optional parameter.
    pub fn optional(name: impl Into<String>, kind: Kind, description: impl Into<String>) -> Self {
        Param { required: false, ..Param::required(name, kind, description) }
    }

    /// Sets the allowed range (inclusive).
    pub fn range(mut self, minimum: Option<f64>, maximum: Option<f64>) -> Self {
        self.minimum = minimum;
        self.maximum = maximum;
        self
    }

    /// Sets the published default.
    pub fn default(mut self, value: Value) -> Self {
        self.default = Some(value);
        self
    }

    fn check_range(&self, value: &Value) -> Result<()> {
        let (measure, what) = match value {
            Value::Number(n) => (n.as_f64().unwrap_or(0.0), "value"),
            Value::String(s) => (s.chars().count() as f64, "length"),
            Value::Array(a) => (a.len() as f64, "length"),
            _ => return Ok(()),
        };
        if let Some(min) = self.minimum.filter(|&m| measure < m) {
            return Err(Error::param(&self.name, format!("{what} {measure} is below the minimum {min}")));
        }
        if let Some(max) = self.maximum.filter(|&m| measure > m) {
            return Err(Error::param(&self.name, format!("{what} {measure} is above the maximum {max}")));
        }
        Ok(())
    }
}

/// A JSON Schema given as is (an MCP server's input schema), compiled once to check calls.
#[derive(Clone)]
pub struct RawSchema {
    schema: Value,
    /// `None` when the schema does not compile: calls are then only checked to be objects.
    validator: Option<std::sync::Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for RawSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSchema").field("schema", &self.schema).field("compiled", &self.validator.is_some()).finish()
    }
}

impl RawSchema {
    /// Compiles `schema` (any draft the schema names; no remote reference is fetched). A schema
    /// that does not compile is kept for publishing and a warning logged.
    pub fn new(schema: Value) -> Self {
        let validator = match jsonschema::options().should_validate_formats(false).build(&schema) {
            Ok(v) => Some(std::sync::Arc::new(v)),
            Err(e) => {
                tracing::warn!(
                    "a tool's input schema does not compile ({e}): its calls are checked only to be objects"
                );
                None
            }
        };
        RawSchema { schema, validator }
    }

    /// The schema as given.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Checks `params` (an object) against the schema: the first error, naming the field
    /// (`edits[0].oldText`; a missing property by its own name).
    fn validate(&self, params: &Value) -> Result<()> {
        let Some(validator) = &self.validator else { return Ok(()) };
        let Some(error) = validator.iter_errors(params).next() else { return Ok(()) };
        let mut field = String::new();
        for segment in error.instance_path().iter() {
            match segment {
                jsonschema::paths::LocationSegment::Property(p) => {
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field.push_str(&p);
                }
                jsonschema::paths::LocationSegment::Index(i) => field.push_str(&format!("[{i}]")),
            }
        }
        if let jsonschema::error::ValidationErrorKind::Required { property } = error.kind() {
            let name = property.as_str().map_or_else(|| property.to_string(), str::to_owned);
            field = if field.is_empty() { name } else { format!("{field}.{name}") };
            return Err(Error::param(field, "missing required parameter"));
        }
        if field.is_empty() {
            field = "params".into();
        }
        Err(Error::param(field, error.to_string()))
    }
}

/// A tool as its backend describes it.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// Short name (`click`); the full name is `resource:name`.
    pub name: String,
    /// What it does, for the LLM.
    pub description: String,
    /// Its parameters.
    pub params: Vec<Param>,
    /// Runs normally but is listed only on request.
    pub hidden: bool,
    /// Needs no session state (`vm:wait`, `vm:done`): when the worker has no session, it runs
    /// with none rather than in a temporary one; when it has one, it runs in that session's turn.
    pub sessionless: bool,
    /// A JSON Schema given as is, published and checked instead of `params` (which is then
    /// empty): an MCP server's tool.
    pub raw_schema: Option<RawSchema>,
}

impl ToolSpec {
    /// A visible tool.
    pub fn new(name: impl Into<String>, description: impl Into<String>, params: Vec<Param>) -> Self {
        ToolSpec {
            name: name.into(),
            description: description.into(),
            params,
            hidden: false,
            sessionless: false,
            raw_schema: None,
        }
    }

    /// A visible tool whose parameters are described by a JSON Schema given as is (see
    /// [`RawSchema`]).
    pub fn with_schema(name: impl Into<String>, description: impl Into<String>, schema: Value) -> Self {
        ToolSpec { raw_schema: Some(RawSchema::new(schema)), ..ToolSpec::new(name, description, Vec::new()) }
    }

    /// Marks the tool as needing no session state.
    pub fn sessionless(mut self) -> Self {
        self.sessionless = true;
        self
    }

    /// Marks the tool hidden.
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    /// The JSON Schema of the parameters, as an LLM function-calling API accepts it.
    pub fn schema(&self) -> Value {
        if let Some(raw) = &self.raw_schema {
            return raw.schema.clone();
        }
        let mut properties = Map::new();
        for p in &self.params {
            let mut s = p.kind.schema();
            let obj = s.as_object_mut().expect("schema is an object");
            obj.insert("description".into(), p.description.clone().into());
            if let Some(d) = &p.default {
                obj.insert("default".into(), d.clone());
            }
            let numeric = matches!(p.kind, Kind::Integer | Kind::Number);
            let (lo, hi) = match (&p.kind, numeric) {
                (_, true) => ("minimum", "maximum"),
                (Kind::Array(_), _) => ("minItems", "maxItems"),
                _ => ("minLength", "maxLength"),
            };
            if let Some(m) = p.minimum {
                obj.insert(lo.into(), number(m, numeric));
            }
            if let Some(m) = p.maximum {
                obj.insert(hi.into(), number(m, numeric));
            }
            properties.insert(p.name.clone(), s);
        }
        let required: Vec<&str> = self.params.iter().filter(|p| p.required).map(|p| p.name.as_str()).collect();
        json!({"type": "object", "properties": properties, "required": required})
    }

    /// Checks `params` against the parameter list: an object, every required field present
    /// and non-null, every given field of the right type and in range. Unknown fields pass.
    pub fn validate(&self, params: &Value) -> Result<()> {
        let obj = match params {
            Value::Object(o) => o,
            Value::Null => return self.validate(&Value::Object(Map::new())),
            other => {
                return Err(Error::param("params", format!("expected an object, got {}", type_name(other))));
            }
        };
        if let Some(raw) = &self.raw_schema {
            return raw.validate(params);
        }
        for p in &self.params {
            match obj.get(&p.name) {
                None | Some(Value::Null) if p.required => {
                    return Err(Error::param(&p.name, format!("missing required parameter ({})", p.kind.describe())));
                }
                None | Some(Value::Null) => {}
                Some(v) => {
                    p.kind.check(&p.name, v)?;
                    p.check_range(v)?;
                }
            }
        }
        Ok(())
    }
}

// ---- tools and configs as Rust types ---------------------------------------------------------

/// The schema of `T` with every subschema inlined, as function-calling APIs take it.
fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true).into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// The tools of a backend declared as one enum (see the module documentation), in the order of
/// its variants.
pub fn tool_specs<T: JsonSchema>() -> Vec<ToolSpec> {
    let schema = schema_of::<T>();
    let variants = schema.get("oneOf").and_then(Value::as_array).cloned().unwrap_or_default();
    variants
        .iter()
        .map(|v| {
            let name = v.pointer("/properties/tool/const").and_then(Value::as_str).unwrap_or_default();
            let description = unwrap_lines(v.get("description").and_then(Value::as_str).unwrap_or_default());
            let params = v.pointer("/properties/params").map(params_of).unwrap_or_default();
            let flag = |key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(false);
            ToolSpec {
                name: name.to_owned(),
                description,
                params,
                hidden: flag("x-hidden"),
                sessionless: flag("x-sessionless"),
                raw_schema: None,
            }
        })
        .collect()
}

/// A call of tool `tool` as the backend's tool enum. `params` was checked against the tool's
/// spec, so this fails only where a schema cannot say (then a 1002 on `params`).
pub fn parse_call<T: DeserializeOwned>(tool: &str, mut params: Value) -> Result<T> {
    if params.is_null() {
        params = Value::Object(Map::new());
    }
    integral(&mut params);
    let call = CallAccess { tool: Some(tool), params: Some(params) };
    T::deserialize(serde::de::value::MapAccessDeserializer::new(call))
        .map_err(|e| Error::param("params", e.to_string()))
}

/// A call as the enum's adjacently tagged form, `{"tool": .., "params": ..}`, presented to serde
/// without building it (the hot path of every call): the tag first, so serde reads the
/// parameters straight into the variant.
struct CallAccess<'a> {
    tool: Option<&'a str>,
    params: Option<Value>,
}

impl<'de> serde::de::MapAccess<'de> for CallAccess<'_> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> std::result::Result<Option<K::Value>, Self::Error> {
        use serde::de::IntoDeserializer;
        let key = match (self.tool.is_some(), self.params.is_some()) {
            (true, _) => "tool",
            (false, true) => "params",
            (false, false) => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        use serde::de::IntoDeserializer;
        match self.tool.take() {
            Some(tool) => seed.deserialize(tool.into_deserializer()),
            None => seed.deserialize(self.params.take().unwrap_or(Value::Null)),
        }
    }
}

/// A session config (the backend's defaults merged with the session's keys) as the backend's
/// config struct: checked against the struct's schema first, so that an unknown key, a missing
/// one, a mistyped or out-of-range value is a 1002 naming the key (`env.NAME` inside a map).
pub fn parse_config<T: DeserializeOwned + JsonSchema + 'static>(config: &Map<String, Value>) -> Result<T> {
    let spec = config_spec::<T>();
    if let Some(key) = config.keys().find(|k| !spec.params.iter().any(|p| &p.name == *k)) {
        let known: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
        return Err(Error::param(key, format!("unknown session config key (known: {})", known.join(", "))));
    }
    let mut config = Value::Object(config.clone());
    spec.validate(&config)?;
    integral(&mut config);
    T::deserialize(config).map_err(|e| Error::param("config", e.to_string()))
}

/// The checks of config type `T`, derived from its schema once per process (every session
/// create reads its config).
fn config_spec<T: JsonSchema + 'static>() -> std::sync::Arc<ToolSpec> {
    use std::any::TypeId;
    use std::collections::HashMap;
    static SPECS: parking_lot::Mutex<Option<HashMap<TypeId, std::sync::Arc<ToolSpec>>>> = parking_lot::Mutex::new(None);
    let mut specs = SPECS.lock();
    let spec = specs
        .get_or_insert_with(HashMap::new)
        .entry(TypeId::of::<T>())
        .or_insert_with(|| std::sync::Arc::new(ToolSpec::new("config", "", params_of(&schema_of::<T>()))));
    spec.clone()
}

/// Numbers with no fractional part as integers (`3.0` as `3`), as the checks accept them: serde
/// reads an integer into a float field, not a float into an integer one.
fn integral(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral),
        Value::Object(map) => map.values_mut().for_each(integral),
        _ => {}
    }
}

/// The parameters of an object schema, in the order schemars lists its properties.
fn params_of(schema: &Value) -> Vec<Param> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return Vec::new() };
    properties
        .iter()
        .map(|(name, p)| {
            let kind = kind_of(p);
            let numeric = matches!(kind, Kind::Integer | Kind::Number);
            let bound = |keys: [&str; 3]| keys.iter().find_map(|k| p.get(*k).and_then(Value::as_f64));
            let (mut minimum, mut maximum) =
                (bound(["minimum", "minLength", "minItems"]), bound(["maximum", "maxLength", "maxItems"]));
            if numeric {
                // The integer's own range, where the schema gives none.
                let (lo, hi) = format_range(p.get("format").and_then(Value::as_str).unwrap_or_default());
                minimum = minimum.or(lo);
                maximum = maximum.or(hi);
            }
            Param {
                name: name.clone(),
                kind,
                required: required.contains(&name.as_str()),
                description: unwrap_lines(p.get("description").and_then(Value::as_str).unwrap_or_default()),
                minimum,
                maximum,
                default: p.get("default").cloned(),
            }
        })
        .collect()
}

/// A doc comment's text as one paragraph per blank-line-separated block: the line breaks of the
/// source are not the reader's.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n").map(|p| p.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n\n")
}

/// The [`Kind`] of a property's schema (`null` in a type list means only that it may be left out).
fn kind_of(p: &Value) -> Kind {
    let ty = match p.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("object"),
        _ => "object",
    };
    match ty {
        "string" => match p.get("enum").and_then(Value::as_array) {
            Some(values) => Kind::Enum(values.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
            None => Kind::String,
        },
        "integer" => Kind::Integer,
        "number" => Kind::Number,
        "boolean" => Kind::Boolean,
        "array" => Kind::Array(Box::new(p.get("items").map_or(Kind::Object, kind_of))),
        _ => match p.get("additionalProperties") {
            Some(item @ Value::Object(_)) => Kind::Map(Box::new(kind_of(item))),
            _ => Kind::Object,
        },
    }
}

/// The range of an integer format of schemars (`uint32`…), where it has one that matters.
fn format_range(format: &str) -> (Option<f64>, Option<f64>) {
    match format {
        "uint8" => (Some(0.0), Some(u8::MAX as f64)),
        "uint16" => (Some(0.0), Some(u16::MAX as f64)),
        "uint32" => (Some(0.0), Some(u32::MAX as f64)),
        "uint64" | "uint" => (Some(0.0), None),
        "int8" => (Some(i8::MIN as f64), Some(i8::MAX as f64)),
        "int16" => (Some(i16::MIN as f64), Some(i16::MAX as f64)),
        "int32" => (Some(i32::MIN as f64), Some(i32::MAX as f64)),
        _ => (None, None),
    }
}

fn number(m: f64, numeric: bool) -> Value {
    if !numeric || m.fract() == 0.0 {
        json!(m as i64)
    } else {
        json!(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ToolSpec {
        ToolSpec::new(
            "click",
            "click",
            vec![
                Param::required("x", Kind::Integer, "x").range(Some(0.0), None),
                Param::optional("button", Kind::Enum(vec!["left".into(), "right".into()]), "b"),
                Param::optional("keys", Kind::Array(Box::new(Kind::String)), "k"),
            ],
        )
    }

    fn field_of(r: Result<()>) -> String {
        match r {
            Err(Error::Param { field, .. }) => field,
            other => panic!("expected a parameter error, got {other:?}"),
        }
    }

    #[test]
    fn names_the_offending_field() {
        let s = spec();
        assert!(s.validate(&json!({"x": 3})).is_ok());
        assert!(s.validate(&json!({"x": 3.0})).is_ok());
        assert_eq!(field_of(s.validate(&json!({}))), "x");
        assert_eq!(field_of(s.validate(&json!({"x": "3"}))), "x");
        assert_eq!(field_of(s.validate(&json!({"x": -1}))), "x");
        assert_eq!(field_of(s.validate(&json!({"x": 1.5}))), "x");
        assert_eq!(field_of(s.validate(&json!({"x": 1, "button": "up"}))), "button");
        assert_eq!(field_of(s.validate(&json!({"x": 1, "keys": ["a", 2]}))), "keys[1]");
        assert_eq!(field_of(s.validate(&json!([1]))), "params");
    }

    #[derive(Debug, PartialEq, serde::Deserialize, JsonSchema)]
    #[serde(tag = "tool", content = "params", rename_all = "snake_case")]
    enum Tools {
        /// Clicks
        /// somewhere.
        Click {
            /// column
            #[schemars(range(min = 0))]
            x: i64,
            /// how many
            #[serde(default = "one")]
            n: u8,
        },
        /// Waits.
        #[schemars(extend("x-sessionless" = true))]
        Wait {},
        /// Hidden.
        #[schemars(extend("x-hidden" = true))]
        Info {},
    }

    fn one() -> u8 {
        1
    }

    #[derive(Debug, serde::Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        /// seconds
        #[schemars(range(min = 1, max = 10))]
        timeout: Option<u32>,
        env: Option<std::collections::BTreeMap<String, String>>,
    }

    #[test]
    fn tools_declared_as_an_enum() {
        let specs = tool_specs::<Tools>();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["click", "wait", "info"]);
        assert_eq!(specs[0].description, "Clicks somewhere.");
        assert_eq!((specs[1].sessionless, specs[1].hidden, specs[2].hidden), (true, false, true));
        let schema = specs[0].schema();
        assert_eq!(schema["required"], json!(["x"]));
        assert_eq!(schema["properties"]["x"]["minimum"], json!(0));
        // An integer's own range is published and checked.
        assert_eq!(
            (&schema["properties"]["n"]["maximum"], &schema["properties"]["n"]["default"]),
            (&json!(255), &json!(1))
        );
        assert_eq!(field_of(specs[0].validate(&json!({"x": 1, "n": 256}))), "n");
        // Parsed once; an integral float reads as the integer it is.
        assert_eq!(parse_call::<Tools>("click", json!({"x": 3.0})).unwrap(), Tools::Click { x: 3, n: 1 });
        assert_eq!(parse_call::<Tools>("wait", Value::Null).unwrap(), Tools::Wait {});
    }

    #[test]
    fn configs_name_the_offending_key_and_list_the_known_ones() {
        let config = |v: Value| parse_config::<Config>(v.as_object().unwrap());
        assert!(config(json!({"timeout": 5, "env": {"A": "1"}})).is_ok());
        match config(json!({"colour": 1})) {
            Err(Error::Param { field, reason }) => {
                assert_eq!(field, "colour");
                assert!(reason.contains("timeout, env") || reason.contains("env, timeout"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(field_of(config(json!({"timeout": 11})).map(drop)), "timeout");
        assert_eq!(field_of(config(json!({"env": {"A": 1}})).map(drop)), "env.A");
    }

    #[test]
    fn schema_is_function_calling_shaped() {
        let schema = spec().schema();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["x"]));
        assert_eq!(schema["properties"]["x"]["minimum"], json!(0));
        assert_eq!(schema["properties"]["keys"]["items"]["type"], "string");
    }
}
