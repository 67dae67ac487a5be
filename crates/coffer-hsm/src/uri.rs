//! PKCS#11 URIs (RFC 7512): which module, token and key object the KEK is.
//!
//! `pkcs11:token=coffer;object=coffer-kek?module-path=/usr/lib/softhsm/libsofthsm2.so`
//!
//! Path attributes (`;`-separated) name the token and the object; query attributes
//! (`&`-separated) name the module and where the PIN comes from. Values are percent-decoded.
//! The parser is strict: an attribute given twice, an attribute it does not know and one it
//! knows but does not support are refused by name, so a URI never silently selects something
//! other than what its author meant. Error messages name attributes, never their values: a
//! refused `pin-value` must not end up in a log.

use std::fmt;
use std::path::PathBuf;

/// A parsed PKCS#11 URI, as far as a KEK needs one. Holds no secret: a PIN in the URI
/// (`pin-value`) is refused at parse time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token`: the token's label.
    pub token: Option<String>,
    /// `manufacturer`: the token's manufacturer id.
    pub manufacturer: Option<String>,
    /// `serial`: the token's serial number.
    pub serial: Option<String>,
    /// `model`: the token's model.
    pub model: Option<String>,
    /// `slot-id`: the slot the token sits in.
    pub slot_id: Option<u64>,
    /// `object`: the key's label (CKA_LABEL). Required.
    pub object: String,
    /// `id`: the key's CKA_ID, raw bytes.
    pub id: Option<Vec<u8>>,
    /// `module-path`: the PKCS#11 module (shared library). Required.
    pub module_path: PathBuf,
    /// `pin-source`: a file holding the user PIN (`file:/abs/path`, or an absolute path).
    pub pin_source: Option<PathBuf>,
}

/// Why a URI was refused. The message names the attribute and the fix, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PKCS#11 URI: {0}")]
pub struct UriError(pub String);

fn err(message: impl Into<String>) -> UriError {
    UriError(message.into())
}

const SCHEME: &str = "pkcs11:";

impl Pkcs11Uri {
    /// Parses `text`. See the module documentation for what is accepted.
    pub fn parse(text: &str) -> Result<Pkcs11Uri, UriError> {
        Self::parse_or(text, None)
    }

    /// Parses `text`, which may leave out `module-path`: then `module` is meant (an account
    /// key's URI, whose module can only be the instance KEK's). Otherwise as [`Pkcs11Uri::parse`].
    pub fn parse_with_default_module(
        text: &str,
        module: &std::path::Path,
    ) -> Result<Pkcs11Uri, UriError> {
        Self::parse_or(text, Some(module))
    }

    fn parse_or(
        text: &str,
        default_module: Option<&std::path::Path>,
    ) -> Result<Pkcs11Uri, UriError> {
        let rest = match text.get(..SCHEME.len()) {
            Some(scheme) if scheme.eq_ignore_ascii_case(SCHEME) => &text[SCHEME.len()..],
            _ => return Err(err("it must start with `pkcs11:`")),
        };
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        if rest.contains('#') {
            return Err(err(
                "a PKCS#11 URI has no fragment (`#`); percent-encode it as %23",
            ));
        }
        let mut b = Builder::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = split_attr(attr)?;
            b.path_attr(name, value)?;
        }
        for attr in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, value) = split_attr(attr)?;
            b.query_attr(name, value)?;
        }
        if b.module_path.is_none() {
            b.module_path = default_module.map(std::path::Path::to_path_buf);
        }
        b.finish()
    }

    /// Whether a token with these properties is the one this URI names. Fields are compared
    /// as PKCS#11 reports them, with the blank padding of its fixed-width fields removed.
    pub fn matches_token(&self, token: &TokenFields<'_>) -> bool {
        let same = |want: &Option<String>, have: &str| {
            want.as_deref()
                .is_none_or(|want| want == have.trim_end_matches([' ', '\0']))
        };
        same(&self.token, token.label)
            && same(&self.manufacturer, token.manufacturer)
            && same(&self.serial, token.serial)
            && same(&self.model, token.model)
            && self.slot_id.is_none_or(|id| id == token.slot_id)
    }

    /// The token as the URI names it, for messages: `token "coffer"` or `token serial "…"`.
    pub fn token_description(&self) -> String {
        match (&self.token, &self.serial) {
            (Some(label), _) => format!("token {label:?}"),
            (None, Some(serial)) => format!("token with serial {serial:?}"),
            (None, None) => "token".to_owned(),
        }
    }
}

