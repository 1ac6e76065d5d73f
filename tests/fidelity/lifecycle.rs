//! create, apply --server-side, replace, edit, label, annotate, patch (merge and JSON) and
//! diff of the a2a kinds and of ConfigMaps, Secrets and Namespaces, as the kube-apiserver
//! answers them, and `describe` of an Agent with an Event written through events.k8s.io.
//! (Strategic merge and client-side apply of core kinds are checked apart.)

use crate::harness::Server;
use crate::objects::{agent, eventually, file, one_of_each, stream};

/// `kubectl create -f`: every kind is created (`KIND/NAME created`) and a second create is
/// `AlreadyExists`, worded as the kube-apiserver words it (`configmaps "settings" already
/// exists`).
#[test]
fn create_then_create_again_is_already_exists() {
    let s = Server::start();
    for (i, k) in s.kubectls().into_iter().enumerate() {
        let ns = format!("create{i}");
        let all = one_of_each(&ns);
        let path =
            file(&s, "all.yaml", &stream(&all.iter().map(|(_, _, m)| m.replace("team-a", &ns)).collect::<Vec<_>>()));
        // The namespace first (the stream's objects go into it), then the rest.
        k.ok_stdin(&["create", "-f", "-"], &crate::objects::namespace(&ns));
        let rest: Vec<String> =
            all.iter().filter(|(kind, _, _)| *kind != "namespace").map(|(_, _, m)| m.clone()).collect();
        let path_rest = file(&s, "rest.yaml", &stream(&rest));
        let out = k.ok(&["create", "-f", &path_rest]);
        for line in [
            "agent.a2a.dev/echo created",
            "workflow.a2a.dev/flow created",
            "configmap/settings created",
            "secret/token created",
        ] {
            assert!(out.contains(line), "{}: {line} missing:\n{out}", k.bin.display());
        }
        let (ok, _, err) = k.run(&["create", "-f", &path]);
        assert!(!ok, "a second create succeeded");
        for (plural, name) in [
            ("agents.a2a.dev", "echo"),
            ("workflows.a2a.dev", "flow"),
            ("configmaps", "settings"),
            ("secrets", "token"),
            ("namespaces", &ns),
        ] {
            let want = format!("{plural} \"{name}\" already exists");
            assert!(err.contains(&want), "{}: {want} missing:\n{err}", k.bin.display());
        }
        assert!(err.contains("resourcebudgets.a2a.dev \"team\" already exists"), "{err}");
        k.ok(&["delete", "resourcebudget", "team"]);
    }
}

/// `kubectl apply --server-side` creates every kind, a changed manifest updates it, and
/// `--dry-run=server` answers the change without writing it.
#[test]
fn server_side_apply_creates_and_updates_every_kind() {
    let s = Server::start();
    for k in s.kubectls() {
        let first = stream(&one_of_each("default").into_iter().map(|(_, _, m)| m).collect::<Vec<_>>());
        let out = k.ok_stdin(&["apply", "--server-side", "-f", "-"], &first);
        for line in [
            "agent.a2a.dev/echo serverside-applied",
            "workflow.a2a.dev/flow serverside-applied",
            "resourcebudget.a2a.dev/team serverside-applied",
            "configmap/settings serverside-applied",
            "secret/token serverside-applied",
            "namespace/team-a serverside-applied",
        ] {
            assert!(out.contains(line), "{line} missing:\n{out}");
        }
        let changed = first
            .replace("url: http://127.0.0.1:9/", "url: http://127.0.0.1:10/")
            .replace("a: \"1\"", "a: \"2\"")
            .replace("memory: 1Gi", "memory: 2Gi");
        let out = k.ok_stdin(&["apply", "--server-side", "--dry-run=server", "-f", "-"], &changed);
        assert!(out.contains("agent.a2a.dev/echo serverside-applied (server dry run)"), "{out}");
        assert_eq!(k.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.a}"]), "1", "the dry run wrote");
        k.ok_stdin(&["apply", "--server-side", "-f", "-"], &changed);
        assert_eq!(k.ok(&["get", "ag", "echo", "-o", "jsonpath={.spec.url}"]), "http://127.0.0.1:10/");
        assert_eq!(k.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.a}"]), "2");
        assert_eq!(k.ok(&["get", "rb", "team", "-o", "jsonpath={.spec.limits.memory}"]), "2Gi");
        // The manager is kubectl's, as an Apply.
        let managers = k.ok(&[
            "get",
            "ag",
            "echo",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}/{.metadata.managedFields[*].operation}",
        ]);
        assert_eq!(managers, "kubectl/Apply", "{managers}");
        k.ok_stdin(&["delete", "-f", "-"], &first);
        eventually(&k, &["get", "ns", "team-a"], "team-a gone before the next kubectl", |ok, _| !ok);
    }
}

