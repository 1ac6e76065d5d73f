//! What a write changed, field by field: the two versions compared only where the write
//! could have changed something, and, for status patches applied in place, what they replaced.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{FieldSet, Scope, field, tracks_metadata};

/// What a write changed: fields set or given another value, and fields removed.
#[derive(Debug, Default)]
pub struct Changes {
    pub changed: FieldSet,
    pub removed: FieldSet,
}

/// Where a write may have changed an object, so that only there are the versions compared.
#[derive(Debug, Default)]
pub struct Touched {
    /// The whole subtree at this node.
    all: bool,
    children: BTreeMap<String, Touched>,
}

impl Touched {
    /// Anywhere (a create or a PUT).
    pub fn everywhere() -> Touched {
        Touched { all: true, children: BTreeMap::new() }
    }

    /// Adds the subtree at `path` (keys from the object's root).
    pub fn add(&mut self, path: &[String]) {
        let mut node = self;
        for k in path {
            if node.all {
                return;
            }
            node = node.children.entry(k.clone()).or_default();
        }
        node.all = true;
        node.children.clear();
    }

    /// The paths a JSON merge patch writes: its leaves (maps are descended into).
    pub fn of_merge_patch(patch: &Value) -> Touched {
        fn walk(t: &mut Touched, v: &Value, path: &mut Vec<String>) {
            match v {
                Value::Object(m) if !path.is_empty() || !m.is_empty() => {
                    for (k, c) in m {
                        path.push(k.clone());
                        walk(t, c, path);
                        path.pop();
                    }
                }
                _ => t.add(path),
            }
        }
        let mut t = Touched::default();
        match patch {
            Value::Object(_) => walk(&mut t, patch, &mut Vec::new()),
            _ => t.all = true,
        }
        t
    }

    /// The paths a JSON patch writes: every operation's `path`, and the `from` of a `move`.
    pub fn of_json_patch(patch: &json_patch::Patch) -> Touched {
        use json_patch::PatchOperation;
        let mut t = Touched::default();
        for op in &patch.0 {
            let from = match op {
                PatchOperation::Test(_) => continue,
                PatchOperation::Move(m) => Some(&m.from),
                _ => None,
            };
            for pointer in std::iter::once(op.path()).chain(from.map(|f| &**f)) {
                let segments: Vec<String> = pointer.tokens().map(|t| t.decoded().into_owned()).collect();
                t.add(&segments);
            }
        }
        t
    }

    pub(super) fn of_set(set: &FieldSet) -> Touched {
        let mut t = Touched::default();
        for path in set.paths() {
            // Only `f:` paths are produced from objects; a key's name is what follows.
            let keys: Vec<String> = path.iter().map(|k| k.strip_prefix("f:").unwrap_or(k).to_string()).collect();
            t.add(&keys);
        }
        t
    }
}

/// Compares the two versions of an object where `touched` says a write may have changed it,
/// within `scope`.
pub fn changes(old: &Value, new: &Value, touched: &Touched, scope: Scope) -> Changes {
    let mut out = Changes::default();
    let mut path = Vec::new();
    let top_keys = keys_to_visit(Some(old), Some(new), touched);
    for k in top_keys.into_iter().filter(|k| scope.tracks(k)) {
        let sub = child_of(touched, &k);
        let (o, n) = (old.get(&k), new.get(&k));
        path.push(field(&k));
        if k == "metadata" && sub.all {
            for mk in keys_to_visit(o, n, sub).into_iter().filter(|mk| tracks_metadata(mk)) {
                path.push(field(&mk));
                compare(o.and_then(|v| v.get(&mk)), n.and_then(|v| v.get(&mk)), &mut path, &mut out);
                path.pop();
            }
        } else if k == "metadata" {
            for (mk, msub) in sub.children.iter().filter(|(mk, _)| tracks_metadata(mk)) {
                path.push(field(mk));
                compare_touched(o.and_then(|v| v.get(mk)), n.and_then(|v| v.get(mk)), msub, &mut path, &mut out);
                path.pop();
            }
        } else {
            compare_touched(o, n, sub, &mut path, &mut out);
        }
        path.pop();
    }
    out
}

