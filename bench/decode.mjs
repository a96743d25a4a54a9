// llama.cpp's side of bench/decode.sh: prompt processing and greedy generation speed of a GGUF model
// at batch 1, as one JSON line {"prompt_tokens_per_s": ..., "generation_tokens_per_s": ...}.
//   node bench/decode.mjs MODEL.gguf PROMPT_TOKENS NEW_TOKENS THREADS
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
// node-llama-cpp is installed for the tests (.ci/bootstrap), not beside this script.
const {getLlama} = await import(pathToFileURL(path.join(here, "../tests/llamacpp/node_modules/node-llama-cpp/dist/index.js")).href);

const [modelPath, promptText, newText, threadsText] = process.argv.slice(2);
const promptTokens = Number(promptText), newTokens = Number(newText), threads = Number(threadsText);
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({contextSize: promptTokens + newTokens + 8, batchSize: promptTokens, threads,
    flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"});
const sequence = context.getSequence();
const greedy = {generateNext: {token: true, options: {temperature: 0}}};
const prompt = Array.from({length: promptTokens}, (_, i) => 32 + (i * 7) % 90);  // printable bytes

let start = process.hrtime.bigint();
let results = await sequence.controlledEvaluate(prompt.map((t, i) => i + 1 === prompt.length ? [t, greedy] : t));
const promptSeconds = Number(process.hrtime.bigint() - start) / 1e9;
let next = results[results.length - 1].next.token;
start = process.hrtime.bigint();
for (let i = 0; i < newTokens; i++) {
    results = await sequence.controlledEvaluate([[next, greedy]]);
    next = results[0].next.token;
}
const generationSeconds = Number(process.hrtime.bigint() - start) / 1e9;
process.stdout.write(JSON.stringify({prompt_tokens_per_s: promptTokens / promptSeconds,
    generation_tokens_per_s: newTokens / generationSeconds}) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
