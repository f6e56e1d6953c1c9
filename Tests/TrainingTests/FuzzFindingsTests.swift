import Foundation
import Testing
import Gemma3Training

/// Inputs the fuzz targets found (docs/fuzzing.md), each now a one-line error.
@Suite struct TrainingFuzzFindingsTests {
    @Test("warmup_steps Int.max fails validation instead of overflowing the schedule (FuzzRecipe)")
    func hugeWarmup() throws {
        let recipe = try TrainingRecipe.decode(Data(#"{"warmup_steps": 9223372036854775807}"#.utf8))
        #expect(throws: TrainingError.self) { try recipe.validate() }
    }

    @Test("batch_size × block_size past 2^40 fails validation instead of overflowing tokensPerStep")
    func hugeTokensPerStep() throws {
        let recipe = try TrainingRecipe.decode(Data(#"{"batch_size": 1099511627776, "block_size": 1024}"#.utf8))
        #expect(throws: TrainingError.self) { try recipe.validate() }
    }
}