/// What [`Pkcs11Uri::matches_token`] compares.
#[derive(Debug, Clone, Copy)]
pub struct TokenFields<'a> {
    pub label: &'a str,
    pub manufacturer: &'a str,
    pub serial: &'a str,
    pub model: &'a str,
    pub slot_id: u64,
}

fn split_attr(attr: &str) -> Result<(&str, &str), UriError> {
    attr.split_once('=').ok_or_else(|| {
        err(format!(
            "attribute {:?} has no `=value`",
            truncate_name(attr)
        ))
    })
}

/// An attribute name for a message: a name, not a value, but cut short in case something else
/// was pasted where a name belongs.
fn truncate_name(name: &str) -> String {
    name.chars().take(32).collect()
}

#[derive(Default)]
struct Builder {
    seen: Vec<String>,
    token: Option<String>,
    manufacturer: Option<String>,
    serial: Option<String>,
    model: Option<String>,
    slot_id: Option<u64>,
    object: Option<String>,
    id: Option<Vec<u8>>,
    module_path: Option<PathBuf>,
    pin_source: Option<PathBuf>,
}

impl Builder {
    fn once(&mut self, name: &str) -> Result<(), UriError> {
        if self.seen.iter().any(|n| n == name) {
            return Err(err(format!("attribute `{name}` is given twice")));
        }
        self.seen.push(name.to_owned());
        Ok(())
    }

    fn path_attr(&mut self, name: &str, raw: &str) -> Result<(), UriError> {
        match name {
            "token" | "manufacturer" | "serial" | "model" | "object" => {
                self.once(name)?;
                let value = text(name, raw)?;
                let slot = match name {
                    "token" => &mut self.token,
                    "manufacturer" => &mut self.manufacturer,
                    "serial" => &mut self.serial,
                    "model" => &mut self.model,
                    _ => &mut self.object,
                };
                *slot = Some(value);
            }
            "id" => {
                self.once(name)?;
                let id = decode(name, raw)?;
                if id.is_empty() {
                    return Err(err("attribute `id` is empty"));
                }
                self.id = Some(id);
            }
            "slot-id" => {
                self.once(name)?;
                let value = text(name, raw)?;
                let id = value
                    .parse()
                    .map_err(|_| err("attribute `slot-id` must be a decimal number"))?;
                self.slot_id = Some(id);
            }
            "type" => {
                self.once(name)?;
                if text(name, raw)? != "secret-key" {
                    return Err(err(
                        "attribute `type` must be `secret-key`: the KEK is an AES secret key",
                    ));
                }
            }
            "library-manufacturer"
            | "library-description"
            | "library-version"
            | "slot-description"
            | "slot-manufacturer" => {
                return Err(err(format!(
                    "attribute `{name}` is not supported; name the module with module-path= and \
                     the token with token=, serial=, manufacturer=, model= or slot-id="
                )));
            }
            _ => return Err(unknown(name, "path")),
        }
        Ok(())
    }

    fn query_attr(&mut self, name: &str, raw: &str) -> Result<(), UriError> {
        match name {
            "module-path" => {
                self.once(name)?;
                let path = PathBuf::from(text(name, raw)?);
                if path.as_os_str().is_empty() {
                    return Err(err("attribute `module-path` is empty"));
                }
                self.module_path = Some(path);
            }
            "pin-source" => {
                self.once(name)?;
                self.pin_source = Some(pin_source(&text(name, raw)?)?);
            }
            "pin-value" => {
                return Err(err(
                    "`pin-value` is refused: a PIN in the URI ends up in shell history, process \
                     listings and the data dir's kek.toml; give it in COFFER_PKCS11_PIN or in a \
                     file named by pin-source=file:/path/to/pin",
                ));
            }
            "module-name" => {
                return Err(err(
                    "`module-name` is not supported; give the module's file with \
                     module-path=/path/to/module.so",
                ));
            }
            _ => return Err(unknown(name, "query")),
        }
        Ok(())
    }

    fn finish(self) -> Result<Pkcs11Uri, UriError> {
        let Some(object) = self.object else {
            return Err(err(
                "it names no key object: add object=LABEL (the key's label) to the path",
            ));
        };
        if self.token.is_none() && self.serial.is_none() {
            return Err(err(
                "it names no token: add token=LABEL (or serial=NUMBER) to the path",
            ));
        }
        let Some(module_path) = self.module_path else {
            return Err(err(
                "it names no module: add ?module-path=/path/to/pkcs11-module.so",
            ));
        };
        Ok(Pkcs11Uri {
            token: self.token,
            manufacturer: self.manufacturer,
            serial: self.serial,
            model: self.model,
            slot_id: self.slot_id,
            object,
            id: self.id,
            module_path,
            pin_source: self.pin_source,
        })
    }
}

