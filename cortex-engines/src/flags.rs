//! Flag tables of the pinned engine versions, and validation of custom arguments against them.
//!
//! A table is generated from the engine's own help (llama-server's `--help` text, vLLM's argparse
//! options) and checked in as a TSV file that names the version it came from
//! (`llamacpp/flags-b11434.tsv`, `vllm/flags-0.32.0.tsv`); a test regenerates both from
//! `testdata/` and compares. Parsing help text is written by hand: no crate reads llama.cpp's
//! help format.

use std::collections::HashMap;
use std::fmt::Write as _;

use cortex_core::{Diagnostic, Diagnostics};

/// What a flag takes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    /// Nothing: a switch.
    None,
    /// A number (integer or decimal).
    Number,
    /// One of these words.
    Choices(Vec<String>),
    /// Free text, described by its placeholder (`FNAME`, `HOST`).
    Text(String),
    /// One or more values up to the next flag (vLLM's `nargs='+'`), each of the parser type named
    /// (`int`, `str`, `optional(str)`).
    List(String),
}

/// Whether a flag is still meant to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Current.
    Current,
    /// Accepted but deprecated; the text says what to use.
    Deprecated(String),
    /// Listed in the help only to say it is gone; the text says what to use.
    Removed(String),
}

/// Bounds of a numeric value, as the engine checks them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bounds {
    /// Lower bound and whether it is inclusive.
    pub min: Option<(f64, bool)>,
    /// Upper bound and whether it is inclusive.
    pub max: Option<(f64, bool)>,
}

// === impl Bounds ===

impl Bounds {
    /// Whether `v` is within the bounds.
    pub fn contains(&self, v: f64) -> bool {
        let above = self
            .min
            .is_none_or(|(m, inc)| if inc { v >= m } else { v > m });
        let below = self
            .max
            .is_none_or(|(m, inc)| if inc { v <= m } else { v < m });
        above && below
    }

    fn is_empty(&self) -> bool {
        self.min.is_none() && self.max.is_none()
    }

    /// As the TSV writes them: `ge:0,le:100`.
    fn to_text(self) -> String {
        let mut parts = Vec::new();
        if let Some((m, inc)) = self.min {
            parts.push(format!("{}:{m}", if inc { "ge" } else { "gt" }));
        }
        if let Some((m, inc)) = self.max {
            parts.push(format!("{}:{m}", if inc { "le" } else { "lt" }));
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(",")
        }
    }

    fn from_text(text: &str) -> Self {
        let mut b = Self::default();
        for part in text.split(',') {
            let Some((op, v)) = part.split_once(':') else {
                continue;
            };
            let Ok(v) = v.parse::<f64>() else { continue };
            match op {
                "ge" => b.min = Some((v, true)),
                "gt" => b.min = Some((v, false)),
                "le" => b.max = Some((v, true)),
                "lt" => b.max = Some((v, false)),
                _ => {}
            }
        }
        b
    }
}

impl std::fmt::Display for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let (Some((lo, true)), Some((hi, true))) = (self.min, self.max) {
            return write!(f, "{lo} to {hi}");
        }
        let mut parts = Vec::new();
        if let Some((m, inc)) = self.min {
            parts.push(format!(
                "{} {m}",
                if inc { "at least" } else { "more than" }
            ));
        }
        if let Some((m, inc)) = self.max {
            parts.push(format!("{} {m}", if inc { "at most" } else { "less than" }));
        }
        f.write_str(&parts.join(" and "))
    }
}

/// One flag with all its names.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// Every spelling (`-c`, `--ctx-size`), first as the help lists them.
    pub names: Vec<String>,
    /// What it takes.
    pub value: ValueKind,
    /// Whether it is current.
    pub status: Status,
    /// The environment variable that sets it, if any.
    pub env: Option<String>,
    /// Bounds of a numeric value.
    pub bounds: Bounds,
}

/// A replacement for a flag the table does not list (removed earlier) or lists as a no-op.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retired {
    pub(crate) names: &'static [&'static str],
    pub(crate) error: bool,
    pub(crate) message: &'static str,
    pub(crate) suggestion: &'static str,
}

