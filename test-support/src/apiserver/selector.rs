//! Field selectors (`a=b,c!=d`) as list and watch requests filter pods
//! with them.

use serde_json::Value;

/// A field selector (`a=b,c!=d`, `==` too) plus the namespace of the path;
/// fields are dotted paths into the object's JSON.
pub(super) struct Selector {
    terms: Vec<(String, bool, String)>,
}

impl Selector {
    pub(super) fn parse(namespace: Option<&str>, text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        if let Some(namespace) = namespace {
            terms.push(("metadata.namespace".to_owned(), true, namespace.to_owned()));
        }
        for term in text.split(',').filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            terms.push((field.to_owned(), equal, value.to_owned()));
        }
        Ok(Self { terms })
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|(field, equal, value)| {
            let found = field.split('.').fold(object, |v, key| &v[key]);
            (found.as_str().unwrap_or_default() == value) == *equal
        })
    }
}
