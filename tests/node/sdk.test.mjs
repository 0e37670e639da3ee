// The official openai Node SDK, pointed at uplion's edge, works unchanged.
// OPENAI_BASE_URL and UPLION_MODEL are set by tests/edge/test_node_sdk.py.
import assert from "node:assert/strict";
import { test } from "node:test";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY, maxRetries: 0 });
const model = process.env.UPLION_MODEL;
const user = (content) => [{ role: "user", content }];

test("chat completion", async () => {
  const r = await client.chat.completions.create({ model, messages: user("hello from node"), n: 2 });
  assert.equal(r.object, "chat.completion");
  assert.deepEqual(r.choices.map((c) => c.message.content), ["hello from node", "hello from node"]);
  assert.equal(typeof r.created, "number");
  assert.equal(r.usage.total_tokens, 9);
});

test("streaming chat with usage", async () => {
  const stream = await client.chat.completions.create({
    model, messages: user("one two three"), stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, "one two three");
  assert.equal(usage.completion_tokens, 3);
});

test("tools in the request", async () => {
  const r = await client.chat.completions.create({
    model, messages: user("call it"), tool_choice: "required",
    tools: [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }],
  });
  assert.equal(r.choices[0].finish_reason, "tool_calls");
  assert.equal(r.choices[0].message.tool_calls[0].function.name, "lookup");
});

test("legacy completions", async () => {
  const r = await client.completions.create({ model, prompt: "a b c", max_tokens: 2 });
  assert.equal(r.choices[0].text, "a b ");
});

test("embeddings, float and base64", async () => {
  const floats = await client.embeddings.create({ model, input: ["alpha"], encoding_format: "float" });
  const dflt = await client.embeddings.create({ model, input: ["alpha"] }); // base64 under the hood
  assert.equal(floats.data[0].embedding.length, 16);
  floats.data[0].embedding.forEach((v, i) => assert.ok(Math.abs(v - dflt.data[0].embedding[i]) < 1e-6));
});

test("models list and retrieve", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(model));
  assert.equal((await client.models.retrieve(model)).id, model);
});

test("errors raise the SDK's classes", async () => {
  await assert.rejects(client.chat.completions.create({ model: "nope", messages: user("x") }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError);
    assert.equal(e.code, "model_not_found");
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model, messages: [] }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.param, "messages");
    return true;
  });
});