impl Retired {
    /// What is said of it at `field`: an error or a warning, with the replacement.
    pub(crate) fn diagnostic(&self, field: &str) -> Diagnostic {
        let d = if self.error {
            Diagnostic::error(field, self.message)
        } else {
            Diagnostic::warning(field, self.message)
        };
        d.with_suggestion(self.suggestion)
    }
}

/// The flags of one engine version.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagTable {
    version: String,
    flags: Vec<Flag>,
    index: HashMap<String, usize>,
    /// vLLM's parser: `_` may stand for `-`, and unambiguous prefixes are accepted.
    argparse: bool,
}

// === impl FlagTable ===

impl FlagTable {
    fn new(version: String, flags: Vec<Flag>, argparse: bool) -> Self {
        let mut index = HashMap::new();
        for (i, flag) in flags.iter().enumerate() {
            for name in &flag.names {
                index.entry(name.clone()).or_insert(i);
            }
        }
        Self {
            version,
            flags,
            index,
            argparse,
        }
    }

    /// The version the table came from.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every flag.
    pub fn flags(&self) -> &[Flag] {
        &self.flags
    }

    /// The flag spelled `name`.
    pub fn get(&self, name: &str) -> Option<&Flag> {
        let name = self.normalize(name);
        self.index
            .get(name.as_ref())
            .and_then(|&i| self.flags.get(i))
    }

