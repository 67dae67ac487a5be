//! Reading a `postgres://` URL into a connection configuration: TLS mode, password source,
//! and errors that name the part that is wrong without ever printing the password.
//!
//! tokio-postgres parses the URL itself but knows only `sslmode=disable|prefer|require` and
//! never verifies a certificate on its own; libpq's `verify-ca`, `verify-full` and
//! `sslrootcert` are taken out of the URL here and become the rustls configuration:
//! - `disable`: plain TCP;
//! - `prefer` and `require`: TLS (required with `require`), the certificate not checked —
//!   libpq's meaning of these modes: encryption against a passive eavesdropper only; with a
//!   password, channel binding is required (SCRAM-SHA-256-PLUS), so an on-path attacker
//!   cannot take the password (nor log in with it);
//! - `verify-ca`: TLS, the certificate must chain to a trusted root (any host name);
//! - `verify-full`: TLS, chain and host name checked.
//!
//! Trusted roots are `sslrootcert` (a PEM file) when given, the system's otherwise. With no
//! `sslmode` in the URL, `PGSSLMODE` decides; without either, `verify-full`, except for hosts
//! on this machine (loopback, `localhost`, Unix sockets): `disable`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{ChannelBinding, SslMode};

use crate::ConnectError;

/// How the connection is encrypted and the server authenticated (the URL's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed database URL, ready to connect with. Its `Debug` never shows the password.
pub(crate) struct Parsed {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: TlsMode,
    pub(crate) root_cert: Option<PathBuf>,
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password (tested below).
        f.debug_struct("Parsed")
            .field("config", &self.config)
            .field("tls", &self.tls)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

/// Parses `url`. The password comes from the URL, else from `password_file` (read by
/// coffer-hsm's secret-file rules: a regular file only its owner may read, at most 1 KiB, one
/// line), else from `PGPASSWORD` (`env_password`); none is fine for trust
/// or certificate authentication. The TLS mode comes from the URL's `sslmode`, else from
/// `PGSSLMODE` (`env_sslmode`), else is [`default_mode`]. The environment is passed in so tests
/// need not touch the process's.
pub(crate) fn parse(
    url: &str,
    password_file: Option<&Path>,
    env_password: Option<String>,
    env_sslmode: Option<String>,
) -> Result<Parsed, ConnectError> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| {
            ConnectError::Url(
                "the scheme must be postgres:// or postgresql:// (key=value strings are not \
                 accepted either)"
                    .into(),
            )
        })?;
    // The user information first, up to the last '@' (a password may hold an unencoded '?',
    // '/' or '@'): it never reaches tokio-postgres' parser, so no error can echo it. An '@'
    // in a query value must then be percent-encoded.
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (user, url_password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let user = percent_encoding::percent_decode_str(user)
                .decode_utf8()
                .map_err(|_| ConnectError::Url("the user name is not UTF-8".into()))?
                .into_owned();
            let password =
                password.map(|p| percent_encoding::percent_decode_str(p).collect::<Vec<u8>>());
            (Some(user), password)
        }
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let mut tls = None;
    let mut root_cert = None;
    let mut kept: Vec<&str> = Vec::new();
    for pair in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| ConnectError::Url(format!("the value of `{key}` is not UTF-8")))?;
        match key {
            "sslmode" => tls = Some(tls_mode(&value, "sslmode")?),
            "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                return Err(ConnectError::Url(format!(
                    "`{key}` is not supported (client certificates are not)"
                )));
            }
            "channel_binding" => {
                return Err(ConnectError::Url(
                    "`channel_binding` is set by Coffer (required whenever a password is sent \
                     over TLS whose certificate is not checked)"
                        .into(),
                ));
            }
            _ => kept.push(pair),
        }
    }
    let mut rebuilt = format!("postgres://{base}");
    if !kept.is_empty() {
        rebuilt.push('?');
        rebuilt.push_str(&kept.join("&"));
    }
    let mut config = tokio_postgres::Config::from_str(&rebuilt)
        .map_err(|e| ConnectError::Url(crate::error_chain(&e)))?;
    if let Some(user) = user {
        config.user(user);
    }
    if let Some(password) = url_password.filter(|p| !p.is_empty()) {
        config.password(password);
    }
    if config.get_hosts().is_empty() {
        return Err(ConnectError::Url("it names no host".into()));
    }
    if config.get_user().is_none_or(str::is_empty) {
        return Err(ConnectError::Url(
            "it names no user (postgres://USER@HOST/DB)".into(),
        ));
    }
    if config.get_dbname().is_none_or(str::is_empty) {
        return Err(ConnectError::Url(
            "it names no database (postgres://USER@HOST/DB)".into(),
        ));
    }
    if config.get_password().is_none() {
        if let Some(path) = password_file {
            let text = coffer_hsm::read_secret_file(path, PASSWORD_FILE_MAX).map_err(|e| {
                ConnectError::Password(format!("the password file {} {e}", path.display()))
            })?;
            if text.contains('\n') {
                return Err(ConnectError::Password(format!(
                    "the password file {} holds more than one line",
                    path.display()
                )));
            }
            config.password(text.as_bytes());
        } else if let Some(password) = env_password.filter(|p| !p.is_empty()) {
            config.password(password);
        }
    }
    let tls = match tls {
        Some(mode) => mode,
        None => match env_sslmode.filter(|m| !m.is_empty()) {
            Some(mode) => tls_mode(&mode, "PGSSLMODE")?,
            None => default_mode(&config),
        },
    };
    config.ssl_mode(match tls {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
    });
    // Where the certificate is not checked, an on-path attacker can answer with any
    // certificate (or none, under prefer) and ask for the password in clear or as MD5; channel
    // binding (SCRAM-SHA-256-PLUS) refuses both and ties the login to this TLS session.
    if matches!(tls, TlsMode::Prefer | TlsMode::Require) && config.get_password().is_some() {
        config.channel_binding(ChannelBinding::Require);
    }
    if root_cert.is_some() && !matches!(tls, TlsMode::VerifyCa | TlsMode::VerifyFull) {
        return Err(ConnectError::Url(
            "sslrootcert needs sslmode=verify-ca or verify-full (other modes check no certificate)"
                .into(),
        ));
    }
    Ok(Parsed {
        config,
        tls,
        root_cert,
    })
}