/// `kubectl replace -f` of what `get -o yaml` printed, changed: the object takes it, and its
/// `resourceVersion` and `generation` move on. A replace carrying an older resourceVersion
/// is the kube-apiserver's 409: "the object has been modified; please apply your changes to
/// the latest version and try again".
#[test]
fn replace_updates_and_a_stale_resource_version_conflicts() {
    let s = Server::start();
    for k in s.kubectls() {
        for (kind, name, manifest) in one_of_each("default") {
            if kind == "namespace" {
                continue;
            }
            k.ok_stdin(&["create", "-f", "-"], &manifest);
            let live = k.ok(&["get", kind, name, "-o", "yaml"]);
            let (from, to) = match kind {
                "agent" => ("url: http://127.0.0.1:9/", "url: http://127.0.0.1:10/"),
                "workflow" => ("message: hello", "message: goodbye"),
                "resourcebudget" => ("memory: 1Gi", "memory: 2Gi"),
                "configmap" => ("a: \"1\"", "a: \"2\""),
                _ => ("type: Opaque", "type: Opaque\nimmutable: false"),
            };
            assert!(live.contains(from), "{kind}: {from} not in\n{live}");
            k.ok_stdin(&["replace", "-f", "-"], &live.replace(from, to));
            let again = k.ok(&["get", kind, name, "-o", "yaml"]);
            assert!(again.contains(to.lines().last().unwrap()), "{kind} not replaced:\n{again}");
            // `live` still carries the version before the replace.
            let (ok, _, err) = k.run_stdin(&["replace", "-f", "-"], &live);
            assert!(!ok, "{kind}: a stale replace was accepted");
            assert!(
                err.contains(
                    "the object has been modified; please apply your changes to the latest version and try again"
                ),
                "{kind}: {err}"
            );
            k.ok(&["delete", kind, name]);
        }
    }
}

/// `kubectl edit` (the editor is a `sed`): the edit is saved as a merge patch, and the spec
/// change bumps `generation` (a custom resource's generation counts spec changes).
#[test]
fn edit_saves_the_change() {
    let s = Server::start();
    for k in s.kubectls() {
        k.ok_stdin(&["create", "-f", "-"], &agent("echo", "default", "app: x"));
        let out = k
            .command(&["edit", "agent", "echo"])
            .env("KUBE_EDITOR", "sed -i -e s#127.0.0.1:9/#127.0.0.1:10/#")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("agent.a2a.dev/echo edited"));
        assert_eq!(
            k.ok(&["get", "ag", "echo", "-o", "jsonpath={.spec.url} {.metadata.generation}"]),
            "http://127.0.0.1:10/ 2"
        );
        // An edit that changes nothing: "Edit cancelled, no changes made."
        let out = k.command(&["edit", "agent", "echo"]).env("KUBE_EDITOR", "true").output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("Edit cancelled, no changes made."), "{out:?}");
        k.ok(&["delete", "agent", "echo"]);
    }
}

