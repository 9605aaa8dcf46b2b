//! Event types and their JSON Schemas.
//!
//! An event type is category + name. Its schema validates the event's `data` and
//! names itself with `"x-eye-event": {"category": ..., "name": ...}`. Schemas are
//! compiled once, when the registry is built.

use std::collections::HashMap;
use std::path::Path;

use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

/// The schemas shipped in `schemas/`, built into every binary.
pub const BUILTIN_SCHEMAS: [(&str, &str); 3] = [
    (
        "page-interaction.pageview.json",
        include_str!("../../../schemas/page-interaction.pageview.json"),
    ),
    (
        "page-interaction.cta-click.json",
        include_str!("../../../schemas/page-interaction.cta-click.json"),
    ),
    (
        "form-interaction.submit.json",
        include_str!("../../../schemas/form-interaction.submit.json"),
    ),
];

/// Most schema violations spelled out in one error record.
const MAX_LISTED: usize = 5;

/// Compiled schemas by event type.
pub struct SchemaRegistry {
    /// category → name → validator: looked up without allocating.
    validators: HashMap<String, HashMap<String, Validator>>,
}

/// The outcome of checking one payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaCheck {
    /// The payload satisfies its type's schema.
    Valid,
    /// No schema is registered for this type.
    UnknownType,
    /// The payload breaks the schema.
    Invalid {
        /// JSON pointer to the first offending field, from the event's root
        /// (so it starts with `/data`).
        field: String,
        /// Every violation (up to five), for people.
        message: String,
    },
}

/// Why a schema could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A file could not be read.
    #[error("cannot read schema {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A file is not JSON.
    #[error("schema {path} is not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    /// A file lacks `x-eye-event`.
    #[error(
        "schema {path} must name its event type with \"x-eye-event\": {{\"category\": \"...\", \"name\": \"...\"}}"
    )]
    MissingType { path: String },
    /// Two files claim the same type.
    #[error("schemas {first} and {second} both claim event type {category}/{name}")]
    Duplicate {
        category: String,
        name: String,
        first: String,
        second: String,
    },
    /// A file is not a valid JSON Schema.
    #[error("schema {path} is not a valid JSON Schema: {message}")]
    Invalid { path: String, message: String },
}

impl SchemaRegistry {
    /// The schemas shipped with The Eye.
    pub fn builtin() -> Result<Self, SchemaError> {
        Self::from_sources(
            BUILTIN_SCHEMAS
                .iter()
                .map(|(name, text)| ((*name).to_owned(), (*text).to_owned())),
        )
    }