/// The password file's size cap.
const PASSWORD_FILE_MAX: u64 = 1024;

fn tls_mode(value: &str, source: &str) -> Result<TlsMode, ConnectError> {
    Ok(match value {
        "disable" => TlsMode::Disable,
        "prefer" => TlsMode::Prefer,
        "require" => TlsMode::Require,
        "verify-ca" => TlsMode::VerifyCa,
        "verify-full" => TlsMode::VerifyFull,
        other => {
            return Err(ConnectError::Url(format!(
                "{source} `{other}` is not one of disable, prefer, require, verify-ca, \
                 verify-full"
            )));
        }
    })
}

/// The TLS mode when neither the URL nor `PGSSLMODE` names one: `disable` when every host is
/// on this machine (a loopback address, `localhost`, or a Unix socket directory: nothing on
/// the path to intercept but this machine's own processes), `verify-full` otherwise (an
/// on-path attacker could otherwise take the password).
pub(crate) fn default_mode(config: &tokio_postgres::Config) -> TlsMode {
    let local = config.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            let bare = name.trim_start_matches('[').trim_end_matches(']');
            name.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    });
    if local {
        TlsMode::Disable
    } else {
        TlsMode::VerifyFull
    }
}

/// The rustls configuration for `mode` (`None` for `disable`).
pub(crate) fn tls_config(
    mode: TlsMode,
    root_cert: Option<&Path>,
) -> Result<Option<rustls::ClientConfig>, ConnectError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Tls(format!("setting up TLS: {e}")))?;
    let config = match mode {
        TlsMode::Disable => return Ok(None),
        TlsMode::Prefer | TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth(),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let roots = Arc::new(roots(root_cert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| ConnectError::Tls(format!("setting up certificate checks: {e}")))?;
            if mode == TlsMode::VerifyFull {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName { webpki }))
                    .with_no_client_auth()
            }
        }
    };
    Ok(Some(config))
}

