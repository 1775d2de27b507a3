//! The deployment files say what the code does: same variable, same path, same probe.

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

    // Readiness on /health, which the examples mount outside the layer so that it answers
    // after the cut-off; liveness anywhere but /health.
    let readiness = container["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(readiness, "/health");
    let example = std::fs::read_to_string("examples/axum.rs").unwrap();
    let layer_at = example.find(".layer(").unwrap();
    let health_at = example.find(r#".route_service("/health""#).unwrap();
    assert!(health_at > layer_at, "/health is mounted outside the layer");
    let liveness = &container["livenessProbe"];
    assert!(!liveness.is_badvalue(), "a liveness probe is declared");
    assert_ne!(liveness["httpGet"]["path"].as_str(), Some("/health"));
}

#[tokio::test]
async fn alert_rules_only_use_metrics_the_service_exports() {
    use iosetu_license::{Claims, LicenseMonitor, LicenseSigner, LicenseSource, MetricsService};
    // A monitor with a license (with a feature and a limit) and one failed check, so
    // every series exists.
    let signer = LicenseSigner::from_seed([61; 32]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.key");
    let mut claims = Claims::new("Acme", 4_102_444_800);
    claims.features = vec!["sso".into()];
    claims.limits.insert("seats".into(), 10);
    std::fs::write(&path, signer.sign(&claims)).unwrap();
    let monitor = LicenseMonitor::builder()
        .public_key(signer.public_key())
        .source(LicenseSource::File(path.clone()))
        .watch_file(false)
        .file_poll_interval(None)
        .start()
        .await
        .unwrap();
    std::fs::write(&path, "garbage").unwrap();
    monitor.check_now().await;
    let exported = MetricsService::new(&monitor).render().unwrap();
    let exported: Vec<&str> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();

    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus-rules.yaml"
    ))
    .unwrap();
    let docs = YamlLoader::load_from_str(&rules).unwrap();
    let mut checked = 0;
    for group in docs[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("iosetu_license_") {
                    assert!(
                        exported.contains(&word),
                        "rule {:?} uses {word}, which is not exported",
                        rule["alert"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 5);
}
