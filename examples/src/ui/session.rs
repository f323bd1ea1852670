//! The admin page's sessions: a random token in an `HttpOnly`, `SameSite=Strict` cookie, given
//! for the admin key and kept here, in memory, by its SHA-256 digest (a memory dump or a log
//! shows no live token); each session has its own CSRF token, which every form that changes
//! something carries and the server compares in constant time.
//!
//! A session ends at logout, 12 hours after login, or as soon as the admin key in force is no
//! longer the one it was given for (a reload that changes `server.admin_key` logs everyone out).
//! Written by hand: what a session needs here (one secret, no user store, no persistence) is a
//! few lines, and the cookie crates' signing and encryption would add a second secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cortex_gateway::auth::KeyHash;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "cortex_session";

/// How long a session lasts after login.
pub(crate) const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once: a new login past it ends the oldest.
const MOST: usize = 256;

/// One logged-in browser.
#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    admin: KeyHash,
    ends: Instant,
}

/// The sessions of one server.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

/// A session found for a request: what its pages need.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    /// The token the forms of this session carry.
    pub(crate) csrf: String,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 32 random bytes, hex.
fn random_token() -> Result<String, String> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(bytes.iter().fold(String::with_capacity(64), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_digest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new session for a caller who showed the admin key whose digest is `admin`: its token,
    /// for the cookie.
    pub(crate) fn begin(&self, admin: KeyHash) -> Result<String, String> {
        let token = random_token()?;
        let session = Session {
            csrf: random_token()?,
            admin,
            ends: Instant::now() + LIFETIME,
        };
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, s| s.ends > now);
        if sessions.len() >= MOST {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.ends).map(|(d, _)| *d) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(digest(&token), session);
        Ok(token)
    }

    /// The live session of `token`, given for the admin key `admin` now in force; an expired
    /// session, or one given for another key, is ended.
    pub(crate) fn find(&self, token: &str, admin: &KeyHash) -> Option<Found> {
        let key = digest(token);
        let mut sessions = self.lock();
        let session = sessions.get(&key)?;
        if session.ends <= Instant::now() || !session.admin.matches(admin) {
            sessions.remove(&key);
            return None;
        }
        Some(Found {
            csrf: session.csrf.clone(),
        })
    }

    /// Ends the session of `token`.
    pub(crate) fn end(&self, token: &str) {
        self.lock().remove(&digest(token));
    }
}

impl Found {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub(crate) fn csrf_matches(&self, presented: &str) -> bool {
        presented.len() == self.csrf.len()
            && bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// The session token in a request's `Cookie` headers.
pub(crate) fn token(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
        })
}

/// The `Set-Cookie` value of a new session (`Secure` when the page was reached over TLS, which
/// a TLS-terminating proxy in front says with `X-Forwarded-Proto: https`).
pub(crate) fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_for_its_key_and_ends_at_logout() {
        let sessions = Sessions::default();
        let admin = KeyHash::of("sk-admin");
        let token = sessions.begin(admin).unwrap();
        assert_eq!(token.len(), 64);
        let found = sessions.find(&token, &admin).unwrap();
        assert!(found.csrf_matches(&found.csrf.clone()));
        assert!(!found.csrf_matches("nope"));
        assert!(!found.csrf_matches(&"0".repeat(64)));
        assert!(sessions.find("not-a-token", &admin).is_none());
        // Another admin key in force: the session is over, for good.
        assert!(sessions.find(&token, &KeyHash::of("sk-other")).is_none());
        assert!(sessions.find(&token, &admin).is_none());
        let token = sessions.begin(admin).unwrap();
        sessions.end(&token);
        assert!(sessions.find(&token, &admin).is_none());
    }

    #[test]
    fn logins_past_the_cap_end_the_oldest_sessions() {
        let sessions = Sessions::default();
        let admin = KeyHash::of("sk-admin");
        let first = sessions.begin(admin).unwrap();
        for _ in 0..MOST {
            sessions.begin(admin).unwrap();
        }
        assert_eq!(sessions.lock().len(), MOST);
        assert!(sessions.find(&first, &admin).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let c = set_cookie("abc", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("a=b; cortex_session=tok; c=d"),
        );
        assert_eq!(token(&headers).as_deref(), Some("tok"));
    }
}
