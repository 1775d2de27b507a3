//! The deployment files say what the code does: same variable, same path, same probe.

use iosetu_license::DEFAULT_EXEMPT_PATHS;
use iosetu_license::source::LICENSE_FILE_VAR;
use yaml_rust2::{Yaml, YamlLoader};

fn documents() -> Vec<Yaml> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes.yaml"
    ))
    .unwrap();
    YamlLoader::load_from_str(&text).expect("deploy/kubernetes.yaml is valid YAML")
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes.yaml"))
}

#[test]
fn kubernetes_manifest_matches_the_code() {
    let docs = documents();
    let secret = kind(&docs, "Secret");
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    let key = secret["stringData"]
        .as_hash()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .as_str()
        .unwrap();

    let deployment = kind(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The file variable names a file inside the mounted Secret.
    let env = container["env"].as_vec().unwrap();
    let file_var = env
        .iter()
        .find(|e| e["name"].as_str() == Some(LICENSE_FILE_VAR))
        .expect("the Deployment sets IOSETU_LICENSE_FILE");
    let license_path = file_var["value"].as_str().unwrap();

    let volume = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"].as_str() == Some(secret_name))
        .expect("the Secret is mounted as a volume");
    let mount = container["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the volume is mounted");
    assert_eq!(
        format!("{}/{}", mount["mountPath"].as_str().unwrap(), key),
        license_path
    );
    // A subPath mount is never updated by kubelet: hot reload would silently not work.
    assert!(
        mount["subPath"].is_badvalue(),
        "the license must not be mounted with subPath"
    );

    // Readiness on /health, which the layer leaves open after the cut-off; liveness
    // anywhere but /health.
    let readiness = container["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(readiness, "/health");
    assert!(DEFAULT_EXEMPT_PATHS.contains(&readiness));
    let liveness = &container["livenessProbe"];
    assert!(!liveness.is_badvalue(), "a liveness probe is declared");
    assert_ne!(liveness["httpGet"]["path"].as_str(), Some("/health"));
}
