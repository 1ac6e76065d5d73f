//! Label selectors (`app=x,tier!=db,env in (a,b),!legacy`) and field selectors
//! (`metadata.name=x,involvedObject.kind!=Agent`), parsed with errors naming the bad term.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelRequirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Why a selector does not parse; each message quotes the term at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unbalanced '{0}'")]
    Unbalanced(char),
    #[error("empty requirement in {0:?}")]
    EmptyRequirement(String),
    #[error("invalid label key {key:?} in {term:?}")]
    InvalidKey { key: String, term: String },
    #[error("invalid label value {value:?} in {term:?}")]
    InvalidValue { value: String, term: String },
    #[error("unable to parse requirement {0:?}")]
    Unparsable(String),
    #[error("expected a parenthesized set of values in {0:?}")]
    NotASet(String),
    #[error("invalid field selector term {0:?}: expected field=value")]
    InvalidFieldTerm(String),
    #[error("field label not supported: {path} (supported: {supported})")]
    UnsupportedField { path: String, supported: String },
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Result<Vec<&str>, Error> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(Error::Unbalanced(')'));
                }
            }
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(Error::Unbalanced('('));
    }
    terms.push(&s[start..]);
    Ok(terms)
}

fn check_key(key: &str, term: &str) -> Result<String, Error> {
    let valid = !key.is_empty()
        && key.len() <= 317
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && key.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && key.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid { Ok(key.to_string()) } else { Err(Error::InvalidKey { key: key.to_owned(), term: term.to_owned() }) }
}

fn check_value(value: &str, term: &str) -> Result<String, Error> {
    let valid = value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (value.is_empty()
            || (value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && value.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())));
    if valid {
        Ok(value.to_string())
    } else {
        Err(Error::InvalidValue { value: value.to_owned(), term: term.to_owned() })
    }
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, Error> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for raw in split_terms(s)? {
            let term = raw.trim();
            if term.is_empty() {
                return Err(Error::EmptyRequirement(s.to_owned()));
            }
            if let Some(key) = term.strip_prefix('!') {
                reqs.push(LabelRequirement::NotExists(check_key(key.trim(), term)?));
            } else if let Some((k, v)) = term.split_once("!=") {
                reqs.push(LabelRequirement::NotEquals(check_key(k.trim(), term)?, check_value(v.trim(), term)?));
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                reqs.push(LabelRequirement::Equals(check_key(k.trim(), term)?, check_value(v.trim(), term)?));
            } else if let Some((k, rest)) = split_set_op(term, " notin ") {
                reqs.push(LabelRequirement::NotIn(check_key(k, term)?, parse_set(rest, term)?));
            } else if let Some((k, rest)) = split_set_op(term, " in ") {
                reqs.push(LabelRequirement::In(check_key(k, term)?, parse_set(rest, term)?));
            } else if term.contains(['(', ')', ' ', '<', '>']) {
                return Err(Error::Unparsable(term.to_owned()));
            } else {
                reqs.push(LabelRequirement::Exists(check_key(term, term)?));
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        self.matches_with(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    /// Matches against labels looked up by `get`.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        })
    }
}

fn split_set_op<'a>(term: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let (k, rest) = term.split_once(op)?;
    Some((k.trim(), rest.trim()))
}

fn parse_set(rest: &str, term: &str) -> Result<Vec<String>, Error> {
    let inner =
        rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(|| Error::NotASet(term.to_owned()))?;
    inner.split(',').map(|v| check_value(v.trim(), term)).collect()
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value` terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// `allowed` lists the field paths this resource can be selected on.
    pub fn parse(s: &str, allowed: &[&str]) -> Result<FieldSelector, Error> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for raw in s.split(',') {
            let term = raw.trim();
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, true, v)
            } else {
                return Err(Error::InvalidFieldTerm(term.to_owned()));
            };
            let path = path.trim();
            if !allowed.contains(&path) {
                return Err(Error::UnsupportedField { path: path.to_owned(), supported: allowed.join(", ") });
            }
            terms.push((path.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| (field_string(object, path) == *value) == *equal)
    }

    /// Matches against field values looked up by `get` ("" for a missing field).
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> &'a str) -> bool {
        self.0.iter().all(|(path, equal, value)| (get(path) == value) == *equal)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The same selector with each field path renamed by `rename` (a version's names to the
    /// stored ones).
    pub fn renamed(self, rename: impl Fn(&str) -> String) -> FieldSelector {
        FieldSelector(self.0.into_iter().map(|(p, eq, v)| (rename(&p), eq, v)).collect())
    }
}

/// The value a field selector compares for `path` (dotted): strings as they are, other
/// values as JSON, "" when the field is missing or null.
pub fn field_string(object: &Value, path: &str) -> String {
    let mut cur = Some(object);
    for part in path.split('.') {
        cur = cur.and_then(|c| c.get(part));
    }
    match cur {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn label_selectors_match_like_kubernetes() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        let ok = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
        assert!(ok("app=web"));
        assert!(ok("app==web,tier"));
        assert!(ok("app in (web, api),!legacy"));
        assert!(!ok("app notin (web)"));
        assert!(!ok("tier!=front"));
        assert!(ok(""));
    }

    #[test]
    fn bad_label_selectors_name_the_term() {
        let e = LabelSelector::parse("app=we b").unwrap_err().to_string();
        assert!(e.contains("\"app=we b\""), "{e}");
        assert!(LabelSelector::parse("app in (a").unwrap_err().to_string().contains("unbalanced"));
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_selectors_only_accept_supported_fields() {
        let f = FieldSelector::parse("metadata.name=a", &["metadata.name"]).unwrap();
        assert!(f.matches(&json!({"metadata": {"name": "a"}})));
        assert!(!f.matches(&json!({"metadata": {"name": "b"}})));
        let e = FieldSelector::parse("spec.x=a", &["metadata.name"]).unwrap_err().to_string();
        assert!(e.contains("field label not supported: spec.x"), "{e}");
    }
}
