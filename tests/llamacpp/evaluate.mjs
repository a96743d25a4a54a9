// Has llama.cpp (prebuilt, CPU, through node-llama-cpp) evaluate a GGUF model: the next-token
// distribution after every position of a token sequence, greedy tokens after a prompt, and the ids
// of a text through the model's own tokenizer, as JSON.
//
//   node evaluate.mjs MODEL.gguf [--tokens 1,2,3] [--prompt-length N --greedy M] [--text TEXT] [--threads T]
//   -> {"probabilities": [[p(0), ..., p(V-1)] per position], "greedy": [M ids], "tokenized": [ids of TEXT]}
import {getLlama} from "node-llama-cpp";

function parseArguments(argv) {
    const options = {model: undefined, tokens: [], promptLength: 0, greedy: 0, threads: 1, text: undefined};
    for (let i = 0; i < argv.length; i++) {
        const value = () => {
            if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
            return argv[++i];
        };
        switch (argv[i]) {
            case "--tokens": options.tokens = value().split(",").filter((s) => s !== "").map(Number); break;
            case "--prompt-length": options.promptLength = Number(value()); break;
            case "--greedy": options.greedy = Number(value()); break;
            case "--threads": options.threads = Number(value()); break;
            case "--text": options.text = value(); break;
            default:
                if (options.model !== undefined) throw new Error(`unexpected argument ${argv[i]}`);
                options.model = argv[i];
        }
    }
    if (options.model === undefined)
        throw new Error("usage: evaluate.mjs MODEL.gguf [--tokens 1,2,3] [--prompt-length N --greedy M] [--text TEXT]");
    if (options.tokens.some((t) => !Number.isInteger(t) || t < 0)) throw new Error("--tokens must be non-negative integers");
    return options;
}

// Greedy decoding leaves the logits as they are, so the distribution llama.cpp reports is the
// softmax of the raw logits over the whole vocabulary.
const greedyNext = (extra) => ({generateNext: {...extra, options: {temperature: 0, topK: 0, topP: 1, minP: 0}}});

async function main() {
    const options = parseArguments(process.argv.slice(2));
    const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
    const model = await llama.loadModel({modelPath: options.model});
    const needed = Math.max(options.tokens.length, options.promptLength + options.greedy) + 1;
    const context = await model.createContext({
        contextSize: Math.max(needed, 16),
        batchSize: Math.max(needed, 16),
        threads: options.threads,
        flashAttention: false,
        // An f16 cache moves probabilities by up to ~1e-3 where routing is near a tie; compare exactly.
        experimentalKvCacheKeyType: "F32",
        experimentalKvCacheValueType: "F32",
    });
    const sequence = context.getSequence();
    // Added tokens written in the text are matched as tokens, as Hugging Face's (and latent's) encode does.
    const tokenized = options.text === undefined ? [] : Array.from(model.tokenize(options.text, true));

    const probabilities = [];
    if (options.tokens.length > 0) {
        const results = await sequence.controlledEvaluate(options.tokens.map((t) => [t, greedyNext({probabilities: true})]));
        for (const result of results) {
            const map = result.next.probabilities;
            const row = new Array(map.size).fill(0);
            for (const [token, p] of map) row[token] = p;
            probabilities.push(row);
        }
        await sequence.clearHistory();
    }

    const greedy = [];
    if (options.greedy > 0) {
        const prompt = options.tokens.slice(0, options.promptLength);
        let results = await sequence.controlledEvaluate(prompt.map((t, i) => i + 1 === prompt.length ? [t, greedyNext({token: true})] : t));
        let next = results[results.length - 1].next.token;
        while (greedy.length < options.greedy) {
            greedy.push(next);
            if (greedy.length === options.greedy) break;
            results = await sequence.controlledEvaluate([[next, greedyNext({token: true})]]);
            next = results[0].next.token;
        }
    }
    process.stdout.write(JSON.stringify({probabilities, greedy, tokenized}) + "\n");
    await context.dispose();
    await model.dispose();
    await llama.dispose();
}

main().catch((error) => {
    process.stderr.write(`evaluate.mjs: ${error.message ?? error}\n`);
    process.exit(1);
});
