//! `cortex keys new`: a new random API key, printed once; only its SHA-256 digest is written to
//! the configuration.

use std::io::Write as _;
use std::path::Path;

use cortex_gateway::auth::KeyHash;

/// A new key: `sk-cortex-` and 43 characters of base64url (32 random bytes from the OS).
///
/// # Errors
///
/// The operating system's random source failed.
pub fn generate() -> Result<String, String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let mut key = String::from("sk-cortex-");
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            key.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        key.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    Ok(key)
}

/// What `cortex keys new` appends to the configuration for a client key.
pub fn client_entry(id: &str, hash: &KeyHash, models: &[String]) -> String {
    let mut entry = format!("\n[[keys]]\nid = {}\nhash = \"{hash}\"\n", toml_string(id));
    if !models.is_empty() {
        let list: Vec<String> = models.iter().map(|m| toml_string(m)).collect();
        entry.push_str("models = [");
        entry.push_str(&list.join(", "));
        entry.push_str("]\n");
    }
    entry
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Appends `entry` to the file at `path`.
///
/// # Errors
///
/// The file could not be opened or written.
pub fn append(path: &Path, entry: &str) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(entry.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Sets `server.admin_key` in the text of a configuration: replaces the line when there is one,
/// else adds it under `[server]` (adding the table when there is none).
pub fn with_admin_key(text: &str, hash: &KeyHash) -> String {
    let line = format!("admin_key = \"{hash}\"");
    let mut out = Vec::new();
    let mut in_server = false;
    let mut done = false;
    for l in text.lines() {
        let trimmed = l.trim_start();
        if trimmed.starts_with('[') {
            in_server = trimmed.starts_with("[server]");
        }
        // An earlier admin key (or the shipped file's commented one) is replaced.
        if in_server && (trimmed.starts_with("admin_key") || trimmed.starts_with("# admin_key")) {
            continue;
        }
        out.push(l.to_owned());
        if in_server && !done && trimmed.starts_with("[server]") {
            out.push(line.clone());
            done = true;
        }
    }
    let mut text = out.join("\n");
    if !done {
        text = format!("[server]\n{line}\n\n{text}");
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_url_safe() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), "sk-cortex-".len() + 43);
        assert!(
            a["sk-cortex-".len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn admin_key_line_is_set_once() {
        let h = KeyHash::of("k");
        let t = with_admin_key(
            "[server]\nlisten = \"127.0.0.1:1\"\nadmin_key = \"sha256:00\"\n\n[[models]]\n",
            &h,
        );
        assert_eq!(t.matches("admin_key").count(), 1);
        assert!(t.starts_with("[server]\nadmin_key = \"sha256:"));
        let again = with_admin_key(&t, &KeyHash::of("other"));
        assert_eq!(again.matches("admin_key").count(), 1);
        assert!(again.contains(&KeyHash::of("other").to_string()));
        let none = with_admin_key("[[models]]\n", &h);
        assert!(none.starts_with("[server]\nadmin_key"));
        let parsed: toml::Table = toml::from_str(&again).unwrap();
        assert!(
            parsed["server"]["admin_key"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
    }
}
