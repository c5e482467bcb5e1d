//! TLS termination for `listen ... ssl`: rustls with the ring provider, the certificate
//! chosen by SNI among the servers on that address (exact name, then wildcard, else the
//! default server's), ALPN `h2` when a listen on it says `http2`.

use std::net::SocketAddr;
use std::sync::Arc;

use fulcrum_nginx_conf::model::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::site::VServer;

fn load(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot load certificate \"{cert}\": {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot load certificate \"{cert}\": {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "cannot load certificate \"{cert}\": no certificate in it"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot load certificate key \"{key}\": {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("certificate key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}

/// Certificates by server name, for one listening address.
#[derive(Debug)]
struct BySni {
    names: Vec<(ServerName, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(sni) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(self.default.clone());
        };
        let exact = self
            .names
            .iter()
            .find(|(n, _)| matches!(n, ServerName::Exact(e) if e.eq_ignore_ascii_case(&sni)));
        let wildcard = || {
            self.names.iter().find(|(n, _)| match n {
                ServerName::Wildcard(w) => {
                    let w = w.to_ascii_lowercase();
                    if let Some(s) = w.strip_prefix("*.") {
                        sni.ends_with(&format!(".{s}"))
                    } else if let Some(s) = w.strip_prefix('.') {
                        sni == s || sni.ends_with(&w)
                    } else if let Some(p) = w.strip_suffix(".*") {
                        sni.starts_with(&format!("{p}."))
                    } else {
                        false
                    }
                }
                ServerName::Regex(_) | ServerName::Exact(_) => false,
            })
        };
        Some(
            exact
                .or_else(wildcard)
                .map(|(_, k)| k.clone())
                .unwrap_or_else(|| self.default.clone()),
        )
    }
}

/// The TLS configuration for `bind`, if any server listening there says `ssl`.
/// `servers`' certificate paths, when relative, are relative to `prefix` (nginx's conf
/// prefix, the main file's directory).
pub fn config(
    servers: &[VServer],
    bind: SocketAddr,
    prefix: Option<&std::path::Path>,
) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let full = |p: &str| match prefix {
        Some(dir) if std::path::Path::new(p).is_relative() => {
            dir.join(p).to_string_lossy().into_owned()
        }
        _ => p.to_string(),
    };
    let on_bind = |a: &Option<std::net::IpAddr>, p: u16| {
        p == bind.port() && (bind.ip().is_unspecified() || a.is_none_or(|a| a == bind.ip()))
    };
    let tls: Vec<&VServer> = servers
        .iter()
        .filter(|s| s.ssl_listens.iter().any(|(a, p)| on_bind(a, *p)))
        .collect();
    if tls.is_empty() {
        return Ok(None);
    }
    let mut names = Vec::new();
    let mut default = None;
    let mut explicit = false;
    let mut h2 = false;
    for s in &tls {
        let Some((cert, key)) = &s.cert else {
            return Err(format!(
                "no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive of server \"{}\"",
                s.name()
            ));
        };
        let k = load(&full(cert), &full(key))?;
        for n in &s.names {
            names.push((n.clone(), k.clone()));
        }
        // The default_server's certificate for clients without SNI, else the first's.
        let is_default = s.listens.iter().any(|(a, p, d)| *d && on_bind(a, *p));
        if (is_default && !explicit) || default.is_none() {
            default = Some(k.clone());
            explicit |= is_default;
        }
        h2 |= s.http2;
    }
    let default = default.expect("at least one server");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { names, default }));
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Some(Arc::new(config)))
}

/// Adds TLS to every bound address that has `ssl` listens.
pub fn attach(
    site: &mut crate::site::Site,
    conf_prefix: Option<&std::path::Path>,
) -> Result<(), String> {
    for b in site.binds() {
        if let Some(c) = config(&site.servers, b, conf_prefix)? {
            site.tls.insert(b, c);
        }
    }
    Ok(())
}
