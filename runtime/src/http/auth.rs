//! Checking a request's `Authorization` header against the configured
//! secret.

use base64::Engine;

/// The secret every request must present.
#[derive(Clone)]
pub(super) enum Credentials {
    Bearer { token: Vec<u8> },
    // `user:password`, as a client encodes it.
    Basic { user_password: Vec<u8>, user_has_colon: bool },
}

impl Credentials {
    pub(super) fn bearer(token: String) -> Credentials {
        Credentials::Bearer { token: token.into_bytes() }
    }

    pub(super) fn basic(user: String, password: String) -> Credentials {
        let user_has_colon = user.contains(':');
        Credentials::Basic { user_password: format!("{user}:{password}").into_bytes(), user_has_colon }
    }

    pub(super) fn scheme(&self) -> &'static str {
        match self {
            Credentials::Bearer { .. } => "Bearer",
            Credentials::Basic { .. } => "Basic",
        }
    }

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        match self {
            // Anything else could never arrive intact in a header value.
            Credentials::Bearer { token } if token.is_empty() || !token.iter().all(u8::is_ascii_graphic) => {
                Err("the bearer token must be non-empty printable ASCII without spaces")
            }
            // The client's encoding splits at the first colon.
            Credentials::Basic { user_has_colon: true, .. } => Err("the basic-auth user must not contain `:`"),
            _ => Ok(()),
        }
    }

    /// The `WWW-Authenticate` value of a 401.
    pub(super) fn challenge(&self) -> &'static str {
        match self {
            Credentials::Bearer { .. } => "Bearer realm=\"metrics\"",
            Credentials::Basic { .. } => "Basic realm=\"metrics\", charset=\"UTF-8\"",
        }
    }

    /// Whether the request's `Authorization` headers (all of them: more
    /// than one is ambiguous, so refused) carry the secret.
    pub(super) fn admits(&self, authorization: &[Vec<u8>]) -> bool {
        let [value] = authorization else { return false };
        let Some((scheme, rest)) = split_scheme(value) else { return false };
        if !scheme.eq_ignore_ascii_case(self.scheme().as_bytes()) {
            return false;
        }
        match self {
            Credentials::Bearer { token } => constant_time_eq(rest, token),
            Credentials::Basic { user_password, .. } => match base64::engine::general_purpose::STANDARD.decode(rest) {
                Ok(decoded) => constant_time_eq(&decoded, user_password),
                Err(_) => false,
            },
        }
    }
}

/// `Scheme credentials` → (scheme, credentials), spaces trimmed.
fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    Some((&value[..space], value[space..].trim_ascii_start()))
}

/// Equality whose running time depends only on the length of `given` (the
/// client's bytes), so that timing tells an attacker nothing about how much
/// of the secret they guessed, nor its length.
fn constant_time_eq(given: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return given.is_empty();
    }
    let mut difference = u8::from(given.len() != secret.len());
    for (i, &byte) in given.iter().enumerate() {
        // black_box keeps the optimizer from turning the fold into an
        // early exit.
        difference |= std::hint::black_box(byte ^ secret[i % secret.len()]);
    }
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> Vec<Vec<u8>> {
        vec![value.as_bytes().to_vec()]
    }

    #[test]
    fn constant_time_eq_is_equality() {
        for (a, b) in [("", ""), ("a", ""), ("", "a"), ("abc", "abc"), ("abc", "abd"), ("ab", "abc"), ("abcabc", "abc")]
        {
            assert_eq!(constant_time_eq(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
        }
    }

    #[test]
    fn bearer() {
        let c = Credentials::bearer("tok".into());
        assert!(c.admits(&header("Bearer tok")));
        assert!(c.admits(&header("bearer   tok ")));
        for bad in ["Bearer tok2", "Bearer to", "Bearer", "Bearer ", "tok", "Basic tok", "Bearer TOK"] {
            assert!(!c.admits(&header(bad)), "{bad}");
        }
        assert!(!c.admits(&[]));
        let twice = [b"Bearer tok".to_vec(), b"Bearer tok".to_vec()];
        assert!(!c.admits(&twice));
    }

    #[test]
    fn basic() {
        let c = Credentials::basic("user".into(), "pa:ss".into());
        let encoded = base64::engine::general_purpose::STANDARD.encode("user:pa:ss");
        assert!(c.admits(&header(&format!("Basic {encoded}"))));
        assert!(c.admits(&header(&format!("BASIC {encoded}"))));
        let wrong = base64::engine::general_purpose::STANDARD.encode("user:pa:sS");
        for bad in [format!("Basic {wrong}"), "Basic !!!".into(), "Basic".into(), format!("Bearer {encoded}")] {
            assert!(!c.admits(&header(&bad)), "{bad}");
        }
    }

    #[test]
    fn validation() {
        assert!(Credentials::bearer(String::new()).validate().is_err());
        assert!(Credentials::bearer("a b".into()).validate().is_err());
        assert!(Credentials::bearer("a\n".into()).validate().is_err());
        assert!(Credentials::bearer("abc-._~+/=".into()).validate().is_ok());
        assert!(Credentials::basic("a:b".into(), "c".into()).validate().is_err());
        assert!(Credentials::basic("a".into(), "b:c".into()).validate().is_ok());
    }
}
