//! The SMTP server setting: lettre's URL form, parsed strictly, and the
//! password kept out of every printout.
//!
//! Why not hand the URL to lettre's `from_url`: it silently ignores unknown
//! query keys (`?starttls=1` means plain text), takes the password only from
//! the URL itself (where `ps` shows it to every user), skips the login when
//! the URL names a user without a password, and its doc table says plain
//! `smtp://` defaults to port 587 while its code uses 25. Here the same URL
//! form is parsed into [`SmtpSettings`] with those cases made errors, and the
//! transport is built from the parts (see `send.rs`). Defaults follow lettre's
//! code: `smtp://` port 25, `?tls=required|opportunistic` port 587,
//! `smtps://` port 465.

use std::fmt;

use reqwest::Url;

use super::config::{AlertConfigError, PASSWORD_ENV};

/// A password. `Debug` and `Display` print `***`; only [`Secret::expose`]
/// gives the text, and only the SMTP login should call it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the SMTP connection is protected (lettre's `Tls`, by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// `smtp://` — plain text; for a relay on this machine or a trusted LAN.
    None,
    /// `smtp://...?tls=opportunistic` — STARTTLS if offered, else plain.
    Opportunistic,
    /// `smtp://...?tls=required` — STARTTLS, or fail.
    Required,
    /// `smtps://` — TLS from the first byte (implicit TLS).
    Wrapper,
}

impl TlsMode {
    /// Words for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            TlsMode::None => "smtp://, no TLS",
            TlsMode::Opportunistic => "smtp:// with STARTTLS if offered",
            TlsMode::Required => "smtp:// with STARTTLS required",
            TlsMode::Wrapper => "smtps://, implicit TLS",
        }
    }
}

/// Where and how to hand mail over.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// Name sent in EHLO (the URL's path); `None` = this machine's name.
    pub hello_name: Option<String>,
}

impl SmtpSettings {
    /// Parse lettre's URL form; see the module doc for what is refused.
    pub fn parse(raw: &str, password: Option<String>) -> Result<SmtpSettings, AlertConfigError> {
        let shown = redact_url(raw);
        let bad = |why: &str| AlertConfigError::SmtpUrl {
            url: shown.clone(),
            why: why.to_owned(),
        };
        let url =
            Url::parse(raw.trim()).map_err(|e| bad(&format!("{e} (write smtp://host:port)")))?;
        if url.password().is_some() {
            return Err(AlertConfigError::PasswordInUrl { url: shown });
        }
        let tls = tls_mode(&url).map_err(|why| bad(&why))?;
        // An IPv6 host comes bracketed (`[::1]`); lettre wants it bare.
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            _ => return Err(bad("no host (write smtp://host:port)")),
        };
        let port = url.port().unwrap_or(match tls {
            TlsMode::None => 25,
            TlsMode::Opportunistic | TlsMode::Required => 587,
            TlsMode::Wrapper => 465,
        });
        let user = match url.username() {
            "" => None,
            u => Some(percent_decode(u).ok_or_else(|| bad("the user name is not valid UTF-8"))?),
        };
        let path = url.path().trim_matches('/');
        let hello_name = (!path.is_empty()).then(|| path.to_owned());
        let password = password.map(Secret::new);
        check_login(&host, tls, user.as_deref(), password.is_some()).map_err(|why| bad(&why))?;
        Ok(SmtpSettings {
            host,
            port,
            tls,
            user,
            password,
            hello_name,
        })
    }
}

/// Printed in lettre's URL form, never with the password.
impl fmt::Display for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls == TlsMode::Wrapper {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{host}:{}", self.port)?;
        if let Some(h) = &self.hello_name {
            write!(f, "/{h}")?;
        }
        match self.tls {
            TlsMode::Required => f.write_str("?tls=required"),
            TlsMode::Opportunistic => f.write_str("?tls=opportunistic"),
            TlsMode::None | TlsMode::Wrapper => Ok(()),
        }
    }
}

fn tls_mode(url: &Url) -> Result<TlsMode, String> {
    let mut tls = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "tls" if tls.is_none() => tls = Some(v.into_owned()),
            "tls" => return Err("'tls' is given twice".to_owned()),
            other => {
                return Err(format!(
                    "unknown parameter '{other}': the only one is tls=required or tls=opportunistic"
                ));
            }
        }
    }
    match (url.scheme(), tls.as_deref()) {
        ("smtp", None) => Ok(TlsMode::None),
        ("smtp", Some("required")) => Ok(TlsMode::Required),
        ("smtp", Some("opportunistic")) => Ok(TlsMode::Opportunistic),
        ("smtp", Some(v)) => Err(format!(
            "unknown tls={v}: use tls=required or tls=opportunistic"
        )),
        ("smtps", None) => Ok(TlsMode::Wrapper),
        ("smtps", Some(_)) => {
            Err("smtps:// is always implicit TLS: drop the ?tls= part".to_owned())
        }
        (s, _) => Err(format!(
            "unknown scheme '{s}': use smtp:// (add ?tls=required for STARTTLS) or smtps://"
        )),
    }
}