/// `kubectl label` and `annotate` on every kind: set, refused without `--overwrite` when the
/// key has a value ("already has a value"), overwritten, removed with `key-`; labels do not
/// bump a custom resource's generation.
#[test]
fn label_and_annotate_every_kind() {
    let s = Server::start();
    for k in s.kubectls() {
        let all = one_of_each("default");
        k.ok_stdin(&["create", "-f", "-"], &stream(&all.iter().map(|(_, _, m)| m.clone()).collect::<Vec<_>>()));
        for (kind, name, _) in &all {
            let target = format!("{kind}/{name}");
            let out = k.ok(&["label", &target, "tier=a"]);
            assert!(out.trim_end().ends_with("labeled"), "{out}");
            let (ok, _, err) = k.run(&["label", &target, "tier=b"]);
            assert!(!ok && err.contains("'tier' already has a value (a), and --overwrite is false"), "{target}: {err}");
            k.ok(&["label", "--overwrite", &target, "tier=b"]);
            k.ok(&["annotate", &target, "note=hi"]);
            let (ok, _, err) = k.run(&["annotate", &target, "note=ho"]);
            assert!(!ok && err.contains("'note' already has a value (hi)"), "{target}: {err}");
            assert_eq!(
                k.ok(&["get", &target, "-o", "jsonpath={.metadata.labels.tier} {.metadata.annotations.note}"]),
                "b hi",
                "{target}"
            );
            k.ok(&["label", &target, "tier-"]);
            k.ok(&["annotate", &target, "note-"]);
            assert_eq!(
                k.ok(&["get", &target, "-o", "jsonpath={.metadata.labels.tier}{.metadata.annotations.note}"]),
                ""
            );
            if ["agent", "workflow", "resourcebudget"].contains(kind) {
                assert_eq!(k.ok(&["get", &target, "-o", "jsonpath={.metadata.generation}"]), "1", "{target}");
            }
        }
        // Selected by label, across kinds.
        k.ok(&["label", "agent/echo", "configmap/settings", "pick=yes"]);
        let out = k.ok(&["get", "ag,cm,secret", "-l", "pick=yes", "-o", "name"]);
        assert_eq!(out.lines().collect::<Vec<_>>(), ["agent.a2a.dev/echo", "configmap/settings"], "{out}");
        k.ok_stdin(&["delete", "-f", "-"], &stream(&all.iter().map(|(_, _, m)| m.clone()).collect::<Vec<_>>()));
        eventually(&k, &["get", "ns", "team-a"], "team-a gone before the next kubectl", |ok, _| !ok);
    }
}

