// A training recipe JSON file (`TrainingRecipe.decode`), validated, then what the trainer derives from it.
import Foundation
import FuzzSupport
import Gemma3Training

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let bytes = fuzzInput(data, size), let recipe = try? TrainingRecipe.decode(Data(bytes), source: "fuzz-recipe.json"),
          (try? recipe.validate()) != nil else { return 0 }
    _ = recipe.tokensPerStep
    _ = recipe.effectiveCheckpointInterval
    let schedule = LearningRateSchedule(recipe: recipe)
    for step in [0, recipe.warmupSteps, recipe.maxIters / 2, recipe.maxIters] { _ = schedule(step) }
    return 0
}
