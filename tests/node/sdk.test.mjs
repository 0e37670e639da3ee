// The official openai Node SDK, pointed at uplion's edge, works unchanged: chat, completions,
// embeddings, models, errors, and the Responses API.
// OPENAI_BASE_URL, OPENAI_API_KEY, UPLION_MODEL and UPLION_OTHER_API_KEY (a second member's key) are
// set by tests/edge/test_node_sdk.py.
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

// The Responses API (/v1/responses; docs/responses-api.md). The echo model answers with the last
// user text, a word a token; it calls a tool only when `tool_choice` names it, with {"text": <that text>}.
const words = (text) => text.split(" ").length;
const weather = {
  type: "function", name: "get_weather", description: "The weather at a place",
  parameters: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
};

test("responses.create", async () => {
  const text = "hello responses from node";
  const r = await client.responses.create({ model, input: text, metadata: { k: "v" } });
  assert.match(r.id, /^resp_/);
  assert.equal(r.object, "response");
  assert.equal(r.status, "completed");
  assert.equal(r.output_text, text);
  assert.equal(r.output[0].type, "message");
  assert.equal(r.output[0].content[0].text, text);
  assert.equal(r.usage.input_tokens, words(text));
  assert.equal(r.usage.output_tokens, words(text));
  assert.equal(r.usage.total_tokens, 2 * words(text));
  assert.deepEqual(r.metadata, { k: "v" });
  assert.ok(r._request_id, "x-request-id");
});

test("responses.stream: event order and the final response", async () => {
  const text = "one two three four five";
  const stream = client.responses.stream({ model, input: text });
  const events = [];
  for await (const event of stream) events.push(event);
  const final = await stream.finalResponse();
  const types = events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 4), [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
  ]);
  const deltas = events.filter((e) => e.type === "response.output_text.delta");
  assert.equal(deltas.length, words(text));
  assert.equal(deltas.map((e) => e.delta).join(""), text);
  // every delta comes after the content part opened and before any of the closing events
  assert.ok(types.indexOf("response.output_text.delta") > types.indexOf("response.content_part.added"));
  assert.ok(types.lastIndexOf("response.output_text.delta") < types.indexOf("response.output_text.done"));
  assert.deepEqual(types.slice(-4), [
    "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
  ]);
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
  assert.equal(events.at(-1).response.status, "completed");
  assert.match(final.id, /^resp_/);
  assert.equal(final.status, "completed");
  assert.equal(final.output_text, text);
  assert.equal(final.usage.output_tokens, words(text));
  assert.equal((await client.responses.retrieve(final.id)).output_text, text); // stored once finished
});

test("responses: a function call round trip", async () => {
  const first = await client.responses.create({
    model, input: "weather in Paris", tools: [weather], tool_choice: { type: "function", name: "get_weather" },
  });
  assert.equal(first.status, "completed");
  assert.equal(first.output_text, "");
  const call = first.output[0];
  assert.equal(call.type, "function_call");
  assert.equal(call.name, "get_weather");
  assert.match(call.call_id, /./);
  assert.deepEqual(JSON.parse(call.arguments), { text: "weather in Paris" });
  const second = await client.responses.create({
    model, previous_response_id: first.id, tools: [weather],
    input: [{ type: "function_call_output", call_id: call.call_id, output: "sunny" }],
  });
  assert.equal(second.previous_response_id, first.id);
  assert.equal(second.status, "completed");
  assert.equal(second.output[0].type, "message");
  assert.equal(second.output_text, "weather in Paris"); // the last user text of the whole conversation
  // the chat task held the user's words, the call's arguments and its output
  assert.ok(second.usage.input_tokens > first.usage.input_tokens, JSON.stringify([first.usage, second.usage]));
});

test("responses: a previous_response_id chain", async () => {
  const texts = ["first words", "and the second", "third and the last"];
  const chain = [];
  for (const text of texts) {
    const previous_response_id = chain.at(-1)?.id;
    const r = await client.responses.create({ model, input: text, ...(previous_response_id && { previous_response_id }) });
    assert.equal(r.output_text, text);
    assert.equal(r.previous_response_id ?? undefined, previous_response_id);
    chain.push(r);
  }
  // each step's conversation is the whole chain so far: input, then output, of every response before
  const inputs = chain.map((r) => r.usage.input_tokens);
  assert.equal(inputs[0], words(texts[0]));
  assert.equal(inputs[1], 2 * words(texts[0]) + words(texts[1]));
  assert.equal(inputs[2], 2 * (words(texts[0]) + words(texts[1])) + words(texts[2]));
});

test("responses: retrieve, input items and delete", async () => {
  const r = await client.responses.create({ model, input: "keep me a while" });
  const again = await client.responses.retrieve(r.id);
  assert.equal(again.id, r.id);
  assert.equal(again.output_text, "keep me a while");
  assert.deepEqual(again.usage, r.usage);
  const items = [];
  for await (const item of client.responses.inputItems.list(r.id)) items.push(item);
  assert.deepEqual(items.map((i) => i.type), ["message"]);
  assert.equal(items[0].content[0].text, "keep me a while");
  // typed as void by the SDK, which still hands back OpenAI's JSON body
  assert.deepEqual(await client.responses.delete(r.id), { id: r.id, object: "response", deleted: true });
  await assert.rejects(client.responses.retrieve(r.id), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.equal(e.status, 404);
    return true;
  });
  await assert.rejects(client.responses.delete(r.id), OpenAI.NotFoundError); // already gone
});

test("responses: another user's id is not found", async () => {
  assert.ok(process.env.UPLION_OTHER_API_KEY, "UPLION_OTHER_API_KEY: a second member's key");
  const other = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.UPLION_OTHER_API_KEY, maxRetries: 0 });
  const mine = await client.responses.create({ model, input: "private words" });
  const notFound = (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.equal(e.status, 404);
    return true;
  };
  await assert.rejects(other.responses.retrieve(mine.id), notFound);
  await assert.rejects(other.responses.create({ model, input: "x", previous_response_id: mine.id }), (e) => {
    notFound(e);
    assert.equal(e.param, "previous_response_id");
    return true;
  });
  await assert.rejects(other.responses.delete(mine.id), notFound);
  await assert.rejects(other.responses.inputItems.list(mine.id), notFound);
  assert.equal((await client.responses.retrieve(mine.id)).id, mine.id); // still there for its owner
});
