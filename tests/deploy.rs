//! The deployment files, read as Kubernetes and Docker Compose would read them: the
//! manifests under `deploy/kubernetes` (a Deployment of several `sluice run` members, its
//! probes, config and secret volumes, the Service, the Prometheus annotations, no password in
//! plain text) and `docker-compose.yml` (two replicators of one pipeline, both scraped).
//! No server is needed.
//!
//! Every check is a function over the files' text, run once against the files in the
//! repository (one test each) and once against copies broken on purpose
//! ([`every_check_fails_on_a_broken_copy`]), so that none of them can pass vacuously.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// File name → text.
type Files = BTreeMap<String, String>;

/// A check over the Kubernetes manifests.
type KubeCheck = fn(&Kube) -> Result<(), String>;

/// A check over docker-compose.yml and deploy/prometheus.yml.
type ComposeCheck = fn(&Compose) -> Result<(), String>;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kube_dir() -> PathBuf {
    repo().join("deploy").join("kubernetes")
}

/// Every `.yaml`/`.yml` file under `dir`, by name.
fn yaml_files(dir: &Path) -> Files {
    let mut files = Files::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files.insert(name, text);
        }
    }
    assert!(!files.is_empty(), "no YAML file in {}", dir.display());
    files
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One parsed YAML document.
struct Doc {
    file: String,
    value: Value,
}

/// The Kubernetes manifests: the files' text and every document in them.
struct Kube {
    files: Files,
    docs: Vec<Doc>,
}