    fn normalize<'n>(&self, name: &'n str) -> std::borrow::Cow<'n, str> {
        if self.argparse && name.contains('_') {
            name.replace('_', "-").into()
        } else {
            name.into()
        }
    }

    /// The known spelling closest to `name`, when one is close enough to be a likely typo.
    pub fn closest(&self, name: &str) -> Option<&str> {
        let name = self.normalize(name);
        closest(&name, self.index.keys().map(String::as_str))
    }

    /// Parses llama-server's `--help` text.
    pub fn from_llama_help(version: &str, help: &str) -> Self {
        let mut flags: Vec<Flag> = Vec::new();
        for line in help.lines() {
            if line.starts_with('-') && !line.starts_with("-----") {
                // Descriptions start at column 40; a longer head has its description on the
                // next line.
                let (head, description) = match (line.get(..40), line.get(40..)) {
                    (Some(h), Some(d)) if h.ends_with("  ") => (h.trim(), d.trim()),
                    _ => (line.trim(), ""),
                };
                let mut names = Vec::new();
                let mut placeholder = Vec::new();
                for token in head.split_whitespace() {
                    let token = token.trim_end_matches(',');
                    if placeholder.is_empty() && token.starts_with('-') && token.len() > 1 {
                        names.push(token.to_owned());
                    } else {
                        placeholder.push(token);
                    }
                }
                let placeholder = placeholder.join(" ");
                flags.push(Flag {
                    names,
                    value: llama_value_kind(&placeholder),
                    status: Status::Current,
                    env: None,
                    bounds: llama_bounds(&placeholder),
                });
                if !description.is_empty() {
                    annotate(flags.last_mut(), description);
                }
            } else if let Some(flag) = flags.last_mut() {
                annotate(Some(flag), line.trim());
            }
        }
        Self::new(version.to_owned(), flags, false)
    }

    /// Reads vLLM's argparse options and the numeric bounds it checks after parsing
    /// (`vllm-serve-args.json` and `vllm-field-constraints.json` of `testdata/`).
    ///
    /// # Errors
    ///
    /// When the JSON is not the expected document.
    pub fn from_vllm_args(
        version: &str,
        json: &str,
        constraints: &str,
    ) -> Result<Self, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Constraint {
            flag: Option<String>,
            ge: Option<f64>,
            gt: Option<f64>,
            le: Option<f64>,
            lt: Option<f64>,
        }
        #[derive(serde::Deserialize)]
        struct Doc {
            arguments: Vec<Arg>,
        }
        #[derive(serde::Deserialize)]
        struct Arg {
            option_strings: Vec<String>,
            action: String,
            #[serde(rename = "type")]
            ty: Option<String>,
            nargs: Option<serde_json::Value>,
            choices: Option<Vec<serde_json::Value>>,
            deprecated: Option<bool>,
        }
        let constraints: Vec<Constraint> = serde_json::from_str(constraints)?;
        let doc: Doc = serde_json::from_str(json)?;
        let flags = doc
            .arguments
            .into_iter()
            .filter(|a| !a.option_strings.is_empty())
            .map(|a| {
                let takes_nothing = matches!(a.nargs, Some(serde_json::Value::Number(ref n)) if n.as_u64() == Some(0))
                    || a.action.contains("store_true")
                    || a.action.contains("store_false")
                    || a.action.contains("BooleanOptional")
                    || a.action == "help"
                    || a.action == "version";
                let many = matches!(a.nargs.as_ref().and_then(|n| n.as_str()), Some("+" | "*"));
                let ty = a.ty.unwrap_or_else(|| "str".to_owned());
                let value = if takes_nothing {
                    ValueKind::None
                } else if let Some(choices) = a.choices {
                    ValueKind::Choices(
                        choices
                            .iter()
                            .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
                            .collect(),
                    )
                } else if many {
                    ValueKind::List(ty)
                } else {
                    // The parser's own type (`int`, `float`, `human_readable_int`,
                    // `json->CompilationConfig`, ...): `vllm::args` checks values as it does.
                    ValueKind::Text(ty)
                };
                let mut names = a.option_strings;
                if a.action.contains("BooleanOptional") {
                    let negated: Vec<String> = names
                        .iter()
                        .filter_map(|n| n.strip_prefix("--").map(|n| format!("--no-{n}")))
                        .collect();
                    names.extend(negated);
                }
                let bounds = constraints
                    .iter()
                    .find(|c| c.flag.as_ref().is_some_and(|f| names.contains(f)))
                    .map(|c| Bounds {
                        min: c.ge.map(|v| (v, true)).or(c.gt.map(|v| (v, false))),
                        max: c.le.map(|v| (v, true)).or(c.lt.map(|v| (v, false))),
                    })
                    .unwrap_or_default();
                Flag {
                    names,
                    value,
                    status: if a.deprecated == Some(true) {
                        Status::Deprecated("deprecated in this version".into())
                    } else {
                        Status::Current
                    },
                    env: None,
                    bounds,
                }
            })
            .collect();
        Ok(Self::new(version.to_owned(), flags, true))
    }

    /// The table as the checked-in TSV: a version line, then per flag its names (space separated),
    /// value kind, status and environment variable.
    pub fn to_tsv(&self) -> String {
        let mut out = format!(
            "# version\t{}\t{}\n",
            self.version,
            if self.argparse { "argparse" } else { "llama" }
        );
        for f in &self.flags {
            let value = match &f.value {
                ValueKind::None => "-".to_owned(),
                ValueKind::Number => "number".to_owned(),
                ValueKind::Choices(c) => format!("choices:{}", c.join("|")),
                ValueKind::Text(t) => format!("text:{t}"),
                ValueKind::List(ty) => format!("list:{ty}"),
            };
            let status = match &f.status {
                Status::Current => "current".to_owned(),
                Status::Deprecated(why) => format!("deprecated:{why}"),
                Status::Removed(why) => format!("removed:{why}"),
            };
            let _ = writeln!(
                out,
                "{}\t{value}\t{status}\t{}\t{}",
                f.names.join(" "),
                f.env.as_deref().unwrap_or("-"),
                f.bounds.to_text()
            );
        }
        out
    }

    /// Reads a table written by [`to_tsv`](Self::to_tsv).
    ///
    /// # Panics
    ///
    /// On a malformed table: tables are checked-in files, verified by the crate's tests.
    pub fn from_tsv(tsv: &str) -> Self {
        let mut lines = tsv.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let version = header.get(1).copied().unwrap_or_default().to_owned();
        let argparse = header.get(2) == Some(&"argparse");
        let flags = lines
            .filter(|l| !l.is_empty())
            .map(|line| {
                let cols: Vec<&str> = line.split('\t').collect();
                let col = |i: usize| cols.get(i).copied().unwrap_or("-");
                let value = match col(1) {
                    "-" => ValueKind::None,
                    "number" => ValueKind::Number,
                    v => match (
                        v.strip_prefix("choices:"),
                        v.strip_prefix("text:"),
                        v.strip_prefix("list:"),
                    ) {
                        (Some(c), _, _) => {
                            ValueKind::Choices(c.split('|').map(str::to_owned).collect())
                        }
                        (_, Some(t), _) => ValueKind::Text(t.to_owned()),
                        (_, _, Some(t)) => ValueKind::List(t.to_owned()),
                        _ => ValueKind::Text(v.to_owned()),
                    },
                };
                let status = match col(2) {
                    s if s.starts_with("deprecated:") => {
                        Status::Deprecated(s["deprecated:".len()..].to_owned())
                    }
                    s if s.starts_with("removed:") => {
                        Status::Removed(s["removed:".len()..].to_owned())
                    }
                    _ => Status::Current,
                };
                Flag {
                    names: col(0).split(' ').map(str::to_owned).collect(),
                    value,
                    status,
                    env: Some(col(3)).filter(|e| *e != "-").map(str::to_owned),
                    bounds: Bounds::from_text(col(4)),
                }
            })
            .collect();
        Self::new(version, flags, argparse)
    }

    /// Checks custom arguments: unknown flags (warning, naming the closest known one), retired or
    /// deprecated flags (error or warning, naming the replacement), missing values, values of the
    /// wrong kind or outside the choices (errors). `retired` lists flags this version no longer
    /// has, with their replacements. Diagnostics name the argument as `args[i]`.
    // One pass over the arguments, case by case; splitting it would scatter the cursor `i`.
    #[allow(clippy::too_many_lines)]
    pub(crate) fn check_args(
        &self,
        engine: &str,
        args: &[String],
        retired: &[Retired],
    ) -> Diagnostics {
        let mut out = Diagnostics::new();
        let mut i = 0;
        while let Some(arg) = args.get(i) {
            let field = format!("args[{i}]");
            i += 1;
            if !arg.starts_with('-') || arg.len() < 2 || arg.parse::<f64>().is_ok() {
                out.push(Diagnostic::warning(
                    &field,
                    format!("`{arg}` is not a flag; {engine} may reject or misread it"),
                ));
                continue;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v)),
                _ => (arg.as_str(), None),
            };
            if let Some(r) = retired.iter().find(|r| r.names.contains(&name)) {
                out.push(r.diagnostic(&field));
            }
            let flag = self.get(name).or_else(|| self.unique_prefix(name));
            let Some(flag) = flag else {
                if !retired.iter().any(|r| r.names.contains(&name)) {
                    let mut d = Diagnostic::warning(
                        &field,
                        format!("unknown flag `{name}` for {engine} {}", self.version),
                    );
                    if let Some(c) = self.closest(name) {
                        d = d.with_suggestion(format!("did you mean `{c}`?"));
                    }
                    out.push(d);
                }
                // Its value, if it has one, goes with it.
                if inline.is_none()
                    && args
                        .get(i)
                        .is_some_and(|v| !v.starts_with('-') || v.parse::<f64>().is_ok())
                {
                    i += 1;
                }
                continue;
            };
            match &flag.status {
                Status::Removed(why) => out.push(Diagnostic::error(
                    &field,
                    format!("`{name}` was removed: {why}"),
                )),
                Status::Deprecated(why) => out.push(Diagnostic::warning(
                    &field,
                    format!("`{name}` is deprecated: {why}"),
                )),
                Status::Current => {}
            }
            if flag.value == ValueKind::None {
                if inline.is_some() && !self.argparse {
                    out.push(Diagnostic::error(
                        &field,
                        format!("`{name}` takes no value"),
                    ));
                }
                continue;
            }
            let value = if let Some(v) = inline {
                Some(v.to_owned())
            } else {
                let next = args.get(i).filter(|v| {
                    !v.starts_with("--") && (!v.starts_with('-') || v.parse::<f64>().is_ok())
                });
                if next.is_some() {
                    i += 1;
                }
                next.cloned()
            };
            let Some(value) = value else {
                let mut d = Diagnostic::error(&field, format!("`{name}` needs a value"));
                if let ValueKind::Choices(c) = &flag.value {
                    d = d.with_suggestion(format!("give one of {}", c.join(", ")));
                }
                out.push(d);
                continue;
            };
            match &flag.value {
                ValueKind::Number if value.parse::<f64>().is_err() => out.push(Diagnostic::error(
                    &field,
                    format!("`{name}` takes a number, not `{value}`"),
                )),
                ValueKind::Number
                    if !flag.bounds.is_empty()
                        && value.parse::<f64>().is_ok_and(|v| !flag.bounds.contains(v)) =>
                {
                    out.push(Diagnostic::error(
                        &field,
                        format!("`{name}` takes {}, not {value}", flag.bounds),
                    ));
                }
                ValueKind::Choices(c) if !c.iter().any(|c| c == &value) => out.push(
                    Diagnostic::error(&field, format!("`{name}` does not accept `{value}`"))
                        .with_suggestion(format!("give one of {}", c.join(", "))),
                ),
                ValueKind::List(_) => {
                    while args.get(i).is_some_and(|v| !v.starts_with("--")) {
                        i += 1;
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The flag `name` stands for, as the engine's parser reads it: an exact spelling, or (vLLM)
    /// with `_` for `-`, or an unambiguous prefix.
    pub(crate) fn resolve(&self, name: &str) -> Option<&Flag> {
        self.get(name).or_else(|| self.unique_prefix(name))
    }

    /// argparse's abbreviations: a prefix of exactly one long flag.
    fn unique_prefix(&self, name: &str) -> Option<&Flag> {
        if !self.argparse || !name.starts_with("--") {
            return None;
        }
        let name = self.normalize(name);
        let mut found = self
            .index
            .iter()
            .filter(|(k, _)| k.starts_with(name.as_ref()));
        let first = found.next()?;
        found
            .next()
            .is_none()
            .then(|| self.flags.get(*first.1))
            .flatten()
    }
}

/// The name in `known` closest to `name`, when close enough to be a likely typo (normalized
/// Damerau–Levenshtein similarity of 0.6 or more; ties go to the first in order).
pub(crate) fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (strsim::normalized_damerau_levenshtein(k, name), k))
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, k)| k)
}

