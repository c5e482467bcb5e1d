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
    let mut protocols = None;
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
            protocols = s.ssl_protocols.clone();
            explicit |= is_default;
        }
        h2 |= s.http2;
    }
    let default = default.expect("at least one server");
    // The default server's ssl_protocols (the handshake starts in its context, as in
    // nginx): of them, the TLS 1.2 and 1.3 that rustls speaks; both when unset.
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match &protocols {
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        Some(list) => {
            let mut v: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
            if list.iter().any(|p| p == "TLSv1.3") {
                v.push(&rustls::version::TLS13);
            }
            if list.iter().any(|p| p == "TLSv1.2") {
                v.push(&rustls::version::TLS12);
            }
            if v.is_empty() {
                return Err(format!(
                    "ssl_protocols {} names no protocol fulcrum speaks (TLSv1.2, TLSv1.3)",
                    list.join(" ")
                ));
            }
            v
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
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

// === TLS to upstreams ===

/// A name usable as a certificate's subject: a DNS name, else an IP address.
pub(crate) fn upstream_name(name: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    let host = if let Some(rest) = name.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        name.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|c| c.is_ascii_digit()))
            .map_or(name, |(h, _)| h)
    };
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(rustls::pki_types::ServerName::IpAddress(ip.into()));
    }
    rustls::pki_types::ServerName::try_from(host.to_string()).ok()
}

/// proxy_ssl_verify's verifier, with nginx's proxy_ssl_verify_depth as OpenSSL counts
/// it: the intermediates between the peer's certificate and the trusted one (those it
/// sends that are not trusted themselves) are at most `depth`.
#[derive(Debug)]
struct Depth {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    trusted: Vec<CertificateDer<'static>>,
    depth: usize,
}

impl rustls::client::danger::ServerCertVerifier for Depth {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let between = intermediates
            .iter()
            .filter(|c| !self.trusted.iter().any(|t| t.as_ref() == c.as_ref()))
            .count();
        if between > self.depth {
            return Err(rustls::Error::General(format!(
                "certificate chain too long ({between} intermediates, proxy_ssl_verify_depth {})",
                self.depth
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client configuration for `ssl` (paths relative to the conf prefix), with
/// nginx's errors for what it lacks.
fn client_config(
    ssl: &crate::site::UpstreamSsl,
    prefix: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let full = |p: &str| match prefix {
        Some(pre) if !p.starts_with('/') => pre.join(p).display().to_string(),
        _ => p.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if ssl.verify {
        let Some(trusted) = &ssl.trusted else {
            return Err("no proxy_ssl_trusted_certificate for proxy_ssl_verify".into());
        };
        let path = full(trusted);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(|i| i.collect())
            .map_err(|e| format!("SSL_CTX_load_verify_locations(\"{path}\") failed ({e})"))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in &certs {
            roots
                .add(c.clone())
                .map_err(|e| format!("SSL_CTX_load_verify_locations(\"{path}\") failed ({e})"))?;
        }
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("proxy_ssl_trusted_certificate \"{path}\": {e}"))?;
        Arc::new(Depth {
            inner,
            trusted: certs,
            depth: ssl.depth as usize,
        })
    } else {
        fulcrum_checkers::tls::accept_any(provider.clone())
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&ssl.cert, &ssl.key) {
        (Some(cert), Some(key)) => {
            let path = full(cert);
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|i| i.collect())
                .map_err(|e| format!("cannot load certificate \"{path}\": {e}"))?;
            builder
                .with_client_auth_cert(chain, load_key(&full(key))?)
                .map_err(|e| format!("proxy_ssl_certificate \"{cert}\": {e}"))?
        }
        (Some(cert), None) => {
            return Err(format!(
                "no \"proxy_ssl_certificate_key\" is defined for certificate \"{cert}\""
            ))
        }
        _ => builder.with_no_client_auth(),
    };
    config.enable_sni = ssl.server_name;
    if !ssl.session_reuse {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(config))
}

fn load_key(key: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot load certificate key \"{key}\": {e}"))
}

/// Builds the upstream TLS configuration of every location that proxies to https (or
/// to a URL with variables), one per distinct setting.
pub fn attach_upstream(
    site: &mut crate::site::Site,
    prefix: Option<&std::path::Path>,
) -> Result<(), String> {
    fn https(target: &Option<crate::site::Target>) -> bool {
        match target {
            Some(crate::site::Target::Fixed { https, .. }) => *https,
            Some(crate::site::Target::Dynamic(_)) => true,
            None => false,
        }
    }
    fn walk(
        locs: &mut [crate::site::Loc],
        cache: &mut Vec<(crate::site::UpstreamSsl, Arc<rustls::ClientConfig>)>,
        prefix: Option<&std::path::Path>,
    ) -> Result<(), String> {
        for l in locs {
            one(l, cache, prefix)?;
            walk(&mut l.children, cache, prefix)?;
        }
        Ok(())
    }
    fn one(
        l: &mut crate::site::Loc,
        cache: &mut Vec<(crate::site::UpstreamSsl, Arc<rustls::ClientConfig>)>,
        prefix: Option<&std::path::Path>,
    ) -> Result<(), String> {
        if https(&l.target) {
            let mut key = l.settings.ssl.clone();
            key.name = None;
            let config = match cache.iter().find(|(k, _)| *k == key) {
                Some((_, c)) => c.clone(),
                None => {
                    let c = client_config(&key, prefix)?;
                    cache.push((key, c.clone()));
                    c
                }
            };
            l.settings.ssl_config = Some(config);
        }
        // The locations `if` makes inside this one.
        ops(&mut l.ops, cache, prefix)
    }
    fn ops(
        list: &mut [crate::rewrite::Op],
        cache: &mut Vec<(crate::site::UpstreamSsl, Arc<rustls::ClientConfig>)>,
        prefix: Option<&std::path::Path>,
    ) -> Result<(), String> {
        for op in list {
            if let crate::rewrite::Op::If {
                ops: inner, loc, ..
            } = op
            {
                if let Some(l) = loc {
                    one(l, cache, prefix)?;
                }
                ops(inner, cache, prefix)?;
            }
        }
        Ok(())
    }
    let mut cache = Vec::new();
    for s in &mut site.servers {
        walk(&mut s.locations, &mut cache, prefix)?;
        walk(&mut s.named, &mut cache, prefix)?;
    }
    Ok(())
}