    /// Every `*.json` file of a directory, in place of the built-in set.
    pub fn from_dir(dir: &Path) -> Result<Self, SchemaError> {
        let io = |source| SchemaError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut sources = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Io {
                path: path.display().to_string(),
                source,
            })?;
            sources.push((path.display().to_string(), text));
        }
        Self::from_sources(sources)
    }

    /// Compiles `(origin, text)` pairs.
    pub fn from_sources(
        sources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SchemaError> {
        let mut validators: HashMap<String, HashMap<String, Validator>> = HashMap::new();
        let mut origins: HashMap<(String, String), String> = HashMap::new();
        for (path, text) in sources {
            let schema: Value =
                serde_json::from_str(&text).map_err(|source| SchemaError::Json {
                    path: path.clone(),
                    source,
                })?;
            let event = &schema["x-eye-event"];
            let (Some(category), Some(name)) = (event["category"].as_str(), event["name"].as_str())
            else {
                return Err(SchemaError::MissingType { path });
            };
            let key = (category.to_owned(), name.to_owned());
            if let Some(first) = origins.get(&key) {
                return Err(SchemaError::Duplicate {
                    category: key.0,
                    name: key.1,
                    first: first.clone(),
                    second: path,
                });
            }
            let validator =
                jsonschema::validator_for(&schema).map_err(|e| SchemaError::Invalid {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            origins.insert(key.clone(), path);
            validators
                .entry(key.0)
                .or_default()
                .insert(key.1, validator);
        }
        Ok(Self { validators })
    }

    /// The registered event types, sorted.
    pub fn types(&self) -> Vec<(String, String)> {
        let mut types: Vec<_> = self
            .validators
            .iter()
            .flat_map(|(c, names)| names.keys().map(move |n| (c.clone(), n.clone())))
            .collect();
        types.sort();
        types
    }

    /// Checks `data` against the schema of `category`/`name`.
    pub fn check(&self, category: &str, name: &str, data: &Value) -> SchemaCheck {
        let Some(validator) = self
            .validators
            .get(category)
            .and_then(|names| names.get(name))
        else {
            return SchemaCheck::UnknownType;
        };
        if validator.is_valid(data) {
            return SchemaCheck::Valid;
        }
        let mut field = None;
        let mut messages = Vec::new();
        let mut total = 0;
        for error in validator.iter_errors(data) {
            total += 1;
            let mut pointer = format!("/data{}", error.instance_path().as_str());
            if let ValidationErrorKind::Required { property } = error.kind() {
                if let Some(p) = property.as_str() {
                    pointer.push('/');
                    pointer.push_str(&p.replace('~', "~0").replace('/', "~1"));
                }
            }
            if messages.len() < MAX_LISTED {
                messages.push(format!("{pointer}: {error}"));
            }
            field.get_or_insert(pointer);
        }
        if total > MAX_LISTED {
            messages.push(format!("and {} more", total - MAX_LISTED));
        }
        SchemaCheck::Invalid {
            field: field.unwrap_or_else(|| "/data".into()),
            message: messages.join("; "),
        }
    }
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("types", &self.types())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn registry() -> SchemaRegistry {
        SchemaRegistry::builtin().unwrap()
    }

    #[test]
    fn builtin_covers_the_seed_types() {
        assert_eq!(
            registry().types(),
            vec![
                ("form interaction".into(), "submit".into()),
                ("page interaction".into(), "cta click".into()),
                ("page interaction".into(), "pageview".into()),
            ]
        );
    }

    #[test]
    fn builtin_list_matches_the_schemas_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json"))
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> =
            BUILTIN_SCHEMAS.iter().map(|(n, _)| n.to_string()).collect();
        built_in.sort();
        assert_eq!(on_disk, built_in, "add new schema files to BUILTIN_SCHEMAS");
        assert_eq!(
            SchemaRegistry::from_dir(&dir).unwrap().types(),
            registry().types()
        );
    }

    #[test]
    fn seed_payloads_are_valid() {
        let r = registry();
        let host_path = json!({"host": "www.consumeraffairs.com", "path": "/"});
        assert_eq!(
            r.check("page interaction", "pageview", &host_path),
            SchemaCheck::Valid
        );
        assert_eq!(
            r.check(
                "page interaction",
                "cta click",
                &json!({"host": "h", "path": "/", "element": "chat bubble"})
            ),
            SchemaCheck::Valid
        );
        assert_eq!(
            r.check(
                "form interaction",
                "submit",
                &json!({"host": "h", "path": "/", "form": {"first_name": "John"}})
            ),
            SchemaCheck::Valid
        );
    }

    #[test]
    fn missing_field_is_named_by_pointer() {
        let r = registry();
        match r.check(
            "page interaction",
            "cta click",
            &json!({"host": "h", "path": "/"}),
        ) {
            SchemaCheck::Invalid { field, message } => {
                assert_eq!(field, "/data/element");
                assert!(message.contains("element"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_type_is_named_by_pointer() {
        let r = registry();
        match r.check(
            "form interaction",
            "submit",
            &json!({"host": "h", "path": "/", "form": "John"}),
        ) {
            SchemaCheck::Invalid { field, .. } => assert_eq!(field, "/data/form"),
            other => panic!("{other:?}"),
        }
        match r.check(
            "page interaction",
            "pageview",
            &json!({"host": 7, "path": "/"}),
        ) {
            SchemaCheck::Invalid { field, .. } => assert_eq!(field, "/data/host"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_type() {
        assert_eq!(
            registry().check("page interaction", "scroll", &json!({})),
            SchemaCheck::UnknownType
        );
    }

    #[test]
    fn bad_schema_sources_are_refused_with_reasons() {
        let src = |t: &str| vec![("a.json".to_string(), t.to_string())];
        assert!(matches!(
            SchemaRegistry::from_sources(src("{")),
            Err(SchemaError::Json { .. })
        ));
        assert!(matches!(
            SchemaRegistry::from_sources(src(r#"{"type":"object"}"#)),
            Err(SchemaError::MissingType { .. })
        ));
        assert!(matches!(
            SchemaRegistry::from_sources(src(
                r#"{"x-eye-event":{"category":"c","name":"n"},"type":"nonsense"}"#
            )),
            Err(SchemaError::Invalid { .. })
        ));
        let one = r#"{"x-eye-event":{"category":"c","name":"n"}}"#;
        let two = vec![("a.json".into(), one.into()), ("b.json".into(), one.into())];
        assert!(matches!(
            SchemaRegistry::from_sources(two),
            Err(SchemaError::Duplicate { .. })
        ));
    }
}
