//! What a client may reach: the OpenAI-compatible surface of each engine, by method and exact path,
//! and the paths an operator allows for one model on top.
//!
//! Engines serve far more than the OpenAI API on the same port: llama-server's `/slots` (and
//! `/slots/N?action=erase`, which wipes a slot's cache), `/props` (`POST` changes settings),
//! `/metrics`, `/health`; vLLM's `/collective_rpc`, `/reset_prefix_cache`, `/sleep`,
//! `/load_lora_adapter`. None of that is a client's business, so [`Route`](super::Route) forwards
//! only what [`Surface`] lists and answers everything else with an OpenAI-shaped 404 without
//! sending it upstream. Paths are compared byte for byte, never normalized: `/v1/chat/completions/`
//! , `//v1/chat/completions` or `/v1/chat/completions/../../slots` are other paths, refused.

use std::collections::HashMap;
use std::sync::Arc;

use cortex_core::EngineKind;
use http::Method;

/// What an allowed path is, for the layers that treat some paths specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `POST /v1/chat/completions`: streams chat chunks; usage can be asked for.
    ChatCompletions,
    /// `POST /v1/completions`: streams completion chunks; usage can be asked for.
    Completions,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/responses`: streams typed events; usage in `response.completed`.
    Responses,
    /// Rerank and score endpoints.
    Rerank,
    /// A path an operator allowed for a model ([`Surface::allow`]).
    Extra,
}

impl Operation {
    /// Whether a stream of this operation is a stream of OpenAI chat or completion chunks, into
    /// which `stream_options.include_usage` may be spliced.
    pub fn streams_chunks(self) -> bool {
        matches!(self, Self::ChatCompletions | Self::Completions)
    }
}

/// One allowed method and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Entry {
    method: Method,
    path: Arc<str>,
}

/// The OpenAI-compatible operations every engine Cortex manages serves.
const OPENAI: &[(&str, Operation)] = &[
    ("/v1/chat/completions", Operation::ChatCompletions),
    ("/v1/completions", Operation::Completions),
    ("/v1/embeddings", Operation::Embeddings),
    ("/v1/responses", Operation::Responses),
];

/// llama-server b11434's rerank endpoint (with `--reranking`).
const LLAMA_CPP: &[(&str, Operation)] = &[("/v1/rerank", Operation::Rerank)];

/// vLLM 0.32.0's rerank and score endpoints (pooling models).
const VLLM: &[(&str, Operation)] = &[
    ("/v1/rerank", Operation::Rerank),
    ("/v2/rerank", Operation::Rerank),
    ("/rerank", Operation::Rerank),
    ("/v1/score", Operation::Rerank),
    ("/score", Operation::Rerank),
];

/// The paths a client may send to each model. See the [module docs](crate::route).
///
/// `GET /v1/models` and `GET /v1/models/{id}` are not in it: [`Route`](super::Route) answers them
/// itself from the registry.
///
/// ```
/// use cortex_core::EngineKind;
/// use cortex_gateway::route::{Operation, Surface};
/// use http::Method;
///
/// let surface = Surface::new().allow("gemma", Method::POST, "/tokenize");
/// let llama = EngineKind::LLAMA_CPP;
/// assert_eq!(
///     surface.operation(&llama, "gemma", &Method::POST, "/v1/chat/completions"),
///     Some(Operation::ChatCompletions)
/// );
/// assert_eq!(surface.operation(&llama, "gemma", &Method::POST, "/tokenize"), Some(Operation::Extra));
/// assert_eq!(surface.operation(&llama, "other", &Method::POST, "/tokenize"), None);
/// assert_eq!(surface.operation(&llama, "gemma", &Method::GET, "/slots"), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Surface {
    /// Extra paths by served name.
    extra: HashMap<Arc<str>, Vec<Entry>>,
}

// === impl Surface ===

impl Surface {
    /// The engines' OpenAI surface and nothing more.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also lets requests for the model served as `model` reach `method path` on its engine (an
    /// exact path, without query). Whatever that path exposes — llama-server's `/slots` shows
    /// every slot's prompt, of every client — becomes reachable by every key allowed that model.
    #[must_use]
    pub fn allow(mut self, model: &str, method: Method, path: &str) -> Self {
        let entries = self.extra.entry(Arc::from(model)).or_default();
        let entry = Entry {
            method,
            path: Arc::from(path),
        };
        if !entries.contains(&entry) {
            entries.push(entry);
        }
        self
    }

    /// The operation `method path` is for a model served as `model` by `engine`, or `None` when
    /// such a request must not reach it.
    pub fn operation(
        &self,
        engine: &EngineKind,
        model: &str,
        method: &Method,
        path: &str,
    ) -> Option<Operation> {
        if *method == Method::POST {
            let own: &[(&str, Operation)] = if *engine == EngineKind::LLAMA_CPP {
                LLAMA_CPP
            } else if *engine == EngineKind::VLLM {
                VLLM
            } else {
                &[]
            };
            if let Some((_, op)) = OPENAI.iter().chain(own).find(|(p, _)| *p == path) {
                return Some(*op);
            }
        }
        self.extra
            .get(model)
            .is_some_and(|entries| {
                entries
                    .iter()
                    .any(|e| e.method == *method && &*e.path == path)
            })
            .then_some(Operation::Extra)
    }

    /// Whether `method path` may reach some model (checked before the body is read, so a request
    /// for a path no model serves is refused without reading it).
    pub fn is_known(&self, method: &Method, path: &str) -> bool {
        let builtin = *method == Method::POST
            && OPENAI
                .iter()
                .chain(LLAMA_CPP)
                .chain(VLLM)
                .any(|(p, _)| *p == path);
        builtin
            || self
                .extra
                .values()
                .flatten()
                .any(|e| e.method == *method && &*e.path == path)
    }
}