impl Kube {
    fn parse(files: Files) -> Result<Kube, String> {
        let mut docs = Vec::new();
        for (file, text) in &files {
            for de in serde_yaml::Deserializer::from_str(text) {
                let value: Value = serde::Deserialize::deserialize(de)
                    .map_err(|e| format!("{file}: not valid YAML: {e}"))?;
                if value.is_null() {
                    continue; // an empty document (a trailing `---`)
                }
                for key in ["apiVersion", "kind"] {
                    if str_at(&value, &[key]).is_none() {
                        return Err(format!("{file}: a document without `{key}`"));
                    }
                }
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
        Ok(Kube { files, docs })
    }

    fn load() -> Kube {
        Kube::parse(yaml_files(&kube_dir())).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The one document of this kind and name.
    fn object(&self, kind: &str, name: &str) -> Result<&Value, String> {
        let found: Vec<&Doc> = self
            .docs
            .iter()
            .filter(|d| {
                str_at(&d.value, &["kind"]) == Some(kind)
                    && str_at(&d.value, &["metadata", "name"]) == Some(name)
            })
            .collect();
        match found.as_slice() {
            [one] => Ok(&one.value),
            [] => Err(format!("no {kind} named {name:?} under deploy/kubernetes")),
            _ => Err(format!("{kind} {name:?} is defined {} times", found.len())),
        }
    }

    fn deployment(&self) -> Result<&Value, String> {
        self.object("Deployment", "sluice")
    }

    fn pod_spec(&self) -> Result<&Value, String> {
        at(self.deployment()?, &["spec", "template", "spec"])
            .ok_or_else(|| "Deployment sluice has no spec.template.spec".to_string())
    }

    /// The container named `sluice`.
    fn container(&self) -> Result<&Value, String> {
        let containers = seq_at(self.pod_spec()?, &["containers"])
            .ok_or("Deployment sluice has no containers")?;
        containers
            .iter()
            .find(|c| str_at(c, &["name"]) == Some("sluice"))
            .ok_or_else(|| "Deployment sluice has no container named \"sluice\"".to_string())
    }

    /// The pod volume named `name`.
    fn volume(&self, name: &str) -> Result<&Value, String> {
        seq_at(self.pod_spec()?, &["volumes"])
            .unwrap_or(&[])
            .iter()
            .find(|v| str_at(v, &["name"]) == Some(name))
            .ok_or_else(|| format!("the pod has no volume named {name:?}"))
    }

    /// The container's mount of the volume whose definition satisfies `is`, and that
    /// volume: `(mount, volume)`.
    fn mount_of(&self, is: impl Fn(&Value) -> bool) -> Result<Option<(&Value, &Value)>, String> {
        let mounts = seq_at(self.container()?, &["volumeMounts"]).unwrap_or(&[]);
        for m in mounts {
            let name = str_at(m, &["name"]).ok_or("a volumeMount without a name")?;
            let volume = self.volume(name)?;
            if is(volume) {
                return Ok(Some((m, volume)));
            }
        }
        Ok(None)
    }

    /// Where the Secret `sluice-db` is mounted.
    fn secret_mount_path(&self) -> Result<String, String> {
        let (mount, _) = self
            .mount_of(|v| str_at(v, &["secret", "secretName"]) == Some("sluice-db"))?
            .ok_or("no volume of the container mounts the Secret sluice-db (secretName)")?;
        Ok(str_at(mount, &["mountPath"])
            .ok_or("the Secret's volumeMount has no mountPath")?
            .to_string())
    }

    /// The ConfigMap `sluice-config`'s `sluice.toml`, parsed.
    fn config_toml(&self) -> Result<toml::Table, String> {
        let cm = self.object("ConfigMap", "sluice-config")?;
        let text = str_at(cm, &["data", "sluice.toml"])
            .ok_or("ConfigMap sluice-config has no data key \"sluice.toml\"")?;
        text.parse::<toml::Table>()
            .map_err(|e| format!("ConfigMap sluice-config: sluice.toml is not TOML: {e}"))
    }
}

/// docker-compose.yml (merge keys applied) and deploy/prometheus.yml.
struct Compose {
    compose: Value,
    prometheus: Value,
}

impl Compose {
    fn parse(compose: &str, prometheus: &str) -> Result<Compose, String> {
        let mut c: Value = serde_yaml::from_str(compose)
            .map_err(|e| format!("docker-compose.yml: not valid YAML: {e}"))?;
        // `<<: *anchor` as Compose reads it.
        c.apply_merge()
            .map_err(|e| format!("docker-compose.yml: merge keys: {e}"))?;
        let p: Value = serde_yaml::from_str(prometheus)
            .map_err(|e| format!("deploy/prometheus.yml: not valid YAML: {e}"))?;
        Ok(Compose {
            compose: c,
            prometheus: p,
        })
    }

    fn load() -> Compose {
        Compose::parse(&read("docker-compose.yml"), &read("deploy/prometheus.yml"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn service(&self, name: &str) -> Result<&Value, String> {
        at(&self.compose, &["services", name])
            .ok_or_else(|| format!("docker-compose.yml has no service {name:?}"))
    }
}

// ---- Value helpers ---------------------------------------------------------------------

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn seq_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a [Value]> {
    at(v, path).and_then(Value::as_sequence).map(Vec::as_slice)
}

/// A scalar as text (`"http"`, `9731`, `true`), `None` for anything else.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn toml_str<'a>(t: &'a toml::Table, section: &str, key: &str) -> Option<&'a str> {
    t.get(section)?.get(key)?.as_str()
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(msg())
    }
}

// ---- Kubernetes checks -----------------------------------------------------------------

fn deployment_replicas(k: &Kube) -> Result<(), String> {
    let replicas = at(k.deployment()?, &["spec", "replicas"]).and_then(Value::as_u64);
    check(replicas.is_some_and(|r| r >= 2), || {
        format!(
            "Deployment sluice: spec.replicas is {replicas:?}; run at least 2 members so one takes over the tables of another"
        )
    })
}

fn container_port(k: &Kube) -> Result<(), String> {
    let ports = seq_at(k.container()?, &["ports"]).unwrap_or(&[]);
    let http = ports
        .iter()
        .find(|p| str_at(p, &["name"]) == Some("http"))
        .ok_or("the container declares no port named \"http\"")?;
    let number = at(http, &["containerPort"]).and_then(Value::as_u64);
    check(number == Some(9731), || {
        format!("the container port \"http\" is {number:?}, not 9731 (sluice's [http] addr)")
    })
}

/// The probe `probe` of the container is `GET path` on the port named `http`.
fn probe(k: &Kube, probe: &str, path: &str) -> Result<(), String> {
    let get = at(k.container()?, &[probe, "httpGet"])
        .ok_or_else(|| format!("the container's {probe} is not an httpGet probe"))?;
    let got_path = str_at(get, &["path"]);
    check(got_path == Some(path), || {
        format!("{probe}: httpGet path is {got_path:?}, not {path:?}")
    })?;
    let port = at(get, &["port"]).and_then(scalar);
    check(port.as_deref() == Some("http"), || {
        format!("{probe}: httpGet port is {port:?}, not the named port \"http\"")
    })?;
    let period = at(k.container()?, &[probe, "periodSeconds"]).and_then(Value::as_u64);
    check(period.is_some_and(|p| (1..=60).contains(&p)), || {
        format!("{probe}: periodSeconds is {period:?}; give it 1..=60")
    })
}

fn liveness_probe(k: &Kube) -> Result<(), String> {
    probe(k, "livenessProbe", "/healthz")
}

fn readiness_probe(k: &Kube) -> Result<(), String> {
    probe(k, "readinessProbe", "/readyz")
}

/// `--config P run`, P a file of the ConfigMap sluice-config as its volume mounts it.
fn args_use_mounted_config(k: &Kube) -> Result<(), String> {
    let c = k.container()?;
    let args: Vec<String> = seq_at(c, &["args"])
        .ok_or("the container has no args")?
        .iter()
        .map(|a| scalar(a).unwrap_or_default())
        .collect();
    let i = args
        .iter()
        .position(|a| a == "--config")
        .ok_or_else(|| format!("args {args:?} give no --config"))?;
    let config = args
        .get(i + 1)
        .ok_or_else(|| format!("args {args:?}: --config without a path"))?;
    check(args.last().map(String::as_str) == Some("run"), || {
        format!("args {args:?} do not end with the subcommand `run`")
    })?;
    check(at(c, &["command"]).is_none(), || {
        "the container overrides the image's entrypoint (`command`); give `args` only".into()
    })?;
    let (mount, volume) = k
        .mount_of(|v| str_at(v, &["configMap", "name"]) == Some("sluice-config"))?
        .ok_or("no volume of the container mounts the ConfigMap sluice-config")?;
    let dir = str_at(mount, &["mountPath"]).ok_or("the config volumeMount has no mountPath")?;
    let file = Path::new(config)
        .strip_prefix(dir)
        .map_err(|_| format!("--config {config} is not under the config volume's mountPath {dir}"))?
        .to_string_lossy()
        .into_owned();
    // With `items`, the volume holds the listed keys under their `path`s.
    let key = match seq_at(volume, &["configMap", "items"]) {
        None => file.clone(),
        Some(items) => items
            .iter()
            .find(|it| str_at(it, &["path"]) == Some(file.as_str()))
            .and_then(|it| str_at(it, &["key"]))
            .ok_or_else(|| format!("the config volume's items give no file {file:?}"))?
            .to_string(),
    };
    let cm = k.object("ConfigMap", "sluice-config")?;
    check(at(cm, &["data", &key]).is_some(), || {
        format!("--config {config}: ConfigMap sluice-config has no key {key:?}")
    })
}

fn secret_volume(k: &Kube) -> Result<(), String> {
    let (mount, _) = k
        .mount_of(|v| str_at(v, &["secret", "secretName"]) == Some("sluice-db"))?
        .ok_or("no volume of the container mounts the Secret sluice-db (secretName)")?;
    check(
        at(mount, &["readOnly"]).and_then(Value::as_bool) == Some(true),
        || "the Secret sluice-db's volumeMount is not readOnly: true".into(),
    )?;
    check(
        str_at(mount, &["mountPath"]) == Some("/run/secrets/sluice"),
        || {
            format!(
                "the Secret sluice-db is mounted at {:?}, not /run/secrets/sluice",
                str_at(mount, &["mountPath"])
            )
        },
    )?;
    // The Secret is created with kubectl, never shipped with values.
    for d in &k.docs {
        if str_at(&d.value, &["kind"]) == Some("Secret") {
            for key in ["data", "stringData"] {
                check(at(&d.value, &[key]).is_none(), || {
                    format!("{}: a Secret with {key}: passwords are not shipped", d.file)
                })?;
            }
        }
    }
    Ok(())
}

fn config_toml(k: &Kube) -> Result<(), String> {
    let t = k.config_toml()?;
    let mount = k.secret_mount_path()?;
    for side in ["source", "target"] {
        let file = toml_str(&t, side, "password_file")
            .ok_or_else(|| format!("sluice.toml: [{side}] has no password_file"))?;
        let rest = Path::new(file).strip_prefix(&mount).map_err(|_| {
            format!("sluice.toml: [{side}] password_file {file} is not under the Secret's mount {mount}")
        })?;
        check(rest.components().count() == 1, || {
            format!(
                "sluice.toml: [{side}] password_file {file} is not a file of the Secret at {mount}"
            )
        })?;
        // The key the documented `kubectl create secret` gives the Secret.
        let key = rest.to_string_lossy();
        let deployment = &k.files["deployment.yaml"];
        check(deployment.contains(&format!("--from-file={key}=")), || {
            format!(
                "sluice.toml reads [{side}] password_file {file}, but deployment.yaml's `kubectl create secret` gives no --from-file={key}=…"
            )
        })?;
    }
    for (side, scheme) in [("source", "mysql://"), ("target", "postgres://")] {
        let url =
            toml_str(&t, side, "url").ok_or_else(|| format!("sluice.toml: [{side}] has no url"))?;
        check(url.starts_with(scheme), || {
            format!("sluice.toml: [{side}] url {url:?} is not {scheme}…")
        })?;
    }
    let addr = toml_str(&t, "http", "addr");
    check(addr == Some("0.0.0.0:9731"), || {
        format!(
            "sluice.toml: [http] addr is {addr:?}, not \"0.0.0.0:9731\" (probes and Prometheus reach the pod's IP)"
        )
    })?;
    let tables = t.get("tables").and_then(toml::Value::as_array);
    check(tables.is_some_and(|t| !t.is_empty()), || {
        "sluice.toml lists no [[tables]]".into()
    })
}

fn service(k: &Kube) -> Result<(), String> {
    let svc = k.object("Service", "sluice")?;
    let ports = seq_at(svc, &["spec", "ports"]).ok_or("Service sluice has no ports")?;
    let p = ports
        .iter()
        .find(|p| at(p, &["port"]).and_then(Value::as_u64) == Some(9731))
        .ok_or("Service sluice has no port 9731")?;
    let target = at(p, &["targetPort"]).and_then(scalar);
    check(target.as_deref() == Some("http"), || {
        format!("Service sluice: port 9731 targets {target:?}, not the named port \"http\"")
    })?;
    // Its selector (and the Deployment's) picks the pods.
    let labels = at(k.deployment()?, &["spec", "template", "metadata", "labels"])
        .and_then(Value::as_mapping)
        .ok_or("the pod template has no labels")?;
    for (what, sel) in [
        ("Service sluice's selector", at(svc, &["spec", "selector"])),
        (
            "Deployment sluice's selector",
            at(k.deployment()?, &["spec", "selector", "matchLabels"]),
        ),
    ] {
        let sel = sel
            .and_then(Value::as_mapping)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| format!("{what} is empty"))?;
        for (key, value) in sel {
            check(labels.get(key) == Some(value), || {
                format!("{what} {key:?}: {value:?} matches no label of the pod template")
            })?;
        }
    }
    Ok(())
}

fn prometheus_annotations(k: &Kube) -> Result<(), String> {
    let pod = at(k.deployment()?, &["spec", "template", "metadata"]).unwrap_or(&Value::Null);
    let svc = at(k.object("Service", "sluice")?, &["metadata"]).unwrap_or(&Value::Null);
    for (what, meta) in [("the pod template", pod), ("Service sluice", svc)] {
        for (key, want) in [
            ("prometheus.io/scrape", "true"),
            ("prometheus.io/port", "9731"),
            ("prometheus.io/path", "/metrics"),
        ] {
            // Annotations are strings: an unquoted `true` or `9731` is refused by the API.
            let got = at(meta, &["annotations", key]);
            check(got.and_then(Value::as_str) == Some(want), || {
                format!("{what}: annotation {key} is {got:?}, not the string {want:?}")
            })?;
        }
    }
    Ok(())
}

fn hardened_and_graceful(k: &Kube) -> Result<(), String> {
    let pod = k.pod_spec()?;
    let c = k.container()?;
    let grace = at(pod, &["terminationGracePeriodSeconds"]).and_then(Value::as_u64);
    check(grace.is_some_and(|g| g >= 60), || {
        format!(
            "terminationGracePeriodSeconds is {grace:?}; give sluice at least 60 s to commit its in-flight batches"
        )
    })?;
    let non_root = [pod, c].iter().any(|v| {
        at(v, &["securityContext", "runAsNonRoot"]).and_then(Value::as_bool) == Some(true)
    });
    check(non_root, || {
        "no securityContext sets runAsNonRoot: true".into()
    })?;
    let ro = at(c, &["securityContext", "readOnlyRootFilesystem"]).and_then(Value::as_bool);
    check(ro == Some(true), || {
        "the container's securityContext does not set readOnlyRootFilesystem: true".into()
    })?;
    for path in [
        ["requests", "cpu"],
        ["requests", "memory"],
        ["limits", "memory"],
    ] {
        check(at(c, &["resources", path[0], path[1]]).is_some(), || {
            format!("the container sets no resources.{}.{}", path[0], path[1])
        })?;
    }
    Ok(())
}

fn kustomization(k: &Kube) -> Result<(), String> {
    let kz = k
        .docs
        .iter()
        .find(|d| str_at(&d.value, &["kind"]) == Some("Kustomization"))
        .ok_or("no Kustomization under deploy/kubernetes")?;
    let listed: Vec<&str> = seq_at(&kz.value, &["resources"])
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in k.files.keys().filter(|n| **n != kz.file) {
        check(listed.contains(&name.as_str()), || {
            format!("{}: resources do not list {name}", kz.file)
        })?;
    }
    for name in &listed {
        check(k.files.contains_key(*name), || {
            format!("{}: resource {name} does not exist", kz.file)
        })?;
    }
    Ok(())
}

fn apply_instructions(k: &Kube) -> Result<(), String> {
    let text = &k.files["deployment.yaml"];
    for needle in [
        "kubectl create secret generic sluice-db",
        "kubectl apply -k deploy/kubernetes",
    ] {
        check(text.contains(needle), || {
            format!("deployment.yaml's header does not show `{needle}`")
        })?;
    }
    Ok(())
}

/// A password key, not the path of a password file.
fn is_password_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") && !k.ends_with("_file") && !k.ends_with("-file")
}

/// Keys that hold a password in `v` (YAML), with their paths.
fn yaml_passwords(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            // An env entry `{name: X_PASSWORD, value: literal}` (valueFrom is fine).
            if let (Some(name), Some(value)) = (
                m.get("name").and_then(Value::as_str),
                m.get("value").and_then(scalar),
            ) {
                if is_password_key(name) && !value.is_empty() {
                    out.push(format!("{path}: env {name} with a literal value"));
                }
            }
            for (key, value) in m {
                let key = scalar(key).unwrap_or_default();
                let here = format!("{path}.{key}");
                if is_password_key(&key) && scalar(value).is_some_and(|s| !s.is_empty()) {
                    out.push(format!("{here}: a literal value"));
                }
                yaml_passwords(value, &here, out);
            }
        }
        Value::Sequence(s) => {
            for (i, item) in s.iter().enumerate() {
                yaml_passwords(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Tagged(t) => yaml_passwords(&t.value, path, out),
        _ => {}
    }
}

/// The same in a TOML document.
fn toml_passwords(v: &toml::Value, path: &str, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (key, value) in t {
                let here = format!("{path}.{key}");
                let literal = match value {
                    toml::Value::String(s) => !s.is_empty(),
                    toml::Value::Table(_) | toml::Value::Array(_) => false,
                    _ => true,
                };
                if is_password_key(key) && literal {
                    out.push(format!("{here}: a literal value"));
                }
                toml_passwords(value, &here, out);
            }
        }
        toml::Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                toml_passwords(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `scheme://user:secret@host` anywhere in `text` (comments included): the URLs with a
/// password, as found.
fn urls_with_password(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for scheme in ["mysql://", "mariadb://", "postgres://", "postgresql://"] {
        let mut rest = text;
        while let Some(i) = rest.find(scheme) {
            let after = &rest[i + scheme.len()..];
            // The authority: up to the path, the query, or the end of the token.
            let end = after
                .find(|c: char| {
                    c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c.is_whitespace()
                })
                .unwrap_or(after.len());
            let authority = &after[..end];
            if let Some((userinfo, _host)) = authority.rsplit_once('@') {
                if let Some((_user, secret)) = userinfo.split_once(':') {
                    if !secret.is_empty() {
                        found.push(format!("{scheme}{authority}"));
                    }
                }
            }
            rest = after;
        }
    }
    found
}

fn no_plaintext_password(k: &Kube) -> Result<(), String> {
    let mut found = Vec::new();
    for (file, text) in &k.files {
        for url in urls_with_password(text) {
            found.push(format!("{file}: URL with a password: {url}"));
        }
    }
    for d in &k.docs {
        yaml_passwords(&d.value, &d.file, &mut found);
    }
    // The ConfigMap's TOML, read as sluice reads it.
    let t = k.config_toml()?;
    toml_passwords(
        &toml::Value::Table(t),
        "configmap.yaml:sluice.toml",
        &mut found,
    );
    check(found.is_empty(), || {
        format!("passwords in plain text: {}", found.join("; "))
    })
}

/// Every Kubernetes check, by name (the mutation test refers to them).
const KUBE_CHECKS: &[(&str, KubeCheck)] = &[
    ("replicas", deployment_replicas),
    ("container_port", container_port),
    ("liveness", liveness_probe),
    ("readiness", readiness_probe),
    ("args", args_use_mounted_config),
    ("secret_volume", secret_volume),
    ("config_toml", config_toml),
    ("service", service),
    ("prometheus_annotations", prometheus_annotations),
    ("hardened", hardened_and_graceful),
    ("kustomization", kustomization),
    ("apply_instructions", apply_instructions),
    ("no_plaintext_password", no_plaintext_password),
];

// ---- Compose checks --------------------------------------------------------------------

const REPLICATORS: [&str; 2] = ["replicator", "replicator-2"];

/// The host port of a `[ip:]host:container` mapping, and its container port.
fn published(mapping: &str) -> Option<(String, String)> {
    let mut parts: Vec<&str> = mapping.split(':').collect();
    let container = parts.pop()?.split('/').next()?.to_string();
    let host = parts.pop()?.to_string();
    Some((host, container))
}

/// `replicator` and `replicator-2`: `run`, the same pipeline, distinct published ports, the
/// /readyz healthcheck.
fn compose_replicators(c: &Compose) -> Result<(), String> {
    let mut hosts = Vec::new();
    for name in REPLICATORS {
        let s = c.service(name)?;
        let command: Vec<String> = match at(s, &["command"]) {
            Some(Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
            Some(Value::String(line)) => line.split_whitespace().map(String::from).collect(),
            _ => Vec::new(),
        };
        check(command.last().map(String::as_str) == Some("run"), || {
            format!("docker-compose.yml: {name}'s command {command:?} does not run `run`")
        })?;
        let test: Vec<String> = match at(s, &["healthcheck", "test"]) {
            Some(Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
            Some(v) => scalar(v).into_iter().collect(),
            None => Vec::new(),
        };
        check(test.iter().any(|t| t.contains("GET /readyz")), || {
            format!("docker-compose.yml: {name}'s healthcheck does not ask GET /readyz: {test:?}")
        })?;
        let http = str_at(s, &["environment", "SLUICE_HTTP_ADDR"])
            .ok_or_else(|| format!("docker-compose.yml: {name} sets no SLUICE_HTTP_ADDR"))?;
        let http_port = http.rsplit(':').next().unwrap_or_default().to_string();
        check(
            test.iter().any(|t| t.contains(&format!("/{http_port} "))),
            || {
                format!("docker-compose.yml: {name}'s healthcheck does not connect to its HTTP port {http_port}")
            },
        )?;
        let ports: Vec<(String, String)> = seq_at(s, &["ports"])
            .unwrap_or(&[])
            .iter()
            .filter_map(|p| scalar(p).as_deref().and_then(published))
            .filter(|(_, container)| *container == http_port)
            .collect();
        let [(host, _)] = ports.as_slice() else {
            return Err(format!(
                "docker-compose.yml: {name} publishes its HTTP port {http_port} {} times, not once",
                ports.len()
            ));
        };
        check(!hosts.contains(host), || {
            format!("docker-compose.yml: {name} publishes host port {host} that another replicator publishes too")
        })?;
        hosts.push(host.clone());
    }
    // One pipeline: the same databases and the same image.
    let first = c.service(REPLICATORS[0])?;
    for name in &REPLICATORS[1..] {
        let other = c.service(name)?;
        for path in [
            &["environment", "SLUICE_SOURCE_URL"][..],
            &["environment", "SLUICE_TARGET_URL"][..],
            &["image"][..],
        ] {
            check(at(first, path) == at(other, path), || {
                format!(
                    "docker-compose.yml: {name}'s {} ({:?}) differs from {}'s ({:?}): not the same pipeline",
                    path.join("."),
                    at(other, path),
                    REPLICATORS[0],
                    at(first, path)
                )
            })?;
        }
    }
    Ok(())
}

/// deploy/prometheus.yml scrapes every replicator on its container port.
fn prometheus_scrapes_replicators(c: &Compose) -> Result<(), String> {
    let targets: Vec<String> = seq_at(&c.prometheus, &["scrape_configs"])
        .unwrap_or(&[])
        .iter()
        .flat_map(|job| seq_at(job, &["static_configs"]).unwrap_or(&[]))
        .flat_map(|sc| seq_at(sc, &["targets"]).unwrap_or(&[]))
        .filter_map(scalar)
        .collect();
    for name in REPLICATORS {
        let s = c.service(name)?;
        let http = str_at(s, &["environment", "SLUICE_HTTP_ADDR"]).unwrap_or_default();
        let port = http.rsplit(':').next().unwrap_or_default();
        let want = format!("{name}:{port}");
        check(targets.contains(&want), || {
            format!("deploy/prometheus.yml does not scrape {want} (targets: {targets:?})")
        })?;
    }
    Ok(())
}

const COMPOSE_CHECKS: &[(&str, ComposeCheck)] = &[
    ("compose_replicators", compose_replicators),
    ("prometheus_scrapes", prometheus_scrapes_replicators),
];

// ---- the tests, on the repository's files ------------------------------------------------

fn kube_ok(f: KubeCheck) {
    if let Err(e) = f(&Kube::load()) {
        panic!("deploy/kubernetes: {e}");
    }
}

fn compose_ok(f: ComposeCheck) {
    if let Err(e) = f(&Compose::load()) {
        panic!("{e}");
    }
}

#[test]
fn kubernetes_manifests_parse() {
    let k = Kube::load();
    for (kind, name) in [
        ("ConfigMap", "sluice-config"),
        ("Deployment", "sluice"),
        ("Service", "sluice"),
    ] {
        k.object(kind, name).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn deployment_runs_several_replicas() {
    kube_ok(deployment_replicas);
}

#[test]
fn container_serves_http_on_9731() {
    kube_ok(container_port);
}

#[test]
fn liveness_probe_is_healthz_on_the_http_port() {
    kube_ok(liveness_probe);
}

#[test]
fn readiness_probe_is_readyz_on_the_http_port() {
    kube_ok(readiness_probe);
}

#[test]
fn args_run_with_the_mounted_config() {
    kube_ok(args_use_mounted_config);
}

#[test]
fn secret_sluice_db_is_mounted_read_only() {
    kube_ok(secret_volume);
}

#[test]
fn config_reads_passwords_from_the_secret_and_binds_all_interfaces() {
    kube_ok(config_toml);
}

#[test]
fn service_targets_the_http_port() {
    kube_ok(service);
}

#[test]
fn prometheus_annotations_on_pod_template_and_service() {
    kube_ok(prometheus_annotations);
}

#[test]
fn pod_is_hardened_and_stops_gracefully() {
    kube_ok(hardened_and_graceful);
}

#[test]
fn kustomization_lists_every_manifest() {
    kube_ok(kustomization);
}

#[test]
fn deployment_header_shows_how_to_apply() {
    kube_ok(apply_instructions);
}

#[test]
fn no_plaintext_password_in_the_manifests() {
    kube_ok(no_plaintext_password);
}

/// sluice's own loader accepts the ConfigMap's sluice.toml (unknown keys are refused) and
/// reads the passwords from the files it names (here copies of the Secret's files).
#[test]
fn configmap_is_accepted_by_sluice() {
    let k = Kube::load();
    let mount = k.secret_mount_path().unwrap();
    let cm = k.object("ConfigMap", "sluice-config").unwrap();
    let text = str_at(cm, &["data", "sluice.toml"]).unwrap();
    let dir = std::env::temp_dir().join(format!("sluice-deploy-{}", std::process::id()));
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("source-password"), "src-Pw\n").unwrap();
    std::fs::write(secrets.join("target-password"), "tgt-Pw\n").unwrap();
    let config = dir.join("sluice.toml");
    std::fs::write(&config, text.replace(&mount, &secrets.to_string_lossy())).unwrap();
    let loaded =
        sluice::config::Settings::load(Some(&config), &sluice::config::Overrides::default());
    std::fs::remove_dir_all(&dir).ok();
    let s = loaded.unwrap_or_else(|e| panic!("sluice refuses the ConfigMap's sluice.toml: {e}"));
    assert!(
        s.source.url.contains(":src-Pw@"),
        "the source password was not read from its file"
    );
    assert!(
        s.target.url.contains(":tgt-Pw@"),
        "the target password was not read from its file"
    );
    if std::env::var_os("SLUICE_HTTP_ADDR").is_none() {
        assert_eq!(s.http.addr, "0.0.0.0:9731");
    }
}

#[test]
fn compose_runs_two_replicators_of_one_pipeline() {
    compose_ok(compose_replicators);
}

#[test]
fn prometheus_scrapes_both_compose_replicators() {
    compose_ok(prometheus_scrapes_replicators);
}

// ---- every check can fail --------------------------------------------------------------

/// `text` with `from` replaced by `to`; `from` must occur (else the mutation tests nothing).
fn mutate(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "mutation: {from:?} no longer occurs; update the mutation"
    );
    text.replacen(from, to, 1)
}

/// Each check, run on a copy of the files broken in the way it guards against, fails (the
/// files on disk are not touched); the other checks are not asked.
#[test]
fn every_check_fails_on_a_broken_copy() {
    let kube = yaml_files(&kube_dir());
    // (check, file, from, to)
    let kube_mutations: &[(&str, &str, &str, &str)] = &[
        ("replicas", "deployment.yaml", "replicas: 3", "replicas: 1"),
        ("replicas", "deployment.yaml", "replicas: 3", "# no replicas"),
        ("container_port", "deployment.yaml", "containerPort: 9731", "containerPort: 8080"),
        ("container_port", "deployment.yaml", "- name: http\n", "- name: web\n"),
        ("liveness", "deployment.yaml", "path: /healthz", "path: /health"),
        ("liveness", "deployment.yaml", "path: /healthz\n              port: http", "path: /healthz\n              port: 9731"),
        ("liveness", "deployment.yaml", "livenessProbe:", "startupProbe:"),
        ("readiness", "deployment.yaml", "path: /readyz", "path: /healthz"),
        ("readiness", "deployment.yaml", "path: /readyz\n              port: http", "path: /readyz\n              port: 9731"),
        ("args", "deployment.yaml", "\"/etc/sluice/sluice.toml\"", "\"/etc/sluice.toml\""),
        ("args", "deployment.yaml", "\"/etc/sluice/sluice.toml\"", "\"/etc/sluice/config.toml\""),
        ("args", "deployment.yaml", ", \"run\"]", "]"),
        ("args", "deployment.yaml", "mountPath: /etc/sluice", "mountPath: /config"),
        ("args", "deployment.yaml", "name: sluice-config", "name: other-config"),
        ("secret_volume", "deployment.yaml", "secretName: sluice-db", "secretName: db"),
        ("secret_volume", "deployment.yaml", "mountPath: /run/secrets/sluice\n              readOnly: true", "mountPath: /run/secrets/sluice\n              readOnly: false"),
        ("secret_volume", "deployment.yaml", "mountPath: /run/secrets/sluice", "mountPath: /secrets"),
        ("config_toml", "configmap.yaml", "/run/secrets/sluice/source-password", "/etc/sluice/source-password"),
        ("config_toml", "configmap.yaml", "/run/secrets/sluice/target-password", "/tmp/target-password"),
        ("config_toml", "configmap.yaml", "/run/secrets/sluice/target-password", "/run/secrets/sluice/pg-password"),
        ("config_toml", "configmap.yaml", "password_file = \"/run/secrets/sluice/source-password\"\n", ""),
        ("config_toml", "configmap.yaml", "addr = \"0.0.0.0:9731\"", "addr = \"127.0.0.1:9731\""),
        ("config_toml", "configmap.yaml", "[[tables]]", "[tables"),
        ("service", "service.yaml", "targetPort: http", "targetPort: 8080"),
        ("service", "service.yaml", "port: 9731", "port: 80"),
        ("service", "service.yaml", "  selector:\n    app.kubernetes.io/name: sluice", "  selector:\n    app.kubernetes.io/name: other"),
        ("prometheus_annotations", "deployment.yaml", "prometheus.io/scrape: \"true\"", "prometheus.io/scrape: true"),
        ("prometheus_annotations", "deployment.yaml", "prometheus.io/path: \"/metrics\"", "prometheus.io/path: \"/\""),
        ("prometheus_annotations", "service.yaml", "prometheus.io/port: \"9731\"", "prometheus.io/port: \"80\""),
        ("hardened", "deployment.yaml", "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 30"),
        ("hardened", "deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"),
        ("hardened", "deployment.yaml", "memory: 512Mi", "cpu: 500m"),
        ("kustomization", "kustomization.yaml", "  - service.yaml\n", ""),
        ("kustomization", "kustomization.yaml", "  - service.yaml\n", "  - service.yaml\n  - secret.yaml\n"),
        ("apply_instructions", "deployment.yaml", "kubectl apply -k deploy/kubernetes", "kubectl apply -f ."),
        ("no_plaintext_password", "configmap.yaml", "mysql://sluice@mysql", "mysql://sluice:hunter2@mysql"),
        ("no_plaintext_password", "configmap.yaml", "postgres://sluice@postgres", "postgres://sluice:x@postgres"),
        ("no_plaintext_password", "configmap.yaml", "schema = \"public\"", "schema = \"public\"\n    password = \"hunter2\""),
        ("no_plaintext_password", "deployment.yaml", "          volumeMounts:", "          env:\n            - name: SLUICE_SOURCE_PASSWORD\n              value: hunter2\n          volumeMounts:"),
        ("no_plaintext_password", "service.yaml", "  name: sluice\n", "  name: sluice\n  password: hunter2\n"),
        ("no_plaintext_password", "deployment.yaml", "#      kubectl apply", "#      (mysql://root:hunter2@db/app)\n#      kubectl apply"),
    ];
    let mut failures = Vec::new();
    for (name, file, from, to) in kube_mutations {
        let mut files = kube.clone();
        let text = files.get_mut(*file).unwrap();
        *text = mutate(text, from, to);
        let (_, f) = KUBE_CHECKS.iter().find(|(n, _)| n == name).unwrap();
        match Kube::parse(files).and_then(|k| f(&k)) {
            Err(e) => println!("{name}: {file} {from:?} -> {to:?}: fails as it should: {e}"),
            Ok(()) => failures.push(format!("{name} passes with {file} {from:?} -> {to:?}")),
        }
    }
    // Every Kubernetes check is exercised.
    for (name, _) in KUBE_CHECKS {
        assert!(
            kube_mutations.iter().any(|m| m.0 == *name),
            "check {name} has no mutation"
        );
    }

    let compose = read("docker-compose.yml");
    let prometheus = read("deploy/prometheus.yml");
    // (check, in docker-compose.yml?, from, to)
    let compose_mutations: &[(&str, bool, &str, &str)] = &[
        ("compose_replicators", true, "  replicator-2:\n", "  replicator-b:\n"),
        ("compose_replicators", true, "\"127.0.0.1:9732:9731\"", "\"127.0.0.1:9731:9731\""),
        ("compose_replicators", true, "    healthcheck: *sluice-healthcheck\n", ""),
        ("compose_replicators", true, "GET /readyz", "GET /healthz"),
        ("compose_replicators", true, "  replicator-2:\n    <<: *sluice-app\n    command: [\"run\"]", "  replicator-2:\n    <<: *sluice-app\n    command: [\"status\"]"),
        ("compose_replicators", true, "  replicator-2:\n    <<: *sluice-app\n    command: [\"run\"]\n    environment:\n      <<: *sluice-env\n", "  replicator-2:\n    <<: *sluice-app\n    command: [\"run\"]\n    environment:\n      <<: *sluice-env\n      SLUICE_TARGET_URL: postgres://postgres:sluice@postgres:5432/other\n"),
        ("prometheus_scrapes", false, ", \"replicator-2:9731\"", ""),
    ];
    for (name, in_compose, from, to) in compose_mutations {
        let (c, p) = if *in_compose {
            (mutate(&compose, from, to), prometheus.clone())
        } else {
            (compose.clone(), mutate(&prometheus, from, to))
        };
        let (_, f) = COMPOSE_CHECKS.iter().find(|(n, _)| n == name).unwrap();
        match Compose::parse(&c, &p).and_then(|c| f(&c)) {
            Err(e) => println!("{name}: {from:?} -> {to:?}: fails as it should: {e}"),
            Ok(()) => failures.push(format!("{name} passes with {from:?} -> {to:?}")),
        }
    }
    for (name, _) in COMPOSE_CHECKS {
        assert!(
            compose_mutations.iter().any(|m| m.0 == *name),
            "check {name} has no mutation"
        );
    }
    assert!(
        failures.is_empty(),
        "checks that do not catch what they guard against:\n{}",
        failures.join("\n")
    );
}

/// The URL scan itself: a password is found wherever it is, a user alone is not.
#[test]
fn url_scan_finds_passwords_only() {
    assert_eq!(
        urls_with_password("url = \"mysql://u:p@h:3306/db\""),
        ["mysql://u:p@h:3306"]
    );
    assert_eq!(
        urls_with_password("postgres://u:p@h/db postgresql://v:q@h"),
        ["postgres://u:p@h", "postgresql://v:q@h"]
    );
    assert!(urls_with_password("mysql://u@h:3306/db postgres://h:5432/db").is_empty());
    assert!(urls_with_password("mysql://u:@h/db").is_empty());
}

/// Runs a validator installed by `scripts/tools.sh` (on PATH after `. scripts/tools.sh`, as
/// `scripts/test.sh` does; or in its virtualenv), failing the test when it is missing: a check
/// that did not run must not pass.
fn validator(name: &str) -> std::process::Command {
    let venv = std::env::var_os("SLUICE_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("sluice-tools"))
        })
        .map(|d| d.join("venv").join("bin").join(name))
        .filter(|p| p.exists());
    let program = venv.unwrap_or_else(|| PathBuf::from(name));
    let found = std::process::Command::new(&program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is not installed: run `. scripts/tools.sh` (scripts/test.sh does), which installs it"
    );
    let mut cmd = std::process::Command::new(program);
    cmd.current_dir(repo());
    cmd
}

/// The Kubernetes manifests against the real API schemas, strictly: an unknown field (a typo
/// such as `allowPrivilegeEscallation`) fails. The hand checks above stay for sluice's own
/// policy (probes, secrets, ports, annotations).
#[test]
fn kubernetes_manifests_pass_the_real_schemas_and_a_typo_fails_them() {
    let manifests: Vec<String> = yaml_files(&kube_dir())
        .into_iter()
        .filter(|(_, text)| !text.contains("kind: Kustomization"))
        .map(|(name, _)| format!("deploy/kubernetes/{name}"))
        .collect();
    assert!(manifests.len() >= 3, "{manifests:?}");
    let out = validator("kubernetes-validate")
        .arg("--strict")
        .args(&manifests)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The same with one typo in the Deployment's security context.
    let dir = std::env::temp_dir().join(format!("sluice-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("deployment.yaml");
    let text = read("deploy/kubernetes/deployment.yaml");
    assert!(text.contains("allowPrivilegeEscalation"));
    std::fs::write(
        &broken,
        text.replace("allowPrivilegeEscalation", "allowPrivilegeEscallation"),
    )
    .unwrap();
    let out = validator("kubernetes-validate")
        .arg("--strict")
        .arg(&broken)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the typo passed: {said}");
    assert!(said.contains("allowPrivilegeEscallation"), "{said}");
}

/// The alert rules (lag, stopped tables, drift, binlog behind, no owner, down) and the
/// Prometheus configuration that loads them, checked by promtool, and the rules' unit tests
/// (`deploy/alerts.test.yml`: each alert fires on its series and stays quiet before).
#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    for args in [
        &["check", "rules", "deploy/alerts.yml"][..],
        &["check", "config", "deploy/prometheus.yml"],
        &["test", "rules", "deploy/alerts.test.yml"],
    ] {
        let out = validator("promtool").args(args).output().unwrap();
        assert!(out.status.success(), "promtool {args:?}: {out:?}");
    }
    let rules = read("deploy/alerts.yml");
    for alert in [
        "SluiceDown",
        "SluiceReplicationLagHigh",
        "SluiceTableStopped",
        "SluiceDrift",
        "SluiceBinlogFarBehind",
        "SluiceNoOwner",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
        assert!(
            read("deploy/alerts.test.yml").contains(&format!("alertname: {alert}")),
            "{alert} has no unit test"
        );
    }
}