fn roots(root_cert: Option<&Path>) -> Result<RootCertStore, ConnectError> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    ConnectError::Tls(format!("reading sslrootcert {}: {e}", path.display()))
                })?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ConnectError::Tls(format!(
                    "sslrootcert {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(ConnectError::Tls(
                    "the system has no trusted root certificates; give sslrootcert=FILE".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// `prefer`/`require`: any certificate (libpq's meaning); the handshake's signatures are still
/// checked, so the session is bound to the certificate's key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the host name is not.
#[derive(Debug)]
struct AnyName {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const SECRET: &str = "s3cr3t-pa55";

    fn parse_ok(url: &str) -> Parsed {
        parse(url, None, None, None).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn parse_err(url: &str) -> String {
        let e = parse(url, None, None, None).expect_err(url);
        let text = format!("{e} {e:?}");
        assert!(!text.contains(SECRET), "{text}");
        text
    }

    #[test]
    fn reads_the_parts_and_the_modes() {
        let p = parse_ok(&format!(
            "postgres://coffer:{SECRET}@db.example:6543/coffer?sslmode=verify-full&connect_timeout=5"
        ));
        assert_eq!(p.tls, TlsMode::VerifyFull);
        assert_eq!(p.config.get_user(), Some("coffer"));
        assert_eq!(p.config.get_dbname(), Some("coffer"));
        assert_eq!(p.config.get_ports(), &[6543]);
        assert_eq!(p.config.get_password(), Some(SECRET.as_bytes()));
        assert_eq!(p.config.get_ssl_mode(), SslMode::Require);
        let debug = format!("{p:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        for (mode, want) in [
            ("disable", TlsMode::Disable),
            ("prefer", TlsMode::Prefer),
            ("require", TlsMode::Require),
            ("verify-ca", TlsMode::VerifyCa),
        ] {
            let p = parse_ok(&format!("postgresql://u@h/d?sslmode={mode}"));
            assert_eq!(p.tls, want);
        }
    }

    #[test]
    fn without_sslmode_remote_hosts_verify_and_local_ones_do_not_encrypt() {
        assert_eq!(
            parse_ok("postgres://u@db.example/d").tls,
            TlsMode::VerifyFull
        );
        assert_eq!(parse_ok("postgres://u@10.0.0.5/d").tls, TlsMode::VerifyFull);
        assert_eq!(
            parse_ok("postgres://u@127.0.0.1,db.example/d").tls,
            TlsMode::VerifyFull,
            "every host must be local"
        );
        for local in [
            "127.0.0.1",
            "127.1.2.3",
            "localhost",
            "[::1]",
            "%2Fvar%2Frun%2Fpostgresql",
        ] {
            let url = format!("postgres://u@{local}/d");
            assert_eq!(parse_ok(&url).tls, TlsMode::Disable, "{url}");
        }
        // PGSSLMODE decides when the URL does not, and is checked like the URL's.
        let p = parse(
            "postgres://u@db.example/d",
            None,
            None,
            Some("require".into()),
        )
        .unwrap();
        assert_eq!(p.tls, TlsMode::Require);
        let p = parse(
            "postgres://u@db.example/d?sslmode=verify-ca",
            None,
            None,
            Some("disable".into()),
        )
        .unwrap();
        assert_eq!(p.tls, TlsMode::VerifyCa);
        let e = parse("postgres://u@h/d", None, None, Some("sometimes".into())).unwrap_err();
        assert!(e.to_string().contains("PGSSLMODE"), "{e}");
    }

    #[test]
    fn a_password_over_unchecked_tls_requires_channel_binding() {
        for mode in ["prefer", "require"] {
            let p = parse_ok(&format!("postgres://u:{SECRET}@h/d?sslmode={mode}"));
            assert_eq!(
                p.config.get_channel_binding(),
                ChannelBinding::Require,
                "{mode}"
            );
            let p = parse_ok(&format!("postgres://u@h/d?sslmode={mode}"));
            assert_ne!(
                p.config.get_channel_binding(),
                ChannelBinding::Require,
                "{mode}"
            );
        }
        let p = parse(
            "postgres://u@h/d?sslmode=require",
            None,
            Some(SECRET.into()),
            None,
        )
        .unwrap();
        assert_eq!(p.config.get_channel_binding(), ChannelBinding::Require);
        for mode in ["verify-ca", "verify-full", "disable"] {
            let p = parse_ok(&format!("postgres://u:{SECRET}@h/d?sslmode={mode}"));
            assert_ne!(
                p.config.get_channel_binding(),
                ChannelBinding::Require,
                "{mode}"
            );
        }
        let text = parse_err(&format!(
            "postgres://u:{SECRET}@h/d?sslmode=require&channel_binding=disable"
        ));
        assert!(text.contains("channel_binding"), "{text}");
    }

    #[test]
    fn a_password_with_url_delimiters_is_read_and_never_echoed() {
        let odd = "p?w/d@x:y";
        let p = parse_ok(&format!(
            "postgres://coffer:{odd}@db.example:6543/coffer?sslmode=disable"
        ));
        assert_eq!(p.config.get_password(), Some(odd.as_bytes()));
        assert_eq!(p.config.get_user(), Some("coffer"));
        assert_eq!(p.config.get_dbname(), Some("coffer"));
        assert_eq!(p.config.get_ports(), &[6543]);
        assert_eq!(p.tls, TlsMode::Disable);
        let p = parse_ok("postgres://c%40d:p%3Fw@h/d");
        assert_eq!(p.config.get_user(), Some("c@d"));
        assert_eq!(p.config.get_password(), Some(&b"p?w"[..]));
        // Errors after the password never print it, whatever it holds.
        for url in [
            format!("postgres://u:{SECRET}?x=1@h/d?bogus=1"),
            format!("postgres://u:{SECRET}?sslmode=x@h:notaport/d"),
            format!("postgres://u:{SECRET}/x@h/d?sslmode=nope"),
        ] {
            parse_err(&url);
        }
    }

    #[test]
    fn bad_urls_name_the_part_and_never_the_password() {
        let cases = [
            (format!("mysql://u:{SECRET}@h/d"), "scheme"),
            (format!("host=h user=u password={SECRET}"), "scheme"),
            (
                format!("postgres://u:{SECRET}@h/d?sslmode=sometimes"),
                "sslmode",
            ),
            (format!("postgres://u:{SECRET}@h:notaport/d"), "port"),
            (format!("postgres://u:{SECRET}@h/d?bogus=1"), "bogus"),
            (format!("postgres://u:{SECRET}@h/d?sslcert=/x"), "sslcert"),
            (format!("postgres://u:{SECRET}@/d"), "host"),
            (format!("postgres://:{SECRET}@h/d"), "user"),
            (format!("postgres://u:{SECRET}@h"), "database"),
            (
                format!("postgres://u:{SECRET}@h/d?sslmode=require&sslrootcert=/x"),
                "sslrootcert",
            ),
        ];
        for (url, part) in cases {
            let text = parse_err(&url);
            assert!(text.contains(part), "{url}: {text} should name {part}");
        }
    }

    #[test]
    fn the_password_comes_from_the_url_then_the_file_then_the_environment() {
        let dir = std::env::temp_dir().join(format!("coffer-pg-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = parse(
            "postgres://u:from-url@h/d",
            Some(&file),
            Some("from-env".into()),
            None,
        )
        .unwrap();
        assert_eq!(p.config.get_password(), Some(&b"from-url"[..]));
        let p = parse(
            "postgres://u@h/d",
            Some(&file),
            Some("from-env".into()),
            None,
        )
        .unwrap();
        assert_eq!(p.config.get_password(), Some(&b"from-file"[..]));
        let p = parse("postgres://u@h/d", None, Some("from-env".into()), None).unwrap();
        assert_eq!(p.config.get_password(), Some(&b"from-env"[..]));
        let p = parse("postgres://u@h/d", None, None, None).unwrap();
        assert_eq!(p.config.get_password(), None);
        let missing = dir.join("missing");
        let e = parse("postgres://u@h/d", Some(&missing), None, None).unwrap_err();
        assert!(e.to_string().contains("password file"), "{e}");
        std::fs::write(&file, "\n").unwrap();
        let e = parse("postgres://u@h/d", Some(&file), None, None).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        // The secret-file rules: not readable by others, one line, small, no FIFO.
        std::fs::write(&file, "pw\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = parse("postgres://u@h/d", Some(&file), None, None).unwrap_err();
        assert!(e.to_string().contains("644"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&file, "pw\nsecond\n").unwrap();
        let e = parse("postgres://u@h/d", Some(&file), None, None).unwrap_err();
        assert!(e.to_string().contains("more than one line"), "{e}");
        assert!(!e.to_string().contains("second"), "{e}");
        std::fs::write(&file, "x".repeat(5000)).unwrap();
        let e = parse("postgres://u@h/d", Some(&file), None, None).unwrap_err();
        assert!(e.to_string().contains("over"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_configurations_build() {
        assert!(tls_config(TlsMode::Disable, None).unwrap().is_none());
        assert!(tls_config(TlsMode::Require, None).unwrap().is_some());
        let e =
            tls_config(TlsMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
    }
}