/// A login needs both halves, and its password must not cross the network
/// in clear text.
fn check_login(host: &str, tls: TlsMode, user: Option<&str>, password: bool) -> Result<(), String> {
    match (user, password) {
        (None, false) => Ok(()),
        (None, true) => Err(format!(
            "an SMTP password is set ({PASSWORD_ENV} or a password file) but the URL names no user: \
             write smtp://USER@host"
        )),
        (Some(u), false) => Err(format!(
            "the URL names user '{u}' but no password is set: put it in {PASSWORD_ENV} or a password file"
        )),
        (Some(_), true) => {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            if matches!(tls, TlsMode::Required | TlsMode::Wrapper) || loopback {
                Ok(())
            } else {
                Err(format!(
                    "a login over {} would send the password in clear text: use ?tls=required or smtps://",
                    tls.describe()
                ))
            }
        }
    }
}

/// `scheme://user:secret@host` -> `scheme://user:***@host`, working on the
/// raw text so that even an unparsable URL is shown without its password.
pub(super) fn redact_url(raw: &str) -> String {
    let Some(start) = raw.find("://").map(|i| i + 3) else {
        return raw.to_owned();
    };
    let rest = &raw[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let Some(at) = authority.rfind('@') else {
        return raw.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}{}:***{}", &raw[..start], &userinfo[..colon], &rest[at..]),
        None => raw.to_owned(),
    }
}

/// Decode `%XX` escapes (URL user names may carry `%40` for `@`).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "hunter2-very-secret";

    fn parse(url: &str, pw: Option<&str>) -> Result<SmtpSettings, AlertConfigError> {
        SmtpSettings::parse(url, pw.map(str::to_owned))
    }

    #[test]
    fn url_forms_and_default_ports_follow_lettre() {
        let cases = [
            ("smtp://relay.lan", TlsMode::None, 25),
            ("smtp://relay.lan:2525", TlsMode::None, 2525),
            ("smtp://relay.lan?tls=required", TlsMode::Required, 587),
            (
                "smtp://relay.lan?tls=opportunistic",
                TlsMode::Opportunistic,
                587,
            ),
            ("smtps://relay.lan", TlsMode::Wrapper, 465),
            ("smtps://relay.lan:2465", TlsMode::Wrapper, 2465),
        ];
        for (url, tls, port) in cases {
            let s = parse(url, None).unwrap();
            assert_eq!(
                (s.host.as_str(), s.tls, s.port),
                ("relay.lan", tls, port),
                "{url}"
            );
        }
        let s = parse("smtp://[::1]:2525/farm.studio", None).unwrap();
        assert_eq!(
            (s.host.as_str(), s.hello_name.as_deref()),
            ("::1", Some("farm.studio"))
        );
        assert_eq!(s.to_string(), "smtp://[::1]:2525/farm.studio");
    }

    #[test]
    fn risky_or_mistyped_urls_are_refused() {
        let why = |url: &str| parse(url, None).unwrap_err().to_string();
        assert!(why("smtp://h?starttls=1").contains("'starttls'"));
        assert!(why("smtp://h?tls=require").contains("tls=require:"));
        assert!(why("smtps://h?tls=required").contains("drop the ?tls="));
        assert!(why("http://h").contains("'http'"));
        assert!(why("relay.lan:25").contains("relay.lan:25"));
        assert!(why("smtp://").contains("smtp://"));
        assert!(why("smtp://farm@h?tls=required").contains("no password"));
        assert!(
            parse("smtp://h?tls=required", Some(PW))
                .unwrap_err()
                .to_string()
                .contains("no user")
        );
        let plain = parse("smtp://farm@mail.lan", Some(PW))
            .unwrap_err()
            .to_string();
        assert!(plain.contains("clear text"), "{plain}");
        // A login over plain text to this machine's own relay is fine.
        assert!(parse("smtp://farm@127.0.0.1:2525", Some(PW)).is_ok());
    }

    #[test]
    fn the_password_never_shows() {
        let s = parse("smtps://farm%40studio@mail.lan", Some(PW)).unwrap();
        assert_eq!(s.user.as_deref(), Some("farm@studio"));
        assert_eq!(s.password.as_ref().map(Secret::expose), Some(PW));
        for shown in [format!("{s:?}"), s.to_string(), format!("{:?}", s.password)] {
            assert!(!shown.contains(PW), "{shown}");
        }
        assert!(format!("{s:?}").contains("***"));
        // A password in the URL is refused, and the refusal does not repeat it.
        for url in [
            format!("smtp://farm:{PW}@mail.lan"),
            format!("smtp://farm:{PW}@bad host"),
        ] {
            let e = parse(&url, None).unwrap_err().to_string();
            assert!(!e.contains(PW) && e.contains("farm:***@"), "{e}");
        }
    }

    #[test]
    fn redaction_works_on_raw_text() {
        assert_eq!(redact_url("smtp://u:p@h:1/x?y"), "smtp://u:***@h:1/x?y");
        assert_eq!(redact_url("smtp://u:p@q@h"), "smtp://u:***@h");
        assert_eq!(redact_url("smtp://u@h"), "smtp://u@h");
        assert_eq!(redact_url("smtp://h/a@b"), "smtp://h/a@b");
        assert_eq!(redact_url("no scheme"), "no scheme");
        assert_eq!(percent_decode("a%40b%zz%4").as_deref(), Some("a@b%zz%4"));
    }
}
