// The Vercel AI SDK (`ai` with `@ai-sdk/openai`), pointed at uplion's edge, works unchanged: the
// same tests through chat completions (`openai.chat(model)`) and through the Responses API, the
// provider's default (`openai(model)`, `POST /v1/responses`).
// OPENAI_BASE_URL, OPENAI_API_KEY and UPLION_MODEL are set by tests/edge/test_node_sdk.py.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, streamText, tool } from "ai";
import { z } from "zod";

const openai = createOpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY });
const modelId = process.env.UPLION_MODEL;
const apis = [
  ["chat", () => openai.chat(modelId), "openai.chat"],
  ["responses", () => openai(modelId), "openai.responses"],
];
const words = (text) => text.split(" ").length;

for (const [api, model, provider] of apis) {
  test(`${api}: generateText`, async () => {
    assert.equal(model().provider, provider);
    const text = "hello from the ai sdk";
    const r = await generateText({ model: model(), prompt: text, maxRetries: 0 });
    assert.equal(r.text, text);
    assert.equal(r.finishReason, "stop");
    assert.deepEqual(r.toolCalls, []);
    // the echo model counts a word a token, both ways
    assert.equal(r.usage.inputTokens, words(text));
    assert.equal(r.usage.outputTokens, words(text));
    assert.equal(r.usage.totalTokens, 2 * words(text));
    assert.equal(r.response.modelId, modelId);
  });

  test(`${api}: streamText`, async () => {
    const text = "one two three four five";
    const failed = [];
    const result = streamText({ model: model(), prompt: text, maxRetries: 0, onError: ({ error }) => failed.push(error) });
    const parts = [];
    for await (const part of result.textStream) parts.push(part);
    if (failed.length) throw failed[0]; // textStream ends quietly on an error; onError has it
    assert.ok(parts.length > 1, `streamed in one piece: ${JSON.stringify(parts)}`);
    assert.equal(parts.join(""), text);
    assert.equal(await result.text, text);
    assert.equal(await result.finishReason, "stop");
    const usage = await result.usage;
    assert.equal(usage.inputTokens, words(text));
    assert.equal(usage.outputTokens, words(text));
  });

  test(`${api}: a forced tool call (zod input schema)`, async () => {
    const r = await generateText({
      model: model(),
      prompt: "weather in Oslo",
      tools: { lookup: tool({ description: "Look a text up", inputSchema: z.object({ text: z.string() }) }) },
      toolChoice: { type: "tool", toolName: "lookup" },
      maxRetries: 0,
    });
    assert.equal(r.finishReason, "tool-calls");
    assert.equal(r.toolCalls.length, 1);
    assert.equal(r.toolCalls[0].toolName, "lookup");
    assert.deepEqual(r.toolCalls[0].input, { text: "weather in Oslo" });
    assert.ok(r.toolCalls[0].toolCallId);
    assert.ok(r.usage.inputTokens > 0 && r.usage.outputTokens > 0, JSON.stringify(r.usage));
  });

  test(`${api}: a forced tool call, streamed (JSON schema input)`, async () => {
    const inputSchema = jsonSchema({
      type: "object", properties: { text: { type: "string" } }, required: ["text"], additionalProperties: false,
    });
    const result = streamText({
      model: model(),
      prompt: "time in Lima",
      tools: { lookup: tool({ description: "Look a text up", inputSchema }) },
      toolChoice: { type: "tool", toolName: "lookup" },
      maxRetries: 0,
      onError: () => {}, // the error is a part of fullStream, thrown below
    });
    const calls = [];
    for await (const part of result.fullStream) {
      if (part.type === "error") throw part.error;
      if (part.type === "tool-call") calls.push(part);
    }
    assert.deepEqual(calls.map((c) => [c.toolName, c.input]), [["lookup", { text: "time in Lima" }]]);
    assert.equal(await result.finishReason, "tool-calls");
    assert.ok((await result.usage).outputTokens > 0);
  });
}