static EVERYWHERE: Touched = Touched { all: true, children: BTreeMap::new() };

fn child_of<'a>(t: &'a Touched, key: &str) -> &'a Touched {
    if t.all { &EVERYWHERE } else { t.children.get(key).unwrap_or(&EVERYWHERE) }
}

/// The keys to compare under a node: all of both versions' when the whole subtree may have
/// changed, else the touched ones.
fn keys_to_visit(old: Option<&Value>, new: Option<&Value>, t: &Touched) -> Vec<String> {
    if !t.all {
        return t.children.keys().cloned().collect();
    }
    let mut keys: Vec<String> = old.and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k.clone()).collect();
    for k in new.and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k) {
        if old.and_then(|o| o.get(k)).is_none() {
            keys.push(k.clone());
        }
    }
    keys
}

fn compare_touched(old: Option<&Value>, new: Option<&Value>, t: &Touched, path: &mut Vec<String>, out: &mut Changes) {
    let map_or_absent = |v: Option<&Value>| v.is_none_or(Value::is_object);
    if t.all || !(map_or_absent(old) && map_or_absent(new)) {
        // A write inside an atomic value (a list) changes the value as a whole.
        return compare(old, new, path, out);
    }
    for (k, sub) in &t.children {
        let (o, n) = (old.and_then(|v| v.get(k)), new.and_then(|v| v.get(k)));
        if o.is_none() && n.is_none() {
            continue;
        }
        path.push(field(k));
        compare_touched(o, n, sub, path, out);
        path.pop();
    }
}

fn granular(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Object(m)) if !m.is_empty())
}

fn compare(old: Option<&Value>, new: Option<&Value>, path: &mut Vec<String>, out: &mut Changes) {
    if granular(old) && granular(new) {
        let (o, n) = (old.and_then(Value::as_object), new.and_then(Value::as_object));
        for (k, ov) in o.into_iter().flatten() {
            path.push(field(k));
            compare(Some(ov), n.and_then(|n| n.get(k)), path, out);
            path.pop();
        }
        for (k, nv) in n.into_iter().flatten().filter(|(k, _)| o.is_none_or(|o| !o.contains_key(*k))) {
            path.push(field(k));
            compare(None, Some(nv), path, out);
            path.pop();
        }
        return;
    }
    if old == new {
        return;
    }
    match old {
        Some(o) if granular(old) => out.removed.node_mut(path).insert_leaves(o),
        Some(_) if new.is_none() || granular(new) => out.removed.insert(path),
        _ => {}
    }
    if let Some(n) = new {
        out.changed.node_mut(path).insert_leaves(n);
    }
}

/// What a status write applied in place to the one parsed copy of the stored object replaced,
/// so that it is accounted as [`changes`] accounts a write from both versions, without a second
/// copy of the object. For the `/status` subresource ([`Scope::Status`]) only.
pub enum Before {
    /// A merge patch: the values it replaced or removed, moved out of the object to the same
    /// paths (the only places where the versions can differ), and the paths it wrote. The
    /// patch must write somewhere below the root (`{}` touches everything and displaces nothing).
    Displaced { old: Value, touched: Touched },
    /// A JSON patch: the old values at the places [`changes`] compares as a whole.
    Saved(Vec<SavedPoint>),
}

/// A place [`changes`] compares whole (a touched leaf, or a list a write went into), and what
/// was there.
pub struct SavedPoint {
    keys: Vec<String>,
    old: Saved,
}

enum Saved {
    /// The value as it was (`None`: absent).
    Whole(Option<Value>),
    /// A list that only `replace` operations went into: the elements they replaced, as they
    /// were (outermost pointers), which tell whether the list changed. A Workflow's status
    /// patch replaces a few of its thousands of tasks: only those are kept.
    Replaced(Vec<(String, Value)>),
}

