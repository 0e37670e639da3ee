"""LangChain's `ChatOpenAI` (langchain-openai), pointed at the edge, works unchanged: `invoke`,
`stream` and a forced tool call, through chat completions (`use_responses_api=False`) and through
the Responses API (`use_responses_api=True`, `POST /v1/responses`). The only settings are the ones
any OpenAI-compatible server needs: `base_url`, `api_key`, and `stream_usage=True` (LangChain asks
for streamed usage by default only when talking to api.openai.com itself)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from .conftest import Edge

# without and with the Responses API
pytestmark = pytest.mark.parametrize("responses_api", [False, True], ids=["chat", "responses"])


def lookup(text: str) -> str:
    """Look a text up."""
    return text


def chat_model(edge: Edge, responses_api: bool) -> ChatOpenAI:
    return ChatOpenAI(
        model="edge-echo",
        base_url=f"{edge.url}/v1",
        api_key=SecretStr(edge.api_key),
        max_retries=0,
        stream_usage=True,
        use_responses_api=responses_api,
    )


def assert_usage(message: AIMessage, words: int) -> None:
    """The echo model counts a word a token, both ways."""
    usage = message.usage_metadata
    assert usage is not None, message
    assert (usage["input_tokens"], usage["output_tokens"]) == (words, words)
    assert usage["total_tokens"] == 2 * words


def test_invoke(edge: Edge, responses_api: bool) -> None:
    message = chat_model(edge, responses_api).invoke("hello from langchain")
    assert isinstance(message, AIMessage)
    assert message.text == "hello from langchain"
    assert message.tool_calls == []
    assert message.response_metadata["model_name"] == "edge-echo"
    # the API asked for is the API that answered (OpenAI's id prefixes)
    answer_id = message.response_metadata["id"]
    assert answer_id.startswith("resp_" if responses_api else "chatcmpl-"), answer_id
    assert_usage(message, 3)


def test_stream(edge: Edge, responses_api: bool) -> None:
    chunks = list(chat_model(edge, responses_api).stream("one two three four"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    texts = [c.text for c in chunks if c.text]
    assert len(texts) > 1, texts  # streamed word by word, not in one piece
    assert "".join(texts) == "one two three four"
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.text == "one two three four"
    assert_usage(whole, 4)


def test_bind_tools_forced_call(edge: Edge, responses_api: bool) -> None:
    model = chat_model(edge, responses_api).bind_tools([lookup], tool_choice="lookup")
    message = model.invoke("weather in Oslo")
    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("lookup", {"text": "weather in Oslo"})]
    assert message.tool_calls[0]["id"]
    assert message.invalid_tool_calls == []
    usage = message.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] > 0
