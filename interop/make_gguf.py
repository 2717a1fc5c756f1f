"""Write tiny llama-architecture GGUF models whose replies are known in advance (no downloads).

usage: python make_gguf.py DIR

The weights are made, not trained: attention and feed-forward weights are zero, so each
position's hidden state is its token's embedding, and the embeddings are one-hot. The output
matrix then maps every token to one "next" token with a logit gap of hundreds, so any sampler
(greedy or not, whatever the seed) follows one chain: a bigram model. Every token that is not
a reply word leads to the first word, each word to the next, and the last word either to the
end-of-sequence token (the reply ends, finish_reason "stop") or back to the first (the reply
runs until the context is full, finish_reason "length").

Files written into DIR:
    tiny-stop.gguf     "Hello wörld from a tiny llama" and then end of sequence
    tiny-loop.gguf     the same words round and round, never ending by itself
    tiny-strict.gguf   as tiny-stop, with the Llama-2-chat Jinja template, which refuses any
                       order but [system], user, assistant, user, ...
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

WORDS = ["▁Hello", "▁wörld", "▁from", "▁a", "▁tiny", "▁llama"]
REPLY = "Hello wörld from a tiny llama"  # how the words read when detokenized (leading space dropped)

# Llama-2-chat's template as published with the model (tokenizer_config.json), unchanged.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

N_EMBD = 320  # >= the vocabulary: one dimension per token
N_HEAD = 5
N_LAYER = 2
N_FF = 1024


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    tokens += ["▁", *WORDS]
    types += [TokenType.NORMAL] * (1 + len(WORDS))
    scores = [0.0] * len(tokens)
    return tokens, scores, [int(t) for t in types]


def write(path: Path, *, loop: bool, template: str | None) -> None:
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)
    assert n_vocab <= N_EMBD
    first = tokens.index(WORDS[0])
    chain = {tokens.index(w): tokens.index(n) for w, n in itertools.pairwise(WORDS)}
    chain[tokens.index(WORDS[-1])] = first if loop else 2  # 2 is </s>

    writer = GGUFWriter(str(path), "llama")
    writer.add_name(path.stem)
    writer.add_context_length(32768)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    if template is not None:
        writer.add_chat_template(template)

    embeddings = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    embeddings[np.arange(n_vocab), np.arange(n_vocab)] = 1.0
    output = np.zeros((n_vocab, N_EMBD), dtype=np.float32)
    for token in range(n_vocab):
        output[chain.get(token, first), token] = 10.0  # after RMS norm: a logit gap of 10 * sqrt(320)
    writer.add_tensor("token_embd.weight", embeddings)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    square = np.zeros((N_EMBD, N_EMBD), dtype=np.float32)
    for layer in range(N_LAYER):
        blk = f"blk.{layer}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{blk}.{name}.weight", square)
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", np.zeros((N_FF, N_EMBD), dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_up.weight", np.zeros((N_FF, N_EMBD), dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_down.weight", np.zeros((N_EMBD, N_FF), dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write(out / "tiny-stop.gguf", loop=False, template=None)
    write(out / "tiny-loop.gguf", loop=True, template=None)
    write(out / "tiny-strict.gguf", loop=False, template=LLAMA2_CHAT_TEMPLATE)


if __name__ == "__main__":
    main()
