// The README's Node quickstart, run against the proxy by tests/test_node_sdk.py.
import OpenAI from "openai";

const client = new OpenAI({
  apiKey: process.env.OPENAI_API_KEY,
  baseURL: process.env.LECTR_BASE_URL,
  defaultHeaders: { "X-Lectr-Key": process.env.LECTR_KEY, "X-Lectr-Feature": "node-quickstart" },
  maxRetries: 0,
});

const reply = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Hello" }],
});
const stream = await client.chat.completions.create({
  model: "claude-3-5-haiku-latest",
  messages: [{ role: "user", content: "Hello" }],
  stream: true,
});
let streamed = "";
for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
let status = 0;
try {
  await new OpenAI({ apiKey: "x", baseURL: process.env.LECTR_BASE_URL, maxRetries: 0 }).models.list();
} catch (err) {
  status = err.status;
}
console.log(JSON.stringify({ text: reply.choices[0].message.content, streamed, unauthorized: status }));