/// Bounds of a `<lo...hi>` placeholder.
fn llama_bounds(placeholder: &str) -> Bounds {
    let range = placeholder
        .strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .and_then(|r| r.split_once("..."));
    match range.map(|(lo, hi)| (lo.parse::<f64>(), hi.parse::<f64>())) {
        Some((Ok(lo), Ok(hi))) => Bounds {
            min: Some((lo, true)),
            max: Some((hi, true)),
        },
        _ => Bounds::default(),
    }
}

/// The value kind of a llama-server placeholder.
fn llama_value_kind(placeholder: &str) -> ValueKind {
    let p = placeholder.trim();
    if p.is_empty() {
        return ValueKind::None;
    }
    let inner = |open: char, close: char| p.strip_prefix(open).and_then(|r| r.strip_suffix(close));
    if let Some(c) = inner('{', '}') {
        return ValueKind::Choices(c.split(',').map(str::to_owned).collect());
    }
    if let Some(c) = inner('[', ']').or_else(|| inner('<', '>').filter(|c| c.contains('|'))) {
        return ValueKind::Choices(c.split('|').map(str::to_owned).collect());
    }
    match p {
        "N" | "INDEX" | "PORT" | "SEED" | "P" | "L" => ValueKind::Number,
        _ if inner('<', '>').is_some_and(|r| {
            r.contains("...") && r.chars().next().is_some_and(|c| c.is_ascii_digit())
        }) =>
        {
            ValueKind::Number
        }
        _ => ValueKind::Text(p.to_owned()),
    }
}

/// Reads what a description line says about the flag: its environment variable, its allowed
/// values, and whether it is deprecated or removed.
fn annotate(flag: Option<&mut Flag>, text: &str) {
    let Some(flag) = flag else { return };
    if let Some(env) = text
        .strip_prefix("(env: ")
        .and_then(|e| e.strip_suffix(')'))
    {
        flag.env = Some(env.to_owned());
    } else if let Some(values) = text.strip_prefix("allowed values: ") {
        flag.value = ValueKind::Choices(values.split(", ").map(str::to_owned).collect());
    } else if flag.value == ValueKind::Number && text.contains("'auto'") {
        // `-ngl N`: "either an exact number, 'auto', or 'all'".
        flag.value = ValueKind::Text("N|auto|all".into());
    } else if text.contains("the argument has been removed") {
        flag.status = Status::Removed(text.to_owned());
    } else if text.contains("(DEPRECATED)") {
        flag.status = Status::Deprecated(text.to_owned());
    } else if let Status::Removed(why) = &mut flag.status {
        // The replacement is on the next line.
        why.push(' ');
        why.push_str(text);
    }
}