impl Before {
    /// Before a JSON patch of status is applied to `doc`.
    pub fn of_json_patch(doc: &Value, patch: &json_patch::Patch) -> Before {
        use json_patch::PatchOperation;
        let touched = Touched::of_json_patch(patch);
        let mut writes = Vec::new();
        for op in &patch.0 {
            let from = match op {
                PatchOperation::Test(_) => continue,
                PatchOperation::Move(m) => Some(&m.from),
                _ => None,
            };
            let replace = matches!(op, PatchOperation::Replace(_));
            for pointer in std::iter::once(op.path()).chain(from.map(|f| &**f)) {
                let keys: Vec<String> = pointer.tokens().map(|t| t.decoded().into_owned()).collect();
                writes.push(PatchWrite { keys, pointer: pointer.as_str(), replace });
            }
        }
        let mut points = Vec::new();
        let mut keys = Vec::new();
        let top = child_of(&touched, "status");
        if touched.all || touched.children.contains_key("status") {
            keys.push("status".to_string());
            save_points(doc, doc.get("status"), top, &mut keys, &writes, &mut points);
        }
        Before::Saved(points)
    }

    /// What the write changed, `new` being the object it made.
    pub fn changes(&self, new: &Value) -> Changes {
        let points = match self {
            Before::Displaced { old, touched } => return changes(old, new, touched, Scope::Status),
            Before::Saved(points) => points,
        };
        let mut out = Changes::default();
        let mut path = Vec::new();
        for p in points {
            let now = p.keys.iter().try_fold(new, |v, k| v.get(k.as_str()));
            path.clear();
            path.extend(p.keys.iter().map(|k| field(k)));
            match &p.old {
                Saved::Whole(old) => compare(old.as_ref(), now, &mut path, &mut out),
                // A list whose replaced elements are as they were is as it was; otherwise it
                // changed as a whole (both versions lists: nothing removed, see `compare`).
                Saved::Replaced(elements) => {
                    if let Some(n) = now
                        && elements.iter().any(|(pointer, old)| new.pointer(pointer) != Some(old))
                    {
                        out.changed.node_mut(&path).insert_leaves(n);
                    }
                }
            }
        }
        out
    }
}

/// A pointer a JSON patch operation writes.
struct PatchWrite<'a> {
    keys: Vec<String>,
    pointer: &'a str,
    replace: bool,
}

/// Finds, as [`compare_touched`] will, the places compared whole, and keeps their old values.
fn save_points(
    doc: &Value,
    old: Option<&Value>,
    t: &Touched,
    keys: &mut Vec<String>,
    writes: &[PatchWrite],
    points: &mut Vec<SavedPoint>,
) {
    // Operations only below a node that is not touched whole leave its type as it is, so the
    // old version alone tells where `compare_touched` stops descending.
    if t.all || !old.is_none_or(Value::is_object) {
        points.push(SavedPoint { keys: keys.clone(), old: saved(doc, old, keys, writes) });
        return;
    }
    for (k, sub) in &t.children {
        keys.push(k.clone());
        save_points(doc, old.and_then(|v| v.get(k.as_str())), sub, keys, writes, points);
        keys.pop();
    }
}

fn saved(doc: &Value, old: Option<&Value>, keys: &[String], writes: &[PatchWrite]) -> Saved {
    if let Some(Value::Array(_)) = old {
        let mut inside: Vec<&PatchWrite> = writes.iter().filter(|w| w.keys.starts_with(keys)).collect();
        if inside.iter().all(|w| w.replace && w.keys.len() > keys.len()) {
            // Sorted, a pointer comes right before those below it.
            inside.sort_by(|a, b| a.keys.cmp(&b.keys));
            let mut elements: Vec<(String, Value)> = Vec::new();
            let mut last: Option<&[String]> = None;
            for w in inside {
                if last.is_some_and(|l| w.keys.starts_with(l)) {
                    continue;
                }
                // A pointer this lookup does not resolve fails the patch; keep the list whole
                // rather than rely on that.
                let Some(v) = doc.pointer(w.pointer) else { return Saved::Whole(old.cloned()) };
                elements.push((w.pointer.to_string(), v.clone()));
                last = Some(&w.keys);
            }
            return Saved::Replaced(elements);
        }
    }
    Saved::Whole(old.cloned())
}
