// llama-dump-logits MODEL IDS.txt OUT.f32 THREADS N_GEN [LORA.gguf]
//
// The llama.cpp side of Tests/GGUFTests/LlamaCppLogitsTests.swift: extends the whitespace-separated
// token ids in IDS.txt greedily by N_GEN tokens (printed to stdout, one line), then writes the float32
// logits [tokens x vocab] of the whole sequence (prompt + continuation), computed in one batch, to OUT.f32.
// With LORA.gguf, that LoRA adapter is applied at scale 1 (as `llama-cli --lora`).
// Built against libllama by scripts/fetch-test-artefacts.sh.
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <vector>

static int fail(const char * what) { fprintf(stderr, "llama-dump-logits: %s\n", what); return 1; }

int main(int argc, char ** argv) {
    if (argc != 6 && argc != 7) return fail("usage: llama-dump-logits MODEL IDS.txt OUT.f32 THREADS N_GEN [LORA.gguf]");
    const int n_threads = atoi(argv[4]), n_gen = atoi(argv[5]);
    std::vector<llama_token> ids;
    { std::ifstream in(argv[2]); long t; while (in >> t) ids.push_back((llama_token) t); }
    if (ids.empty()) return fail("no token ids");
    const int n_total = (int) ids.size() + n_gen;

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) return fail("cannot load model");
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_total; cp.n_batch = n_total; cp.n_ubatch = n_total;
    cp.n_threads = n_threads; cp.n_threads_batch = n_threads;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) return fail("cannot create context");
    llama_adapter_lora * lora = nullptr;
    if (argc == 7) {
        lora = llama_adapter_lora_init(model, argv[6]);
        if (!lora) return fail("cannot load the LoRA adapter");
        float scale = 1.0f;
        if (llama_set_adapters_lora(ctx, &lora, 1, &scale) != 0) return fail("cannot apply the LoRA adapter");
    }

    // 1. Greedy continuation through the KV cache (argmax of the last position's logits).
    std::vector<llama_token> seq = ids;
    llama_batch batch = llama_batch_init(n_total, 0, 1);
    auto decode = [&](int from, int to, bool all_logits) {
        batch.n_tokens = 0;
        for (int i = from; i < to; i++) {
            const int k = batch.n_tokens++;
            batch.token[k] = seq[i]; batch.pos[k] = i; batch.n_seq_id[k] = 1; batch.seq_id[k][0] = 0;
            batch.logits[k] = all_logits || i == to - 1;
        }
        return llama_decode(ctx, batch) == 0;
    };
    if (!decode(0, (int) seq.size(), false)) return fail("decode failed");
    for (int g = 0; g < n_gen; g++) {
        const float * l = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < n_vocab; v++) if (l[v] > l[best]) best = v;
        seq.push_back(best);
        printf("%s%d", g ? " " : "", best);
        if (g + 1 < n_gen && !decode((int) seq.size() - 1, (int) seq.size(), false)) return fail("decode failed");
    }
    printf("\n");

    // 2. The logits of every position of prompt + continuation, in one batch on a cleared cache.
    llama_memory_clear(llama_get_memory(ctx), true);
    if (!decode(0, (int) seq.size(), true)) return fail("decode failed");
    FILE * out = fopen(argv[3], "wb");
    if (!out) return fail("cannot write output");
    for (int i = 0; i < (int) seq.size(); i++) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), n_vocab, out);
    fclose(out);

    llama_batch_free(batch);
    llama_free(ctx);
    if (lora) llama_adapter_lora_free(lora);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
