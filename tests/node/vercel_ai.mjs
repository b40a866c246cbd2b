// The Vercel AI SDK's streamText through the proxy, run by tests/test_node_sdk.py.
// `node vercel_ai.mjs responses` uses the provider's default (`openai(model)`: the Responses API),
// `node vercel_ai.mjs chat` chat completions (`openai.chat(model)`). Prints the text and the usage
// the SDK reports to the app, as one JSON line.
import { streamText } from "ai";
import { createOpenAI } from "@ai-sdk/openai";

const mode = process.argv[2] ?? "responses";
const openai = createOpenAI({
  apiKey: process.env.OPENAI_API_KEY,
  baseURL: process.env.LECTR_BASE_URL,
  headers: { "X-Lectr-Key": process.env.LECTR_KEY, "X-Lectr-Feature": `vercel-${mode}` },
});
const model = mode === "chat" ? openai.chat("gpt-4o-mini") : openai("o4-mini");
let failure = null;
const result = streamText({
  model,
  prompt: "Say hello",
  maxRetries: 0,
  onError: ({ error }) => {
    failure = error;
  },
});
let text = "";
for await (const part of result.textStream) text += part;
if (failure) {
  console.error(failure);
  process.exit(1);
}
const usage = await result.usage;
console.log(
  JSON.stringify({
    text,
    usage: {
      inputTokens: usage.inputTokens,
      cacheReadTokens: usage.inputTokenDetails?.cacheReadTokens ?? usage.cachedInputTokens,
      cacheWriteTokens: usage.inputTokenDetails?.cacheWriteTokens ?? null,
      outputTokens: usage.outputTokens,
      reasoningTokens: usage.outputTokenDetails?.reasoningTokens ?? usage.reasoningTokens,
      totalTokens: usage.totalTokens,
    },
  }),
);
