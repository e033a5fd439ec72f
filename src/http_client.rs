//! The outbound HTTP client every capability builds on (token introspection, the
//! issuer's key set, event webhooks): rustls on aws-lc-rs with the webpki roots, the
//! same TLS stack as the Redis connections, and no redirects unless a caller allows
//! them.

use std::sync::{Arc, OnceLock};

/// A client builder with our TLS settings; callers add their timeouts.
pub(crate) fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().use_preconfigured_tls(tls_config().clone())
}

/// TLS 1.2 and 1.3 with aws-lc-rs and the webpki roots, built once per process.
fn tls_config() -> &'static rustls::ClientConfig {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
    })
}
