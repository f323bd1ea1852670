//! `cortex keys new`: a new random API key, printed once; only its SHA-256 digest is written to
//! the configuration.

use std::io::Write as _;
use std::path::Path;

use cortex_gateway::auth::KeyHash;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, value};

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

/// The configuration text with a client key added: a `[[keys]]` table after the others, with
/// `id`, the digest and the allowed `models` (every model when empty). The rest of the file —
/// formatting, comments, order — is kept as it was ([`toml_edit`]).
///
/// # Errors
///
/// The text is not TOML, or its `keys` is not an array of tables.
pub fn with_client_key(
    text: &str,
    id: &str,
    hash: &KeyHash,
    models: &[String],
) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let keys = doc
        .entry("keys")
        .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()))
        .as_array_of_tables_mut()
        .ok_or("`keys` is not a list of [[keys]] tables")?;
    let mut table = Table::new();
    table.insert("id", value(id));
    table.insert("hash", value(hash.to_string()));
    if !models.is_empty() {
        table.insert("models", value(models.iter().collect::<Array>()));
    }
    table.decor_mut().set_prefix("\n");
    keys.push(table);
    Ok(doc.to_string())
}

/// The configuration text without the client key whose `id` is `id` (its `[[keys]]` table
/// removed, the rest kept as it was); `None` when there is no such key.
///
/// # Errors
///
/// The text is not TOML, or its `keys` is not an array of tables.
pub fn without_client_key(text: &str, id: &str) -> Result<Option<String>, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let Some(keys) = doc.get_mut("keys") else {
        return Ok(None);
    };
    let keys = keys
        .as_array_of_tables_mut()
        .ok_or("`keys` is not a list of [[keys]] tables")?;
    let Some(at) = keys
        .iter()
        .position(|t| t.get("id").and_then(Item::as_str) == Some(id))
    else {
        return Ok(None);
    };
    keys.remove(at);
    Ok(Some(doc.to_string()))
}

/// The configuration text with `server.admin_key` set to `hash`, replacing any earlier one; comment
/// lines that name the key it replaces (the shipped file's `# Admin key: sk-…`) go with it, since
/// they would name a key that no longer works. Everything else is kept as it was.
///
/// # Errors
///
/// The text is not TOML, or its `server` is not a table.
pub fn with_admin_key(text: &str, hash: &KeyHash) -> Result<String, String> {
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{e}"))?;
    let server = doc
        .entry("server")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_like_mut()
        .ok_or("`server` is not a table")?;
    let old = server
        .get("admin_key")
        .and_then(Item::as_str)
        .and_then(|h| KeyHash::parse(h).ok());
    // In place when there is one, so the comments above it stay.
    match server.get_mut("admin_key") {
        Some(item) => *item = value(hash.to_string()),
        None => {
            server.insert("admin_key", value(hash.to_string()));
        }
    }
    let text = doc.to_string();
    Ok(match old {
        Some(old) => without_comments_naming(&text, &old),
        None => text,
    })
}

/// `text` without the comment lines that contain a key whose digest is `hash`.
fn without_comments_naming(text: &str, hash: &KeyHash) -> String {
    let names_key = |line: &str| {
        line.trim_start().starts_with('#')
            && line
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .filter(|word| word.starts_with("sk-"))
                .any(|word| KeyHash::of(word) == *hash)
    };
    let mut out: String = text
        .split_inclusive('\n')
        .filter(|line| !names_key(line))
        .collect();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Replaces the file at `path` with `text` in one step: a temporary file beside it, synced, with
/// the old file's permissions, renamed over it. A reader sees the old file or the new one, never
/// half of one.
///
/// # Errors
///
/// The temporary file could not be written or renamed; the old file is then unchanged.
pub fn replace_file(path: &Path, text: &str) -> Result<(), String> {
    let shown = |e: std::io::Error| format!("{}: {e}", path.display());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "cortex.toml".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.cortex-{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        if let Ok(meta) = std::fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        shown(e)
    })
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

    const SHIPPED: &str = "# top comment\n[server]\nlisten = \"127.0.0.1:8080\"  # where\n# Admin key: sk-old-admin\n# keep me\nadmin_key = \"HASH\"\n\n[runtime]\nkind = \"process\"\n\n# Client key: sk-old-client\n[[keys]]\nid = \"a\"\nhash = \"sha256:00\"\n\n[[models]]\nid = \"m\"\n";

    fn shipped() -> String {
        SHIPPED.replace("HASH", &KeyHash::of("sk-old-admin").to_string())
    }

    #[test]
    fn admin_key_is_replaced_with_its_stale_comment_and_nothing_else() {
        let h = KeyHash::of("sk-new");
        let t = with_admin_key(&shipped(), &h).unwrap();
        assert_eq!(t.matches("admin_key").count(), 1, "{t}");
        assert!(t.contains(&format!("admin_key = \"{h}\"")), "{t}");
        // The comment naming the replaced key is gone; every other line is kept as written.
        assert!(!t.contains("sk-old-admin"), "{t}");
        let expected = shipped()
            .replace("# Admin key: sk-old-admin\n", "")
            .replace(&KeyHash::of("sk-old-admin").to_string(), &h.to_string());
        assert_eq!(t, expected);
        // No [server] table yet: one is made.
        let none = with_admin_key("[[models]]\nid = \"m\"\n", &h).unwrap();
        let parsed: toml::Table = toml::from_str(&none).unwrap();
        assert_eq!(
            parsed["server"]["admin_key"].as_str(),
            Some(h.to_string().as_str())
        );
    }

    #[test]
    fn client_key_is_added_after_the_others_keeping_the_file() {
        let h = KeyHash::of("sk-new");
        let t = with_client_key(&shipped(), "bob", &h, &["m".to_owned()]).unwrap();
        assert!(
            t.starts_with(&shipped().replace("\n\n[[models]]\nid = \"m\"\n", "")),
            "{t}"
        );
        assert!(t.contains("# Client key: sk-old-client"), "{t}");
        let parsed: toml::Table = toml::from_str(&t).unwrap();
        let keys = parsed["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1]["id"].as_str(), Some("bob"));
        assert_eq!(keys[1]["hash"].as_str(), Some(h.to_string().as_str()));
        assert_eq!(keys[1]["models"].as_array().unwrap()[0].as_str(), Some("m"));
        assert!(t.find("id = \"bob\"").unwrap() > t.find("id = \"a\"").unwrap());
        // A file with no keys at all.
        let t = with_client_key("[[models]]\nid = \"m\"\n", "x", &h, &[]).unwrap();
        let parsed: toml::Table = toml::from_str(&t).unwrap();
        assert_eq!(parsed["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn replace_file_swaps_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cortex.toml");
        std::fs::write(&path, "old").unwrap();
        replace_file(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