/// `kubectl patch --type merge` and `--type json` on every kind; a JSON patch whose `test`
/// fails, or whose path is missing, is refused and changes nothing.
#[test]
fn patch_merge_and_json_on_every_kind() {
    let s = Server::start();
    for k in s.kubectls() {
        let all = one_of_each("default");
        k.ok_stdin(&["create", "-f", "-"], &stream(&all.iter().map(|(_, _, m)| m.clone()).collect::<Vec<_>>()));
        for (kind, name, _) in &all {
            let target = format!("{kind}/{name}");
            let out =
                k.ok(&["patch", &target, "--type", "merge", "-p", r#"{"metadata":{"labels":{"patched":"merge"}}}"#]);
            assert!(out.contains("patched"), "{out}");
            let out = k.ok(&[
                "patch",
                &target,
                "--type",
                "json",
                "-p",
                r#"[{"op":"test","path":"/metadata/labels/patched","value":"merge"},{"op":"replace","path":"/metadata/labels/patched","value":"json"}]"#,
            ]);
            assert!(out.contains("patched"), "{out}");
            assert_eq!(k.ok(&["get", &target, "-o", "jsonpath={.metadata.labels.patched}"]), "json", "{target}");
            let (ok, _, err) = k.run(&[
                "patch",
                &target,
                "--type",
                "json",
                "-p",
                r#"[{"op":"test","path":"/metadata/labels/patched","value":"merge"},{"op":"remove","path":"/metadata/labels/patched"}]"#,
            ]);
            assert!(!ok, "{target}: a patch whose test fails was applied");
            // The kube-apiserver's 422 says "the server rejected our request due to an error in
            // our request"; a2a's names the operation that failed.
            assert!(err.contains("The request is invalid"), "{target}: {err}");
            let (ok, _, err) = k.run(&[
                "patch",
                &target,
                "--type",
                "json",
                "-p",
                r#"[{"op":"remove","path":"/metadata/labels/absent"}]"#,
            ]);
            assert!(!ok && err.contains("The request is invalid"), "{target}: {err}");
            assert_eq!(k.ok(&["get", &target, "-o", "jsonpath={.metadata.labels.patched}"]), "json", "{target}");
        }
        // Spec changes through both types.
        k.ok(&["patch", "ag", "echo", "--type", "merge", "-p", r#"{"spec":{"replicas":2}}"#]);
        k.ok(&[
            "patch",
            "ag",
            "echo",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
        ]);
        k.ok(&["patch", "cm", "settings", "--type", "json", "-p", r#"[{"op":"add","path":"/data/b","value":"2"}]"#]);
        assert_eq!(k.ok(&["get", "ag", "echo", "-o", "jsonpath={.spec.replicas} {.metadata.generation}"]), "3 3");
        assert_eq!(k.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.b}"]), "2");
        // A patch that breaks the schema is refused: 422 naming the field.
        let (ok, _, err) = k.run(&["patch", "ag", "echo", "--type", "merge", "-p", r#"{"spec":{"replicas":"many"}}"#]);
        assert!(!ok && err.contains("spec.replicas"), "{err}");
        k.ok_stdin(&["delete", "-f", "-"], &stream(&all.iter().map(|(_, _, m)| m.clone()).collect::<Vec<_>>()));
        eventually(&k, &["get", "ns", "team-a"], "team-a gone before the next kubectl", |ok, _| !ok);
    }
}

/// `kubectl diff --server-side`: nothing to show for what was applied (exit 0), the change
/// for a changed manifest (exit 1, the live and the merged object), and a new object as
/// wholly added.
#[test]
fn server_side_diff_shows_changes_only() {
    let s = Server::start();
    for k in s.kubectls() {
        let objects = stream(&one_of_each("default").into_iter().map(|(_, _, m)| m).collect::<Vec<_>>());
        k.ok_stdin(&["apply", "--server-side", "-f", "-"], &objects);
        let (ok, out, err) = k.run_stdin(&["diff", "--server-side", "-f", "-"], &objects);
        assert!(ok && out.is_empty(), "a diff of what was applied:\n{out}{err}");
        let changed = objects.replace("a: \"1\"", "a: \"2\"");
        // Exit 1 with nothing on stderr: differences found (exit > 1 is an error).
        let (ok, text, err) = k.run_stdin(&["diff", "--server-side", "-f", "-"], &changed);
        assert!(!ok && err.is_empty(), "{text}{err}");
        assert!(text.contains("-  a: \"1\"") && text.contains("+  a: \"2\""), "{text}");
        assert_eq!(text.matches("diff -u -N").count(), 1, "only the ConfigMap differs:\n{text}");
        let (ok, out, _) = k.run_stdin(&["diff", "--server-side", "-f", "-"], &agent("new", "default", ""));
        assert!(!ok && out.contains("+  name: new"), "{out}");
        k.ok_stdin(&["delete", "-f", "-"], &objects);
        eventually(&k, &["get", "ns", "team-a"], "team-a gone before the next kubectl", |ok, _| !ok);
    }
}

/// `kubectl create --dry-run=server` answers the object as it would be stored (with a uid
/// and a creationTimestamp, as the kube-apiserver fills them) and stores nothing.
#[test]
fn create_dry_run_server_stores_nothing() {
    let s = Server::start();
    for k in s.kubectls() {
        for (kind, name, manifest) in one_of_each("default") {
            let out = k.ok_stdin(&["create", "--dry-run=server", "-o", "yaml", "-f", "-"], &manifest);
            assert!(out.contains("uid: ") && out.contains("creationTimestamp: "), "{kind}:\n{out}");
            let (ok, _, err) = k.run(&["get", kind, name]);
            assert!(!ok && err.contains("NotFound"), "{kind} was stored: {err}");
        }
    }
}

/// `kubectl replace --force` deletes the object and creates it again: a new uid, the new
/// content.
#[test]
fn replace_force_recreates_the_object() {
    let s = Server::start();
    for k in s.kubectls() {
        k.ok_stdin(&["create", "-f", "-"], &agent("echo", "default", "app: x"));
        let uid = k.ok(&["get", "ag", "echo", "-o", "jsonpath={.metadata.uid}"]);
        let out = k.ok_stdin(&["replace", "--force", "-f", "-"], &agent("echo", "default", "app: z"));
        assert!(out.contains("agent.a2a.dev \"echo\" deleted") && out.contains("agent.a2a.dev/echo replaced"), "{out}");
        assert_ne!(k.ok(&["get", "ag", "echo", "-o", "jsonpath={.metadata.uid}"]), uid);
        assert_eq!(k.ok(&["get", "ag", "echo", "-o", "jsonpath={.metadata.labels.app}"]), "z");
        k.ok(&["delete", "ag", "echo"]);
    }
}

/// Client-side `kubectl apply` of the a2a kinds (JSON merge patches computed from the
/// `last-applied-configuration` annotation): created, then a changed file updates the
/// object and a field dropped from the file is removed, while a field set by someone else
/// stays; a second apply of the same file is "unchanged".
#[test]
fn client_side_apply_of_a2a_kinds() {
    let s = Server::start();
    for k in s.kubectls() {
        let first = stream(&[
            agent("echo", "default", "app: x").replace("spec:\n", "spec:\n  replicas: 2\n"),
            crate::objects::workflow("flow", "default"),
            crate::objects::budget("team"),
        ]);
        let out = k.ok_stdin(&["apply", "-f", "-"], &first);
        assert!(
            out.contains("agent.a2a.dev/echo created") && out.contains("resourcebudget.a2a.dev/team created"),
            "{out}"
        );
        let last = k.ok(&[
            "get",
            "ag",
            "echo",
            "-o",
            "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
        ]);
        assert!(last.contains("\"replicas\":2"), "{last}");
        k.ok(&["annotate", "ag", "echo", "owner=someone"]);
        let out = k.ok_stdin(&["apply", "-f", "-"], &first);
        assert!(out.lines().all(|l| l.ends_with("unchanged")), "{out}");
        let second = first.replace("  replicas: 2\n", "").replace("message: hello", "message: goodbye");
        let out = k.ok_stdin(&["apply", "-f", "-"], &second);
        assert!(
            out.contains("agent.a2a.dev/echo configured") && out.contains("workflow.a2a.dev/flow configured"),
            "{out}"
        );
        assert_eq!(
            k.ok(&["get", "ag", "echo", "-o", "jsonpath={.spec.replicas}/{.metadata.annotations.owner}"]),
            "/someone"
        );
        assert_eq!(k.ok(&["get", "wf", "flow", "-o", "jsonpath={.spec.tasks[0].message}"]), "goodbye");
        k.ok_stdin(&["delete", "-f", "-"], &second);
    }
}

/// `kubectl describe` of an Agent lists an Event written through `events.k8s.io/v1`, as
/// kube-runtime's Recorder writes them: describe reads core Events (by `involvedObject`), and
/// the two Events APIs are one store, as in the kube-apiserver.
#[test]
fn describe_shows_an_event_written_through_events_k8s_io() {
    let s = Server::start();
    let k = s.kubectl();
    k.ok_stdin(&["create", "-f", "-"], &agent("echo", "default", ""));
    let uid = k.ok(&["get", "agent", "echo", "-o", "jsonpath={.metadata.uid}"]);
    let event = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: echo.recorded\n  namespace: default\n\
         eventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: example.com/recorder\n\
         reportingInstance: recorder-1\naction: Reconcile\nreason: Throttled\ntype: Warning\n\
         note: cpu limit reached\nregarding:\n  apiVersion: a2a.dev/v1alpha1\n  kind: Agent\n  name: echo\n  \
         namespace: default\n  uid: {uid}\n"
    );
    k.ok_stdin(&["create", "-f", "-"], &event);
    let out = k.ok(&["describe", "agent", "echo"]);
    let line = out.lines().find(|l| l.contains("Throttled")).unwrap_or_else(|| panic!("no event:\n{out}"));
    assert!(line.contains("Warning") && line.contains("cpu limit reached"), "{line}");
    // And `kubectl get events` (core) lists it with its message.
    let listed = k.ok(&["get", "events", "--field-selector", "involvedObject.name=echo"]);
    assert!(listed.contains("cpu limit reached"), "{listed}");
}
