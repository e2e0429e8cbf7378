//! The deployment files (`infra/bicep`, `infra/k8s`, `Dockerfile`) are valid, pass checkov's
//! security checks (every skip carries its reason in the file), and agree with the function app
//! (`host.json`, `functions/*/function.json`) and with each other: a Kafka function's KEDA
//! trigger watches its own topic and consumer group, every `%setting%` a binding names reaches its
//! pod, every secret a pod reads is synced from a Key Vault secret the Bicep writes, every topic
//! has an event hub. What these catch would otherwise show first in Azure: a function that never
//! scales, a pod that cannot start, a host that cannot find its handler.
//! Needs `scripts/services` (validators: checkov and pycep-parser in a venv, kubectl); a missing
//! one FAILS the test.
#![cfg(feature = "integration")]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn need(var: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{var} is not set: run through scripts/services or ./scripts/test"))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator(name: &str) -> PathBuf {
    Path::new(&need("IOTSTREAM_TEST_VALIDATORS")).join(name)
}

/// Runs a command; panics with its output unless it succeeds.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// checkov's JSON report (one framework or a list of them): no failed check, no parsing error.
fn assert_checkov_passes(args: &[&str]) {
    let out = Command::new(validator("checkov"))
        .args(args)
        .args(["--output", "json", "--quiet", "--compact"])
        .current_dir(root())
        .output()
        .expect("checkov runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("checkov {args:?} printed no JSON report ({e}):\n{text}"));
    let reports = match report {
        Value::Array(a) => a,
        one => vec![one],
    };
    let mut failures = Vec::new();
    let mut passed = 0;
    for r in &reports {
        let summary = &r["summary"];
        passed += summary["passed"].as_u64().unwrap_or(0);
        assert_eq!(
            summary["parsing_errors"], 0,
            "checkov could not parse {args:?}: {r}"
        );
        for f in r["results"]["failed_checks"].as_array().into_iter().flatten() {
            failures.push(format!(
                "{} {} ({}:{})",
                f["check_id"].as_str().unwrap_or("?"),
                f["check_name"].as_str().unwrap_or("?"),
                f["file_path"].as_str().unwrap_or("?"),
                f["resource"].as_str().unwrap_or("?"),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "checkov {args:?} failed:\n{}",
        failures.join("\n")
    );
    assert!(passed > 0, "checkov {args:?} checked nothing");
}

/// `KEY=VALUE` lines.
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The keys of a Bicep output built as `join([ 'KEY=...' ... ], '\n')`.
fn bicep_env_output(bicep: &str, output: &str) -> BTreeSet<String> {
    let start = bicep
        .find(&format!("output {output} string = join(["))
        .unwrap_or_else(|| panic!("main.bicep has no output {output}"));
    let body = &bicep[start..];
    let body = &body[..body.find("], '\\n')").expect("the join ends")];
    body.lines()
        .skip(1)
        .filter_map(|l| {
            l.trim()
                .strip_prefix('\'')?
                .split_once('=')
                .map(|(k, _)| k.to_string())
        })
        .collect()
}

struct Function {
    name: String,
    trigger: Value,
}

fn functions() -> Vec<Function> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(root().join("functions")).unwrap() {
        let dir = entry.unwrap().path();
        let f: Value = serde_json::from_str(&read(dir.join("function.json"))).unwrap();
        all.push(Function {
            name: dir.file_name().unwrap().to_str().unwrap().to_string(),
            trigger: f["bindings"][0].clone(),
        });
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(all.len() >= 5, "functions/ lost a function");
    all
}

fn is_kafka(f: &Function) -> bool {
    f.trigger["type"] == "kafkaTrigger"
}

/// `%NAME%` values of a binding.
fn placeholders(binding: &Value) -> Vec<String> {
    binding
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| {
            v.as_str()?
                .strip_prefix('%')?
                .strip_suffix('%')
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn the_bicep_parses_and_passes_checkov() {
    let parse = "import pathlib, sys\nfrom pycep import BicepParser\nfor f in sys.argv[1:]:\n    \
                 BicepParser().parse(file_path=pathlib.Path(f))\n";
    let mut files = vec![root().join("infra/bicep/main.bicep")];
    for entry in std::fs::read_dir(root().join("infra/bicep/modules")).unwrap() {
        files.push(entry.unwrap().path());
    }
    run(Command::new(validator("python"))
        .arg("-c")
        .arg(parse)
        .args(&files));
    assert_checkov_passes(&["-d", "infra/bicep", "--framework", "bicep"]);
    assert_checkov_passes(&["-f", "Dockerfile", "--framework", "dockerfile"]);

    // The gateway's policies are XML API Management accepts (format 'xml': well-formed).
    let xml = "import sys, xml.etree.ElementTree as ET\nfor f in sys.argv[1:]:\n    \
               assert ET.parse(f).getroot().tag == 'policies', f\n";
    let policies = root().join("infra/bicep/policies");
    let mut cmd = Command::new(validator("python"));
    cmd.arg("-c").arg(xml);
    for entry in std::fs::read_dir(&policies).unwrap() {
        cmd.arg(entry.unwrap().path());
    }
    run(&mut cmd);
}

#[test]
fn every_topic_has_an_event_hub_and_a_dead_letter_one() {
    let bicep = read("infra/bicep/modules/eventhubs.bicep");
    let block = &bicep[bicep.find("var hubs = [").expect("var hubs")..];
    let block = &block[..block.find("\n]").unwrap()];
    let hubs: BTreeSet<&str> = block
        .lines()
        .skip(1)
        .map(|l| l.trim().trim_matches('\''))
        .collect();
    for f in functions().iter().filter(|f| is_kafka(f)) {
        let topic = f.trigger["topic"].as_str().unwrap();
        assert!(hubs.contains(topic), "{}: no event hub for topic {topic}", f.name);
        let dead = format!("{topic}.dead-letter");
        assert!(hubs.contains(dead.as_str()), "{}: no event hub {dead}", f.name);
    }
    // The env files infra/k8s reads are the Bicep outputs; the examples show the same keys.
    let main = read("infra/bicep/main.bicep");
    for (output, example) in [
        ("settingsEnv", "settings.env.example"),
        ("clusterEnv", "cluster.env.example"),
    ] {
        let keys: BTreeSet<String> = env_file(&read(format!("infra/k8s/{example}")))
            .into_keys()
            .collect();
        assert_eq!(
            bicep_env_output(&main, output),
            keys,
            "output {output} vs infra/k8s/{example}"
        );
    }
}

/// The manifests rendered as `kubectl apply -k infra/k8s` would apply them, with the example
/// env files in place of the deployment's outputs, and the file they were written to (in a
/// directory dropped with the returned guard).
fn rendered() -> (Vec<Value>, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let k8s = root().join("infra/k8s");
    for entry in std::fs::read_dir(&k8s).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    for name in ["settings.env", "cluster.env"] {
        std::fs::copy(k8s.join(format!("{name}.example")), dir.path().join(name)).unwrap();
    }
    let yaml = run(Command::new(need("IOTSTREAM_TEST_KUBECTL"))
        .arg("kustomize")
        .arg(dir.path()));
    let out = dir.path().join("rendered.yaml");
    std::fs::write(&out, &yaml).unwrap();
    let to_json = "import json, sys, yaml\njson.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)";
    let json = run(Command::new(validator("python")).arg("-c").arg(to_json).arg(&out));
    (serde_json::from_str(&json).unwrap(), out, dir)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("infra/k8s has no {kind} {name}"))
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

#[test]
fn the_manifests_run_every_function_and_scale_the_kafka_ones_on_their_own_lag() {
    let (docs, out, _dir) = rendered();
    assert_checkov_passes(&["-f", out.to_str().unwrap(), "--framework", "kubernetes"]);
    let host: Value = serde_json::from_str(&read("host.json")).unwrap();
    let settings = env_file(&read("infra/k8s/settings.env.example"));
    let readme = read("README.md");
    let provider = docs
        .iter()
        .find(|d| d["kind"] == "SecretProviderClass")
        .expect("a SecretProviderClass");
    let synced: BTreeSet<&str> = provider["spec"]["secretObjects"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    let main = read("infra/bicep/main.bicep");
    // Settings a function.json binding reads (the Functions host's, not iotstream's).
    let bound: BTreeSet<String> = functions()
        .iter()
        .flat_map(|f| placeholders(&f.trigger))
        .collect();

    for f in functions() {
        let deployment = find(&docs, "Deployment", &f.name);
        let c = container(deployment);
        assert_eq!(
            env_value(c, "AzureFunctionsJobHost__functions__0").map(|e| &e["value"]),
            Some(&Value::from(f.name.as_str())),
            "{}: the host runs only this function",
            f.name
        );
        assert_eq!(
            env_value(c, "FUNCTIONS_WORKER_RUNTIME").map(|e| &e["value"]),
            Some(&Value::from("custom")),
            "{}: the image says dotnet",
            f.name
        );
        let urls = env_value(c, "ASPNETCORE_URLS").expect("ASPNETCORE_URLS")["value"]
            .as_str()
            .unwrap();
        let port = |name: &str| {
            c["ports"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{}: no port named {name}", f.name))
        };
        let http = port("http");
        assert!(
            urls.ends_with(&format!(":{http}")),
            "{}: host listens on {urls}, pod exposes {http}",
            f.name
        );
        // serve's /metrics beside the host's port, where the scrape annotation points.
        let metrics = port("metrics");
        let listen = env_value(c, "IOTSTREAM_METRICS_LISTEN").expect("IOTSTREAM_METRICS_LISTEN")["value"]
            .as_str()
            .unwrap();
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert!(
            listen.ends_with(&format!(":{metrics}"))
                && annotations["prometheus.io/port"]
                    .as_str()
                    .and_then(|p| p.parse().ok())
                    == Some(metrics)
                && annotations["prometheus.io/scrape"] == "true",
            "{}: /metrics on {listen}, port {metrics}, annotations {annotations}",
            f.name
        );
        assert_eq!(
            c["startupProbe"]["httpGet"]["path"], "/",
            "{}: probed where the host answers",
            f.name
        );

        // Every %setting% of the binding reaches the pod (ConfigMap or env).
        for p in placeholders(&f.trigger) {
            assert!(
                settings.contains_key(&p) || env_value(c, &p).is_some(),
                "{}: function.json reads %{p}%, which the pod does not get",
                f.name
            );
        }
        if !is_kafka(&f) {
            continue;
        }
        let scaled = find(&docs, "ScaledObject", &f.name);
        assert_eq!(
            scaled["spec"]["scaleTargetRef"]["name"],
            Value::from(f.name.as_str())
        );
        assert!(
            scaled["spec"]["minReplicaCount"].as_u64() >= Some(1),
            "{}: a warm host, no cold start",
            f.name
        );
        let t = &scaled["spec"]["triggers"][0];
        assert_eq!(t["type"], "kafka");
        for key in ["topic", "consumerGroup"] {
            assert_eq!(
                t["metadata"][key], f.trigger[key],
                "{}: KEDA's {key} must be the function's",
                f.name
            );
        }
        assert_eq!(
            t["metadata"]["offsetResetPolicy"]
                .as_str()
                .map(str::to_ascii_lowercase),
            host["extensions"]["kafka"]["AutoOffsetReset"]
                .as_str()
                .map(str::to_ascii_lowercase),
            "{}: KEDA counts lag from where the host starts",
            f.name
        );
        let from_env = t["metadata"]["bootstrapServersFromEnv"]
            .as_str()
            .expect("bootstrapServersFromEnv");
        assert!(
            settings.contains_key(from_env),
            "{}: {from_env} is not in the settings",
            f.name
        );
        let auth = find(
            &docs,
            "TriggerAuthentication",
            t["authenticationRef"]["name"].as_str().unwrap(),
        );
        for r in auth["spec"]["secretTargetRef"].as_array().unwrap() {
            let (secret, key) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
            let exists = (secret == "iotstream-secrets" && synced.contains(key))
                || docs
                    .iter()
                    .any(|d| d["kind"] == "Secret" && d["metadata"]["name"] == secret);
            assert!(
                exists,
                "{}: KEDA reads {secret}/{key}, which nothing creates",
                f.name
            );
        }
    }

    // Every secret a pod reads is synced from Key Vault, and the Bicep writes that secret.
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let c = container(d);
        let name = d["metadata"]["name"].as_str().unwrap();
        for e in c["env"].as_array().unwrap() {
            let var = e["name"].as_str().unwrap();
            if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
                assert!(
                    synced.contains(key),
                    "{name}: {var} reads secret key {key}, which is not synced"
                );
                assert!(
                    main.contains(&format!("'{key}':")),
                    "{name}: Key Vault secret {key} is not written by main.bicep"
                );
            }
            // A setting iotstream reads (documented) or one a binding reads: no typo.
            if var.starts_with("IOTSTREAM_") {
                assert!(
                    readme.contains(var) || bound.contains(var),
                    "{name}: {var} is no setting of iotstream"
                );
            }
        }
    }
    for key in settings.keys().filter(|k| k.starts_with("IOTSTREAM_")) {
        assert!(
            readme.contains(key.as_str()) || bound.contains(key),
            "settings: {key} is no setting of iotstream"
        );
    }
}

#[test]
fn the_image_holds_the_function_app_where_the_host_and_web_look() {
    let host: Value = serde_json::from_str(&read("host.json")).unwrap();
    let exe = host["customHandler"]["description"]["defaultExecutablePath"]
        .as_str()
        .unwrap();
    let docker = read("Dockerfile");
    assert!(docker.contains("ENV AzureWebJobsScriptRoot=/home/site/wwwroot"));
    assert!(docker.contains("FUNCTIONS_WORKER_RUNTIME=custom"));
    assert!(
        docker.contains(&format!("cp target/release/{exe} host.json /home/site/wwwroot/")),
        "the handler ({exe}) and host.json sit in the script root"
    );
    assert!(
        docker.contains("cp -r functions/. /home/site/wwwroot/"),
        "function folders sit in the script root"
    );
    assert!(
        docker.contains("--features backends"),
        "every real engine is built in"
    );
    let (docs, _, _dir) = rendered();
    let web = container(find(&docs, "Deployment", "web"));
    let web_exe = format!("/home/site/wwwroot/{exe}");
    assert_eq!(web["command"], serde_json::json!([web_exe, "run", "web"]));
}
