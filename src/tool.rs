//! Tool descriptions and parameter checking.
//!
//! A backend describes each tool's parameters once, as a list of [`Param`]; from it this module
//! derives the JSON Schema published by `/tools` and checks a call's `params` before the tool
//! runs, so that every missing, mistyped or out-of-range value is a 1002 naming the field. What a
//! parameter means is left to the backend.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The JSON type a parameter takes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Kind {
    /// A string.
    String,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
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
        }
    }

    fn check(&self, field: &str, value: &Value) -> Result<()> {
        let ok = match (self, value) {
            (Kind::String, Value::String(_)) => true,
            (Kind::Enum(values), Value::String(s)) => {
                if values.contains(&s.as_str()) {
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
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether a call must give it.
    pub required: bool,
    /// What it means, for the LLM.
    pub description: &'static str,
    /// Smallest allowed value (numbers) or length (strings, lists).
    pub minimum: Option<f64>,
    /// Largest allowed value (numbers) or length (strings, lists).
    pub maximum: Option<f64>,
    /// The value used when it is absent, published in the schema.
    pub default: Option<Value>,
}

impl Param {
    /// A required parameter.
    pub fn required(name: &'static str, kind: Kind, description: &'static str) -> Self {
        Param { name, kind, required: true, description, minimum: None, maximum: None, default: None }
    }

    /// An optional parameter.
    pub fn optional(name: &'static str, kind: Kind, description: &'static str) -> Self {
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
            return Err(Error::param(self.name, format!("{what} {measure} is below the minimum {min}")));
        }
        if let Some(max) = self.maximum.filter(|&m| measure > m) {
            return Err(Error::param(self.name, format!("{what} {measure} is above the maximum {max}")));
        }
        Ok(())
    }
}

/// A tool as its backend describes it.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    /// Short name (`click`); the full name is `resource:name`.
    pub name: &'static str,
    /// What it does, for the LLM.
    pub description: &'static str,
    /// Its parameters.
    pub params: Vec<Param>,
    /// Runs normally but is listed only on request.
    pub hidden: bool,
    /// Needs no session state (`vm:wait`, `vm:done`): when the worker has no session, it runs
    /// with none rather than in a temporary one; when it has one, it runs in that session's turn.
    pub sessionless: bool,
}

impl ToolSpec {
    /// A visible tool.
    pub fn new(name: &'static str, description: &'static str, params: Vec<Param>) -> Self {
        ToolSpec { name, description, params, hidden: false, sessionless: false }
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
        let mut properties = Map::new();
        for p in &self.params {
            let mut s = p.kind.schema();
            let obj = s.as_object_mut().expect("schema is an object");
            obj.insert("description".into(), p.description.into());
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
            properties.insert(p.name.into(), s);
        }
        let required: Vec<&str> = self.params.iter().filter(|p| p.required).map(|p| p.name).collect();
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
        for p in &self.params {
            match obj.get(p.name) {
                None | Some(Value::Null) if p.required => {
                    return Err(Error::param(p.name, format!("missing required parameter ({})", p.kind.describe())));
                }
                None | Some(Value::Null) => {}
                Some(v) => {
                    p.kind.check(p.name, v)?;
                    p.check_range(v)?;
                }
            }
        }
        Ok(())
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
                Param::optional("button", Kind::Enum(&["left", "right"]), "b"),
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

    #[test]
    fn schema_is_function_calling_shaped() {
        let schema = spec().schema();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["x"]));
        assert_eq!(schema["properties"]["x"]["minimum"], json!(0));
        assert_eq!(schema["properties"]["keys"]["items"]["type"], "string");
    }
}
