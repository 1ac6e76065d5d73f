//! Server-side apply: field ownership, conflicts and the merge, over arbitrary live objects
//! and configurations, by two managers in turn.
#![no_main]
use a2a::apiserver::managed::{self, ManagedFields, Scope};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

// The input is a flags byte (bit 0: a status request, bit 1: force), then the live object,
// the first manager's configuration and the second's, separated by NUL bytes.
fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let (status, force) = (flags & 1 != 0, flags & 2 != 0);
    let mut parts = rest.splitn(3, |b| *b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (live, first, second) = (next(), next(), next());
    let (Ok(live), Ok(first), Ok(second)) = (
        serde_json::from_slice::<Value>(live),
        serde_json::from_slice::<Value>(first),
        serde_json::from_slice::<Value>(second),
    ) else {
        return;
    };
    let scope = Scope::of(true, status);
    let mut fields = ManagedFields::of_stored(&live);
    let _ = ManagedFields::parse(&live);
    let _ = managed::fields_of(&live, scope);
    let mut first = first;
    managed::strip_nulls(&mut first);
    let Ok(merged) = fields.apply(&live, &first, "a", "a2a.dev/v1alpha1", scope, false) else { return };
    // Applying the same configuration again by the same manager changes nothing.
    let mut again = fields.clone();
    let twice = again.apply(&merged, &first, "a", "a2a.dev/v1alpha1", scope, false).expect("no conflict with itself");
    assert_eq!(twice, merged, "a second identical apply changed the object");
    let mut second = second;
    managed::strip_nulls(&mut second);
    let _ = fields.apply(&merged, &second, "b", "a2a.dev/v1alpha1", scope, force);
    let mut out = merged;
    fields.write(&mut out);
});
