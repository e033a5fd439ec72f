//! When the Redis server's TLS certificate expires.
//!
//! A TLS handshake reads the certificate the server presents; it accepts any certificate
//! (an expired one is what this looks for) and sends nothing after the handshake, so no
//! credential or command goes to a server that was not verified.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Reads certificates without judging them; signatures are still checked.
#[derive(Debug)]
struct ReadOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for ReadOnly {
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The end of validity (`notAfter`) of the certificate `host:port` presents. Blocking:
/// run it on a blocking thread.
pub(super) fn not_after(host: &str, port: u16, timeout: Duration) -> Result<SystemTime, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReadOnly(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    // A server that wants a client certificate ends the handshake after sending its own;
    // by then the certificate has been read.
    while conn.is_handshaking() && conn.complete_io(&mut tcp).is_ok() {}
    let cert = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("the server presented no certificate")?;
    parse_not_after(cert.as_ref()).ok_or_else(|| "unreadable certificate".into())
}

/// `tbsCertificate.validity.notAfter` of a DER certificate (RFC 5280 §4.1).
fn parse_not_after(der: &[u8]) -> Option<SystemTime> {
    use crate::der::element;
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    let (tag, _, mut rest) = element(tbs)?;
    if tag == 0xa0 {
        // Explicit version; the serial number follows.
        rest = element(rest)?.2;
    }
    let (_, _signature, rest) = element(rest)?;
    let (_, _issuer, rest) = element(rest)?;
    let (_, validity, _) = element(rest)?;
    let (_, _not_before, rest) = element(validity)?;
    let (tag, text, _) = element(rest)?;
    let text = std::str::from_utf8(text).ok()?;
    let digits = |s: &str| s.parse::<i32>().ok();
    // UTCTime YYMMDDHHMMSSZ (years 1950–2049), GeneralizedTime YYYYMMDDHHMMSSZ.
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(text.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (digits(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    let field = |at: usize| digits(rest.get(at..at + 2)?);
    let month = time::Month::try_from(u8::try_from(field(0)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(field(2)?).ok()?).ok()?;
    let at = date
        .with_hms(
            u8::try_from(field(4)?).ok()?,
            u8::try_from(field(6)?).ok()?,
            u8::try_from(field(8)?).ok()?,
        )
        .ok()?
        .assume_utc();
    Some(SystemTime::from(at))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    #[test]
    fn not_after_is_read_from_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["redis.test".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let at = super::parse_not_after(cert.der()).unwrap();
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_941_840_000);
        assert_eq!(at, expected, "2031-07-15T00:00:00Z");
        assert_eq!(super::parse_not_after(b"\x30\x03\x02\x01"), None);
    }
}
