//! HTTP clients (http checks, the LLM advisor, the CLI). reqwest verifies https against the
//! system's CA certificates; a machine without them (a minimal image with no
//! `ca-certificates`) makes building a client fail — which must not take down plain-http
//! checks, a local model server on http://127.0.0.1, or `vigil status`. Without certificates
//! the client still speaks http, and https fails with a clear error at each request.

use std::sync::Once;

/// A client builder that says who is asking (`vigil/VERSION`), for `build`.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
}

/// The client `make` describes; if it cannot be built with the system's CA certificates (or
/// anything else about TLS), the same without any (http only).
pub fn build(make: impl Fn() -> reqwest::ClientBuilder) -> reqwest::Client {
    let e = match make().build() {
        Ok(client) => return client,
        Err(e) => e,
    };
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        tracing::warn!(
            "cannot set up https ({}): https URLs will fail; plain http works (is ca-certificates installed?)",
            crate::errors::chain(&e)
        )
    });
    let no_roots = || make().tls_certs_only(std::iter::empty());
    no_roots()
        .build()
        // Something besides TLS (a proxy setting from the environment): without it.
        .or_else(|_| no_roots().no_proxy().build())
        .unwrap_or_else(|_| {
            // With no roots and no proxy nothing is left to fail.
            reqwest::Client::builder()
                .tls_certs_only(std::iter::empty())
                .no_proxy()
                .build()
                .expect("a reqwest client with no TLS roots and no proxy")
        })
}
