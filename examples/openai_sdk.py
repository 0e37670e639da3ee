"""The official openai SDK against a running uplion (the Envoy edge), unchanged.

OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=upl-... .venv/bin/python examples/openai_sdk.py
"""

import os

import openai

client = openai.OpenAI(
    base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1"), api_key=os.environ["OPENAI_API_KEY"]
)

reply = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hello over HTTP"}])
print("chat:", reply.choices[0].message.content)

stream = client.chat.completions.create(
    model="echo", messages=[{"role": "user", "content": "streamed over HTTP"}], stream=True
)
print("stream:", "|".join(c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content))

emb = client.embeddings.create(model="minilm", input="uplion serves models")
print(f"embedding: {len(emb.data[0].embedding)} dimensions")

first = client.responses.create(model="echo", input="the Responses API")  # stored for its owner
later = client.responses.create(model="echo", input="continues it", previous_response_id=first.id)
print("responses:", first.output_text, "|", later.output_text, "|", client.responses.retrieve(later.id).status)
