//! The Kubernetes client the slot task talks through: kube's client over TLS this crate
//! sets up itself (ring as an explicit provider, the cluster's CA as the only root), from
//! the in-cluster service account, the local kubeconfig or a given `kube::Config`.

/// The service account's namespace file in a pod.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// A client from the in-cluster service account (or the local kubeconfig), and its
/// default namespace (the service account's namespace file in a pod).
pub(super) async fn in_cluster_client() -> Result<(kube::Client, String), String> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration: {e}"))?;
    let namespace = match std::fs::read_to_string(NAMESPACE_FILE) {
        Ok(ns) if !ns.trim().is_empty() => ns.trim().to_owned(),
        _ => config.default_namespace.clone(),
    };
    Ok((api_client(config)?, namespace))
}

/// kube's client over a connection whose TLS this crate sets up with ring as an explicit
/// provider. kube's own TLS stack builds its rustls config through the process-wide
/// default provider, installing one when none is (or panicking when the application
/// enables two): a library must not change, or depend on, process globals. The
/// layers are kube's own (base URI, authentication with token refresh, extra headers).
pub(super) fn api_client(config: kube::Config) -> Result<kube::Client, String> {
    use kube::client::ConfigExt;

    if config.proxy_url.is_some() {
        return Err(unsupported("a proxy"));
    }
    let tls = tls_config(&config)?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = match &config.tls_server_name {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| format!("tls-server-name {name:?}: {e}"))?;
            https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => https,
    };
    let connection =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, kube::client::Body>(https.enable_http1().wrap_connector(http));
    let auth = config
        .auth_layer()
        .map_err(|e| format!("the Kubernetes credentials: {e}"))?;
    let headers = config
        .extra_headers_layer()
        .map_err(|e| format!("the Kubernetes configuration's headers: {e}"))?;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(auth)
        .layer(headers)
        .map_err(BoxError::from)
        .service(connection);
    Ok(kube::Client::new(service, config.default_namespace))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn unsupported(what: &str) -> String {
    format!(
        "the Kubernetes configuration uses {what}, which the built-in client does not \
         support: build a kube::Client yourself and give it to InstanceSlots::client"
    )
}

/// TLS to the API server: the cluster's CA as the only trust root, ring as the provider,
/// the kubeconfig's client certificate if it names one.
fn tls_config(config: &kube::Config) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    if config.accept_invalid_certs {
        return Err(unsupported("insecure-skip-tls-verify"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in config.root_cert.iter().flatten() {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| format!("the cluster's CA certificate: {e}"))?;
    }
    if roots.is_empty() && config.cluster_url.scheme_str() == Some("https") {
        return Err(unsupported("no certificate authority (system roots)"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let info = &config.auth_info;
    let has_identity = info.client_certificate.is_some() || info.client_certificate_data.is_some();
    if info.exec.is_some() && !has_identity && info.token.is_none() && info.token_file.is_none() {
        // (An exec plugin may answer with a client certificate, which needs kube's TLS.)
        return Err(unsupported("an exec credential plugin"));
    }
    if !has_identity {
        return Ok(builder.with_no_client_auth());
    }
    let certificate = pem_of(
        info.client_certificate_data.as_deref(),
        info.client_certificate.as_deref(),
        "client certificate",
    )?;
    let key_data = info
        .client_key_data
        .as_ref()
        .map(|k| secrecy::ExposeSecret::expose_secret(k).to_owned());
    let key = pem_of(
        key_data.as_deref(),
        info.client_key.as_deref(),
        "client key",
    )?;
    let chain = CertificateDer::pem_slice_iter(&certificate)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the client certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("the client key: {e}"))?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the client certificate: {e}"))
}

/// A kubeconfig PEM given inline (base64) or as a file.
fn pem_of(data: Option<&str>, file: Option<&str>, what: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    match (data, file) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("the kubeconfig's {what} data: {e}")),
        (None, Some(file)) => std::fs::read(file).map_err(|e| format!("the {what} {file}: {e}")),
        (None, None) => Err(format!("the kubeconfig names no {what}")),
    }
}
