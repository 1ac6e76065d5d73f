#!/usr/bin/env python3
"""Writes src/apiserver/openapi/kube-definitions.json: the published Kubernetes OpenAPI v2
definitions of the built-in kinds the API server serves, and everything they refer to.

The source is the definitions file that the `kubernetes-validate` package ships for one
Kubernetes release (generated from that release's api/openapi-spec/swagger.json). It keeps
the extensions the Kubernetes definitions carry (x-kubernetes-group-version-kind,
-patch-strategy, -patch-merge-key, -list-type, -list-map-keys, -map-type, -unions); this
script only undoes its JSON-Schema spelling, so the output reads as swagger 2.0 again:
  - "type": ["string", "null"]           -> "type": "string"
  - "$ref": "#/$defs/X"                  -> "$ref": "#/definitions/X"
  - the enum it adds to apiVersion/kind  -> removed
  - IntOrString, Quantity as oneOf       -> the string forms the swagger document gives.

Run it again when the served kinds change, or to move to another release:
    .venv/bin/python scripts/gen-kube-definitions.py [VERSION]
"""
import json
import pathlib
import sys

import kubernetes_validate

VERSION = sys.argv[1] if len(sys.argv) > 1 else "1.32.0"
ROOTS = [
    "io.k8s.api.core.v1.Namespace", "io.k8s.api.core.v1.NamespaceList",
    "io.k8s.api.core.v1.ConfigMap", "io.k8s.api.core.v1.ConfigMapList",
    "io.k8s.api.core.v1.Secret", "io.k8s.api.core.v1.SecretList",
    "io.k8s.api.core.v1.Event", "io.k8s.api.core.v1.EventList",
    "io.k8s.api.events.v1.Event", "io.k8s.api.events.v1.EventList",
    "io.k8s.api.coordination.v1.Lease", "io.k8s.api.coordination.v1.LeaseList",
    "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
    "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
    "io.k8s.api.authentication.v1.SelfSubjectReview",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup", "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList",
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList", "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status", "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Condition", "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.apimachinery.pkg.version.Info",
]
STRING_FORMS = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
}


def source():
    base = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return json.loads((base / f"v{VERSION}-local" / "_definitions.json").read_text())["$defs"]


def swagger(node, in_gvk=False):
    if isinstance(node, list):
        return [swagger(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            out[key] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/$defs/", "#/definitions/")
        elif key == "properties":
            out[key] = {}
            for name, prop in value.items():
                prop = swagger(prop)
                if in_gvk and name in ("apiVersion", "kind"):
                    prop.pop("enum", None)
                out[key][name] = prop
        else:
            out[key] = swagger(value)
    return out


def refs(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[1])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def main():
    defs = source()
    wanted, todo = {}, list(ROOTS)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        if name in STRING_FORMS:
            wanted[name] = dict(STRING_FORMS[name], description=defs[name].get("description", ""))
            continue
        schema = swagger(defs[name], "x-kubernetes-group-version-kind" in defs[name])
        wanted[name] = schema
        found = set()
        refs(schema, found)
        todo.extend(found)
    out = pathlib.Path(__file__).resolve().parent.parent / "src/apiserver/openapi/kube-definitions.json"
    doc = {"source": f"Kubernetes v{VERSION} OpenAPI v2 definitions", "definitions": dict(sorted(wanted.items()))}
    out.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    print(f"{out}: {len(wanted)} definitions")


if __name__ == "__main__":
    main()
