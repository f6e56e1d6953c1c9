import Foundation
import Testing
@testable import Gemma3Training

@Suite struct MetricsRecordTests {
    /// Lines as the earlier hand-written encoder wrote them (key order, nulls) still read.
    @Test func readsLinesOfTheEarlierFormat() {
        let run = MetricsRecord(jsonLine: #"{"kind":"run","step":0,"resumed":false,"parameters":12,"model":"m \"x\"","max_iters":30,"tokens_per_step":64,"unigram_entropy_bits":9.5,"bytes_per_token_val":null}"#)
        guard case .run(let r)? = run else { Issue.record("run line not read"); return }
        #expect(r.model == "m \"x\"" && r.parameters == 12 && r.maxIters == 30 && r.bytesPerTokenVal.isNaN)
        let step = MetricsRecord(jsonLine: #"{"kind":"step","step":3,"loss":2.5,"lr":0.001,"grad_norm":null,"tokens_per_s":100,"elapsed_s":1.5,"skipped":true}"#)
        guard case .step(let s)? = step else { Issue.record("step line not read"); return }
        #expect(s.step == 3 && s.loss == 2.5 && s.learningRate == 0.001 && s.gradNorm.isNaN && s.tokensPerSecond == 100 && s.skipped)
        let eval = MetricsRecord(jsonLine: #"{"kind":"eval","step":5,"train_loss":2,"val_loss":2.1,"train_perplexity":7.3,"val_perplexity":8.1,"train_bpb":1,"val_bpb":1.1,"elapsed_s":9}"#)
        #expect(eval == .eval(EvalMetrics(step: 5, trainLoss: 2, valLoss: 2.1, trainBitsPerByte: 1, valBitsPerByte: 1.1, elapsed: 9)))
        #expect(MetricsRecord(jsonLine: #"{"kind":"step","step":4,"lo"#) == nil)  // a line cut by a kill
        #expect(MetricsRecord(jsonLine: #"{"kind":"other","step":1}"#) == nil)
    }

    /// One object per line, same keys; non-finite numbers become null and read back as NaN.
    @Test func writesOneLineAndRoundTrips() throws {
        let record = MetricsRecord.step(StepMetrics(step: 7, loss: .infinity, learningRate: 3e-4, gradNorm: 1.25,
                                                    tokensPerSecond: 512, elapsed: 2, skipped: true))
        let line = record.jsonLine
        #expect(!line.contains("\n") && line.contains(#""loss":null"#) && line.contains(#""lr":0.0003"#))
        let keys = (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]).map { Set($0.keys) }
        #expect(keys == ["kind", "step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "skipped"])
        guard case .step(let s)? = MetricsRecord(jsonLine: line) else { Issue.record("not read back"); return }
        #expect(s.loss.isNaN && s.learningRate == 3e-4 && s.gradNorm == 1.25 && s.skipped)
        let eval = MetricsRecord.eval(EvalMetrics(step: 1, trainLoss: 2, valLoss: 3, trainBitsPerByte: 1, valBitsPerByte: 1.5, elapsed: 4))
        #expect(MetricsRecord(jsonLine: eval.jsonLine) == eval)
        #expect(eval.jsonLine.contains(#""val_perplexity":"#))
    }
}