fn unknown(name: &str, part: &str) -> UriError {
    err(format!(
        "unknown {part} attribute `{}`",
        truncate_name(name)
    ))
}

/// `file:/abs/path`, `file:///abs/path` or `/abs/path`. Relative paths are refused: the URI is
/// recorded in the data dir and read again by a server that may run in another directory.
fn pin_source(value: &str) -> Result<PathBuf, UriError> {
    let path = match value.strip_prefix("file:") {
        Some(rest) => match rest.strip_prefix("//") {
            // `file://HOST/path`: only an empty host (this machine) makes sense.
            Some(after_host) if after_host.starts_with('/') => after_host,
            Some(_) => {
                return Err(err(
                    "pin-source must be a local file: file:/path/to/pin or file:///path/to/pin",
                ));
            }
            None => rest,
        },
        None if value.contains(':') && !value.starts_with('/') => {
            return Err(err(
                "pin-source must be a file: file:/path/to/pin (no other scheme is supported)",
            ));
        }
        None => value,
    };
    if !path.starts_with('/') {
        return Err(err(
            "pin-source must be an absolute path (file:/path/to/pin)",
        ));
    }
    Ok(PathBuf::from(path))
}

/// A percent-decoded value that must be text.
fn text(name: &str, raw: &str) -> Result<String, UriError> {
    let bytes = decode(name, raw)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        err(format!(
            "attribute `{name}` is not UTF-8 once percent-decoded"
        ))
    })?;
    if text.chars().any(char::is_control) {
        return Err(err(format!("attribute `{name}` holds a control character")));
    }
    Ok(text)
}

