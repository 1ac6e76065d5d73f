//! Leases (`coordination.k8s.io/v1`), as leader election uses them.

use crate::harness::Server;

/// The Python client creates and renews a Lease; MicroTimes keep their microseconds;
/// `kubectl get leases` lists it with its holder.
#[test]
fn python_client_creates_and_renews_a_lease() {
    let s = Server::start();
    let (ok, out, err) = s.python(
        r#"
import sys, datetime
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
api = client.CoordinationV1Api()
t = datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.timezone.utc)
lease = client.V1Lease(metadata=client.V1ObjectMeta(name="leader"),
    spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15, acquire_time=t, renew_time=t, lease_transitions=0))
created = api.create_namespaced_lease("default", lease)
print(created.spec.renew_time.isoformat(), created.spec.lease_transitions)
created.spec.renew_time = t + datetime.timedelta(microseconds=1)
created.spec.holder_identity = "b"
renewed = api.replace_namespaced_lease("leader", "default", created)
print(renewed.spec.renew_time.isoformat(), renewed.spec.holder_identity)
try:
    api.create_namespaced_lease("default", client.V1Lease(metadata=client.V1ObjectMeta(name="bad"),
        spec=client.V1LeaseSpec(lease_duration_seconds=0)))
except client.ApiException as e:
    print(e.status, __import__("json").loads(e.body)["message"])
try:
    api.create_namespaced_lease("default", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "typed"}, "spec": {"leaseDurationSeconds": "15"}})
except client.ApiException as e:
    print(e.status, __import__("json").loads(e.body)["message"])
"#,
    );
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2026-01-02T03:04:05.123456+00:00 0");
    assert_eq!(lines[1], "2026-01-02T03:04:05.123457+00:00 b");
    assert_eq!(
        lines[2],
        r#"422 Lease.coordination.k8s.io "bad" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"#
    );
    assert_eq!(
        lines[3],
        r#"400 Lease in version "v1" cannot be handled as a Lease: json: cannot unmarshal string into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32"#
    );
    let k = s.kubectl();
    let out = k.ok(&["get", "leases"]);
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "HOLDER", "AGE"], "{out}");
    assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["leader", "b"])), "{out}");
    assert_eq!(k.ok(&["get", "lease", "leader", "-o", "jsonpath={.spec.acquireTime}"]), "2026-01-02T03:04:05.123456Z");
    assert!(k.ok(&["api-resources", "--api-group=coordination.k8s.io"]).contains("leases"));
}
