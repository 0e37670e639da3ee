"""Chat (unary and streamed) and embeddings against a running uplion, over native gRPC through the
edge (the same port as the HTTP API), with an API key.

UPLION_EDGE=127.0.0.1:8080 UPLION_API_KEY=upl-... .venv/bin/python examples/quickstart.py
"""

import os

import grpc
from google.protobuf import struct_pb2

from uplion.v1 import chat_pb2, embeddings_pb2, inference_pb2_grpc

channel = grpc.insecure_channel(os.environ.get("UPLION_EDGE", "127.0.0.1:8080"))
stub = inference_pb2_grpc.InferenceServiceStub(channel)
key = (("authorization", f"Bearer {os.environ['UPLION_API_KEY']}"),)

hello = chat_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value="hello from uplion"))
reply = stub.CreateChatCompletion(
    chat_pb2.ChatCompletionRequest(model="echo", messages=[hello]), timeout=30, metadata=key
)
print("chat:", reply.choices[0].message.content, "| usage:", reply.usage.total_tokens, "tokens")

stream = stub.StreamChatCompletion(
    chat_pb2.ChatCompletionRequest(model="echo", messages=[hello]), timeout=30, metadata=key
)
print("stream:", "|".join(c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content))

text = struct_pb2.Value(string_value="uplion serves models")
emb = stub.CreateEmbedding(embeddings_pb2.EmbeddingRequest(model="minilm", input=text), timeout=60, metadata=key)
vector = emb.data[0].embedding.list_value.values
print(f"embedding: {len(vector)} dimensions, first {vector[0].number_value:.4f}")
