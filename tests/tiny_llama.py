"""A tiny randomly initialised Llama causal LM with a byte-level tokenizer and a ChatML template, saved as a
local model directory; and the same model written as a GGUF file with the `gguf` package (as llama.cpp would)."""

import random

import numpy as np
import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("u", "s"), ("e", "r"), ("a", "s"), ("i", "s"), ("Ġ", "t"), ("y", "e"), ("ye", "s"), ("n", "o")]


def make_tokenizer():
    """Byte-level BPE over the 256 byte symbols plus a few merges and the ChatML special tokens."""
    from transformers import GPT2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values()) + ["".join(pair) for pair in MERGES]
    vocab = {token: i for i, token in enumerate(symbols + SPECIAL)}
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=MERGES, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                              eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL}, replace_extra_special_tokens=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny_llama_lm(directory, seed: int = 0, attention_bias: bool = False) -> str:
    """Save a 2-layer, 36-wide LlamaForCausalLM (9 query heads, 3 key/value heads, tied embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=36, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=256,
                         tie_word_embeddings=True, attention_bias=attention_bias, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def _llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """The row order llama.cpp's converter gives q/k projections (interleaved rotary halves)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(path, model_dir: str) -> None:
    """Write the tiny model at `model_dir` as an F32 llama GGUF with its tokenizer and chat template."""
    import gguf
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([" ".join(pair) for pair in MERGES])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(CHAT_TEMPLATE)

    state = {k: v.numpy() for k, v in model.state_dict().items()}
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    for i in range(config.num_hidden_layers):
        layer = f"model.layers.{i}."
        tensors = {
            "attn_norm": state[layer + "input_layernorm.weight"],
            "attn_q": _llama_cpp_permute(state[layer + "self_attn.q_proj.weight"], heads),
            "attn_k": _llama_cpp_permute(state[layer + "self_attn.k_proj.weight"], kv_heads),
            "attn_v": state[layer + "self_attn.v_proj.weight"],
            "attn_output": state[layer + "self_attn.o_proj.weight"],
            "ffn_norm": state[layer + "post_attention_layernorm.weight"],
            "ffn_gate": state[layer + "mlp.gate_proj.weight"],
            "ffn_up": state[layer + "mlp.up_proj.weight"],
            "ffn_down": state[layer + "mlp.down_proj.weight"],
        }
        for name, tensor in tensors.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(tensor, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def instruction_rows(n: int, seed: int) -> list[dict]:
    """Prompt/response pairs whose answer (yes/no) is decided by a word in the prompt."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        answer = rng.choice(["yes", "no"])
        cue = rng.choice(["great", "super"] if answer == "yes" else ["dull", "awful"])
        rows.append({"prompt": f"is it good? {cue} {rng.choice(['film', 'show', 'play'])}", "response": answer})
    return rows
