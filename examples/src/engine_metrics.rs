//! The engines' own Prometheus metrics, gathered from every replica of a model and labelled with
//! `model` and `replica`, for `GET /admin/models/{id}/metrics` on the admin listener: llama-server
//! (`--metrics`, on by default in its plans) and vLLM serve `/metrics` themselves, but their
//! addresses are the runtime's business, so an operator's Prometheus scrapes them through Cortex.
//!
//! Written by hand: adding two labels to each sample of the text format is a few lines; a
//! Prometheus parsing crate would parse everything to print it back unchanged.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The longest an engine may take to answer, and the most bytes read from it.
const TIMEOUT: Duration = Duration::from_secs(5);
const LIMIT: usize = 8 << 20;

/// Fetches `GET {base}/metrics` of each `(replica, base URL)` and returns them as one exposition:
/// each sample labelled `model` and `replica`, each `# HELP`/`# TYPE` line once; a replica that
/// does not answer is a comment saying why.
pub async fn gather(model: &str, replicas: &[(u32, http::Uri)]) -> String {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut out = String::new();
    let mut described = HashSet::new();
    for (replica, base) in replicas {
        let url = format!("{}/metrics", base.to_string().trim_end_matches('/'));
        let fetched = tokio::time::timeout(TIMEOUT, async {
            let response = client.get(url.parse()?).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), LIMIT)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("answered {status}").into());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(body)
        })
        .await;
        match fetched {
            Ok(Ok(body)) => relabel(
                &String::from_utf8_lossy(&body),
                model,
                *replica,
                &mut described,
                &mut out,
            ),
            Ok(Err(e)) => {
                let _ = writeln!(out, "# replica {replica} ({url}): {e}");
            }
            Err(_) => {
                let _ = writeln!(out, "# replica {replica} ({url}): no answer within 5 s");
            }
        }
    }
    out
}

/// Appends `text` to `out` with `model` and `replica` added to every sample's labels; a
/// `# HELP`/`# TYPE` line whose metric was described already (by another replica) is skipped.
fn relabel(
    text: &str,
    model: &str,
    replica: u32,
    described: &mut HashSet<String>,
    out: &mut String,
) {
    let added = format!("model=\"{}\",replica=\"{replica}\"", escape(model));
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            if let (Some(kind @ ("HELP" | "TYPE")), Some(name)) = (words.next(), words.next()) {
                if !described.insert(format!("{kind} {name}")) {
                    continue;
                }
            }
            out.push_str(line);
        } else {
            match line.find(['{', ' ']) {
                Some(i) if line[i..].starts_with("{}") => {
                    let _ = write!(out, "{}{{{added}}}{}", &line[..i], &line[i + 2..]);
                }
                Some(i) if line[i..].starts_with('{') => {
                    let _ = write!(out, "{}{{{added},{}", &line[..i], &line[i + 1..]);
                }
                Some(i) => {
                    let _ = write!(out, "{}{{{added}}}{}", &line[..i], &line[i..]);
                }
                None => out.push_str(line),
            }
        }
        out.push('\n');
    }
}

/// A label value as the text format writes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real engines' expositions (testdata), two replicas: every sample labelled, every
    /// description once.
    #[test]
    fn both_engines_samples_are_labelled_and_described_once() {
        let llama = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../testdata/llama-server-captures/03_metrics.txt"),
        )
        .unwrap();
        let llama = &llama[llama.find("\r\n\r\n").map_or(0, |i| i + 4)..];
        let vllm = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../testdata/vllm-0.32.0/cpu/captures/run8_uni/metrics.body"),
        )
        .unwrap();
        let mut described = HashSet::new();
        let mut out = String::new();
        relabel(llama, "gemma", 0, &mut described, &mut out);
        relabel(llama, "gemma", 1, &mut described, &mut out);
        assert!(
            out.contains("llamacpp:prompt_tokens_total{model=\"gemma\",replica=\"0\"} 0"),
            "{out}"
        );
        assert!(out.contains("llamacpp:prompt_tokens_total{model=\"gemma\",replica=\"1\"} 0"));
        assert_eq!(
            out.matches("# TYPE llamacpp:prompt_tokens_total counter")
                .count(),
            1
        );

        let mut out = String::new();
        relabel(&vllm, "tiny", 0, &mut HashSet::new(), &mut out);
        assert!(
            out.contains(r#"vllm:estimated_flops_per_gpu_total{model="tiny",replica="0",engine="0",model_name="tiny"} 0.0"#),
            "{out}"
        );
        for sample in out.lines().filter(|l| !l.starts_with('#')) {
            assert!(sample.contains(r#"{model="tiny",replica="0""#), "{sample}");
        }
    }
}
