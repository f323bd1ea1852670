"""A tiny Llama model directory for vLLM, made offline: config, a byte-level BPE tokenizer trained
here with a chat template, special tokens, generation config. No weights: vLLM serves it with
`--load-format dummy` (random weights), so answers are noise but every code path is real.

The recipe of the vLLM findings (testdata/vllm-0.32.0/cpu/FINDINGS.md, "Model dir"), with one
change: no `max_new_tokens` in generation_config.json (vLLM 0.32.0 made it the default
`max_tokens`, silently capping answers at 16 tokens).

It also writes a LoRA adapter for that model in DIR-lora-sql (rank 8 on q_proj and v_proj,
small random weights, PEFT's layout), which the end-to-end test serves as the model `sql`.

usage: make-tiny-vllm-model.py DIR   (needs `tokenizers`, `torch`, `safetensors`: vLLM's venv has them)
"""
import json, os, sys
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders, processors

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.post_processor = processors.ByteLevel(trim_offsets=False)
corpus = [
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. Answer the question briefly.",
    "user assistant system message content role",
    "0123456789 + - * / = ( ) [ ] { } < > , . ; : ' \" ! ?",
] * 20
trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=special,
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                              show_progress=False)
tok.train_from_iterator(corpus, trainer)
tok.save(os.path.join(out, "tokenizer.json"))
vocab_n = tok.get_vocab_size()

chat_template = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
tok_cfg = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": None,
    "eos_token": "<|im_end|>",
    "pad_token": "<|endoftext|>",
    "unk_token": None,
    "model_max_length": 2048,
    "clean_up_tokenization_spaces": False,
    "add_bos_token": False,
    "add_eos_token": False,
    "chat_template": chat_template,
    "added_tokens_decoder": {
        str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                  "rstrip": False, "single_word": False, "special": True}
        for t in special
    },
}
json.dump(tok_cfg, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
          open(os.path.join(out, "special_tokens_map.json"), "w"), indent=2)

eos = tok.token_to_id("<|im_end|>")
pad = tok.token_to_id("<|endoftext|>")
config = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "vocab_size": vocab_n,
    "tie_word_embeddings": False,
    "bos_token_id": pad,
    "eos_token_id": eos,
    "pad_token_id": pad,
    "torch_dtype": "float32",
    "attention_bias": False,
    "mlp_bias": False,
}

json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
json.dump({"bos_token_id": pad, "eos_token_id": eos, "pad_token_id": pad},
          open(os.path.join(out, "generation_config.json"), "w"), indent=2)
print("vocab", vocab_n, "eos", eos, "pad", pad)


# The LoRA adapter: PEFT's file names and tensor names, shapes of the model above.
import torch
from safetensors.torch import save_file

lora = out.rstrip("/") + "-lora-sql"
os.makedirs(lora, exist_ok=True)
rank, hidden, heads, kv_heads, head_dim = 8, config["hidden_size"], 4, 2, 32
gen = torch.Generator().manual_seed(0)
tensors = {}
for layer in range(config["num_hidden_layers"]):
    p = f"base_model.model.model.layers.{layer}.self_attn"
    for proj, rows in (("q_proj", heads * head_dim), ("v_proj", kv_heads * head_dim)):
        tensors[f"{p}.{proj}.lora_A.weight"] = torch.randn(rank, hidden, generator=gen) * 0.01
        tensors[f"{p}.{proj}.lora_B.weight"] = torch.randn(rows, rank, generator=gen) * 0.01
save_file(tensors, os.path.join(lora, "adapter_model.safetensors"))
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 16,
           "lora_dropout": 0.0, "bias": "none", "target_modules": ["q_proj", "v_proj"],
           "base_model_name_or_path": out},
          open(os.path.join(lora, "adapter_config.json"), "w"), indent=2)