fn decode(name: &str, raw: &str) -> Result<Vec<u8>, UriError> {
    let bad = || {
        err(format!(
            "attribute `{name}` has a `%` not followed by two hex digits"
        ))
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex_digit).ok_or_else(bad)?;
            let lo = bytes.next().and_then(hex_digit).ok_or_else(bad)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// Appends `bytes` percent-encoded: everything but RFC 3986's unreserved characters, and the
/// `extra` characters a part allows unescaped.
fn encode(out: &mut String, bytes: &[u8], extra: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || extra.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The canonical form: attributes in a fixed order, values percent-encoded. Parsing it gives
/// back the same [`Pkcs11Uri`].
impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = Vec::new();
        let mut push = |name: &str, value: &[u8]| {
            let mut attr = format!("{name}=");
            encode(&mut attr, value, b"");
            path.push(attr);
        };
        let texts = [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
        ];
        for (name, value) in texts {
            if let Some(value) = value {
                push(name, value.as_bytes());
            }
        }
        if let Some(slot) = self.slot_id {
            push("slot-id", slot.to_string().as_bytes());
        }
        push("object", self.object.as_bytes());
        if let Some(id) = &self.id {
            let mut attr = String::from("id=");
            for b in id {
                attr.push_str(&format!("%{b:02X}"));
            }
            path.push(attr);
        }
        let mut query = String::from("module-path=");
        encode(
            &mut query,
            self.module_path.as_os_str().as_encoded_bytes(),
            b"/:",
        );
        if let Some(pin) = &self.pin_source {
            // `file://` and an empty host: a path starting with `//` must not read as a host.
            query.push_str("&pin-source=file://");
            encode(&mut query, pin.as_os_str().as_encoded_bytes(), b"/:");
        }
        write!(f, "{SCHEME}{}?{query}", path.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

    fn parse(s: &str) -> Pkcs11Uri {
        Pkcs11Uri::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn refused(s: &str) -> String {
        match Pkcs11Uri::parse(s) {
            Ok(uri) => panic!("{s} was accepted: {uri:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_default_module_fills_in_only_a_missing_module_path() {
        let default = std::path::Path::new("/usr/lib/my hsm/p11.so");
        let uri = Pkcs11Uri::parse_with_default_module("pkcs11:token=t;object=k", default).unwrap();
        assert_eq!(uri.module_path, default);
        // Given, it wins; a query with other attributes still gets the default.
        let uri = Pkcs11Uri::parse_with_default_module(
            "pkcs11:token=t;object=k?module-path=/other.so",
            default,
        )
        .unwrap();
        assert_eq!(uri.module_path, PathBuf::from("/other.so"));
        let uri = Pkcs11Uri::parse_with_default_module(
            "pkcs11:token=t;object=k?pin-source=file:/p",
            default,
        )
        .unwrap();
        assert_eq!(uri.module_path, default);
        // The text `module-path=` inside a value is not a module path.
        let uri =
            Pkcs11Uri::parse_with_default_module("pkcs11:token=t;object=module-path=x", default)
                .unwrap();
        assert_eq!(
            (uri.object.as_str(), uri.module_path.as_path()),
            ("module-path=x", default)
        );
        // Still strict: twice, or empty, is refused.
        for bad in [
            "pkcs11:token=t;object=k?module-path=/a.so&module-path=/b.so",
            "pkcs11:token=t;object=k?module-path=",
        ] {
            assert!(
                Pkcs11Uri::parse_with_default_module(bad, default).is_err(),
                "{bad}"
            );
        }
        assert!(Pkcs11Uri::parse("pkcs11:token=t;object=k").is_err());
    }

    #[test]
    fn the_readme_example() {
        let uri = parse(&format!(
            "pkcs11:token=coffer;object=coffer-kek?module-path={SOFTHSM}"
        ));
        assert_eq!(uri.token.as_deref(), Some("coffer"));
        assert_eq!(uri.object, "coffer-kek");
        assert_eq!(uri.module_path, PathBuf::from(SOFTHSM));
        assert_eq!(uri.pin_source, None);
        assert_eq!(uri.id, None);
    }

    #[test]
    fn values_are_percent_decoded() {
        let uri = parse(
            "PKCS11:token=My%20Token%3b1;object=k%C3%A9k;id=%01%ff%00;serial=00ab\
             ?module-path=/opt/hsm%20lib/p11.so&pin-source=file:/run/pin%26file",
        );
        assert_eq!(uri.token.as_deref(), Some("My Token;1"));
        assert_eq!(uri.object, "kék");
        assert_eq!(uri.id.as_deref(), Some(&[1, 0xff, 0][..]));
        assert_eq!(uri.serial.as_deref(), Some("00ab"));
        assert_eq!(uri.module_path, PathBuf::from("/opt/hsm lib/p11.so"));
        assert_eq!(uri.pin_source, Some(PathBuf::from("/run/pin&file")));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "pkcs11:token=coffer;object=coffer-kek?module-path=/usr/lib/softhsm/libsofthsm2.so",
            "pkcs11:token=My%20Token%3b1;manufacturer=SoftHSM%20project;serial=1a2b;model=x;\
             slot-id=7;object=k%C3%A9k;id=%01%FF?module-path=/a%20b/c.so&pin-source=file:/p%25",
            "pkcs11:serial=42;object=o;type=secret-key?module-path=m.so&pin-source=file:///run/p",
        ] {
            let uri = parse(text);
            let shown = uri.to_string();
            assert_eq!(parse(&shown), uri, "{text} -> {shown}");
        }
        let shown = parse("pkcs11:object=k;token=t?module-path=/m.so").to_string();
        assert_eq!(shown, "pkcs11:token=t;object=k?module-path=/m.so");
    }

    #[test]
    fn token_and_object_are_required() {
        let msg = refused(&format!("pkcs11:object=k?module-path={SOFTHSM}"));
        assert!(
            msg.contains("names no token") && msg.contains("token="),
            "{msg}"
        );
        let msg = refused(&format!("pkcs11:token=t?module-path={SOFTHSM}"));
        assert!(
            msg.contains("names no key object") && msg.contains("object="),
            "{msg}"
        );
        let msg = refused("pkcs11:token=t;object=k");
        assert!(msg.contains("module-path="), "{msg}");
        // A serial number identifies the token as well as a label does.
        parse(&format!("pkcs11:serial=9;object=k?module-path={SOFTHSM}"));
    }

    #[test]
    fn a_pin_in_the_uri_is_refused_without_echoing_it() {
        let msg = refused(&format!(
            "pkcs11:token=t;object=k?module-path={SOFTHSM}&pin-value=hunter2"
        ));
        assert!(
            msg.contains("pin-value") && msg.contains("COFFER_PKCS11_PIN"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        // Also where it would not be recognised as the PIN: a value is never echoed.
        let msg = refused("pkcs11:token=t;object=k;hunter2?module-path=/m");
        assert!(!msg.contains("=hunter2"), "{msg}");
    }

    #[test]
    fn strictness() {
        let base = "pkcs11:token=t;object=k";
        for (uri, expect) in [
            ("http:token=t", "must start with `pkcs11:`"),
            (
                "pkcs11:token=t;token=u;object=k?module-path=/m",
                "given twice",
            ),
            (
                &format!("{base}?module-path=/m&module-path=/n"),
                "given twice",
            ),
            (
                &format!("{base};colour=red?module-path=/m"),
                "unknown path attribute `colour`",
            ),
            (
                &format!("{base}?module-path=/m&x-vendor=1"),
                "unknown query attribute `x-vendor`",
            ),
            (&format!("{base}?module-name=softhsm2"), "module-name"),
            (
                &format!("{base};slot-description=x?module-path=/m"),
                "not supported",
            ),
            (&format!("{base};type=private?module-path=/m"), "secret-key"),
            (&format!("{base};slot-id=one?module-path=/m"), "decimal"),
            (&format!("{base};id=?module-path=/m"), "`id` is empty"),
            (&format!("{base}?module-path="), "`module-path` is empty"),
            (&format!("{base}%2?module-path=/m"), "two hex digits"),
            (&format!("{base}%zz?module-path=/m"), "two hex digits"),
            (&format!("{base}%ff?module-path=/m"), "not UTF-8"),
            (&format!("{base}%0a?module-path=/m"), "control character"),
            (&format!("{base}?module-path=/m#frag"), "fragment"),
            (
                &format!("{base}?module-path=/m&pin-source=pin.txt"),
                "absolute",
            ),
            (
                &format!("{base}?module-path=/m&pin-source=file:pin.txt"),
                "absolute",
            ),
            (
                &format!("{base}?module-path=/m&pin-source=file://host/p"),
                "local file",
            ),
            (
                &format!("{base}?module-path=/m&pin-source=env:PIN"),
                "no other scheme",
            ),
            (&format!("{base};object?module-path=/m"), "has no `=value`"),
        ] {
            let msg = refused(uri);
            assert!(msg.contains(expect), "{uri}: {msg}");
            assert!(msg.starts_with("invalid PKCS#11 URI: "), "{msg}");
        }
    }

    #[test]
    fn pin_source_forms() {
        for (given, path) in [
            ("file:/run/pin", "/run/pin"),
            ("file:///run/pin", "/run/pin"),
            ("/run/pin", "/run/pin"),
        ] {
            let uri = parse(&format!(
                "pkcs11:token=t;object=k?module-path=/m&pin-source={given}"
            ));
            assert_eq!(uri.pin_source, Some(PathBuf::from(path)), "{given}");
        }
    }

    proptest::proptest! {
        /// Whatever the labels, ids and paths hold, the canonical form parses back to them.
        #[test]
        fn any_uri_round_trips_through_its_canonical_form(
            token in "[^\\p{Cc}]{1,24}",
            object in "[^\\p{Cc}]{1,24}",
            serial in proptest::option::of("[0-9a-f]{1,16}"),
            id in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..8)),
            slot in proptest::option::of(proptest::prelude::any::<u64>()),
            module in "/[^\\p{Cc}]{1,32}",
            pin in proptest::option::of("/[^\\p{Cc}]{1,32}"),
        ) {
            let uri = Pkcs11Uri {
                token: Some(token),
                manufacturer: None,
                serial,
                model: None,
                slot_id: slot,
                object,
                id,
                module_path: PathBuf::from(module),
                pin_source: pin.map(PathBuf::from),
            };
            let shown = uri.to_string();
            proptest::prop_assert_eq!(Pkcs11Uri::parse(&shown), Ok(uri), "{}", shown);
        }
    }

    #[test]
    fn token_matching_ignores_padding_and_checks_every_given_field() {
        let uri = parse("pkcs11:token=coffer;serial=abc;slot-id=3;object=k?module-path=/m");
        let fields = TokenFields {
            label: "coffer                          ",
            manufacturer: "SoftHSM project",
            serial: "abc\0",
            model: "SoftHSM v2",
            slot_id: 3,
        };
        assert!(uri.matches_token(&fields));
        assert!(!uri.matches_token(&TokenFields {
            slot_id: 4,
            ..fields
        }));
        assert!(!uri.matches_token(&TokenFields {
            serial: "abd",
            ..fields
        }));
        assert!(!uri.matches_token(&TokenFields {
            label: "coffer2",
            ..fields
        }));
        assert!(!uri.matches_token(&TokenFields {
            label: " coffer",
            ..fields
        }));
    }
}
