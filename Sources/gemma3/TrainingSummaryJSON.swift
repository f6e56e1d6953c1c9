import Gemma3Training

/// The one JSON object `train --json` and `finetune --json` print at the end; `extra` holds
/// further `"key":value` members (with a trailing comma).
func trainingSummaryJSON(_ summary: TrainingSummary, extra: String = "") -> String {
    func n(_ v: Double?) -> String { v.map { $0.isFinite ? "\($0)" : "null" } ?? "null" }
    let e = summary.lastEval
    return "{\"step\":\(summary.step),\"interrupted\":\(summary.interruptedBy != nil)," + extra
        + "\"train_loss\":\(n(e?.trainLoss)),\"val_loss\":\(n(e?.valLoss)),\"val_perplexity\":\(n(e?.valPerplexity)),"
        + "\"val_bpb\":\(n(e?.valBitsPerByte)),\"best_val_loss\":\(n(summary.bestValLoss)),"
        + "\"unigram_entropy_bits\":\(n(summary.unigramEntropyBits)),\"tokens_per_s\":\(n(summary.tokensPerSecond))}\n"
}
