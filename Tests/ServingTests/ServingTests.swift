import Foundation
import Gemma3TestSupport
import Testing

/// Parses the one JSON object a client script prints last.
private func scriptJSON(_ r: ProcessResult) throws -> [String: Any] {
    guard r.status == 0, let line = r.output.split(separator: "\n").last,
          let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
        throw ServerError(description: "client script failed (status \(r.status)):\n\(r.output)")
    }
    return object
}

/// The error object of an OpenAI error body, when the body has that shape.
private func errorObject(_ body: Any?) -> [String: Any]? {
    ((body as? [String: Any])?["error"]) as? [String: Any]
}

/// `gemma3 serve` as a child process, driven by the official `openai` Python client.
@Suite(.serialized) struct ServingTests {
    let prompt = "Once upon a time, there was a little"

    @Test func completionsThroughTheOpenAIClient() throws {
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing (scripts/install-deps.sh installs it)")
            return
        }
        let model = try TinyServingModel()
        let server = try ServerProcess(model: model.url, arguments: ["--parallel", "2", "--context", "1024"])
        let r = try scriptJSON(try runClientScript("completions_client.py", [server.baseURL, prompt]))
        let stopped = server.stop()
        #expect(stopped.exited && stopped.status == 0, "serve exited with \(stopped.status): \(server.stderr)")
        #expect(stopped.stdout.isEmpty, "stdout after the address line: \(stopped.stdout.debugDescription)")

        #expect(r["models"] as? [String] == [model.url.lastPathComponent])
        // Greedy output equals `gemma3 generate`'s for the same prompt.
        let reference = try generateJSON(model: model.url, prompt: prompt, maxNewTokens: 12)
        let referenceText = try #require(reference["text"] as? String)
        let promptIds = try #require(reference["prompt_ids"] as? [Int])
        let generatedIds = try #require(reference["generated_ids"] as? [Int])
        let expectedFinish = reference["stop_reason"] as? String == "max_new_tokens" ? "length" : "stop"
        let greedy = try #require(r["greedy"] as? [String: Any])
        #expect(greedy["text"] as? String == referenceText)
        #expect(greedy["finish_reason"] as? String == expectedFinish)
        #expect(greedy["object"] as? String == "text_completion")
        let usage = try #require(greedy["usage"] as? [String: Any])
        #expect(usage["prompt_tokens"] as? Int == promptIds.count)
        #expect(usage["completion_tokens"] as? Int == generatedIds.count)
        #expect(usage["total_tokens"] as? Int == promptIds.count + generatedIds.count)
        // Streamed: the same text in several chunks, one finish reason, the same usage.
        let streamed = try #require(r["streamed"] as? [String: Any])
        #expect(streamed["text"] as? String == referenceText)
        #expect(streamed["finish_reasons"] as? [String] == [expectedFinish])
        #expect((streamed["chunks"] as? Int ?? 0) >= 3)
        let streamedUsage = try #require(streamed["usage"] as? [String: Any])
        #expect(streamedUsage["prompt_tokens"] as? Int == promptIds.count)
        #expect(streamedUsage["completion_tokens"] as? Int == generatedIds.count)
        // Token ids in and out.
        #expect(r["tokenize"] as? [Int] == promptIds)
        #expect(r["detokenize"] as? String == prompt)
        #expect(r["from_ids"] as? String == referenceText)
        // Seeds.
        let seed = try #require(r["seed"] as? [String: String])
        #expect(seed["a1"] == seed["a2"], "same seed, different text: \(seed)")
        #expect(seed["a1"] != seed["b"], "different seeds, same text: \(seed)")
        #expect((seed["a1"] ?? "").count > 0)
        // Stop strings: cut before the first occurrence, never shown, also when streamed.
        let stop = try #require(r["stop"] as? [String: String])
        let stopString = try #require(stop["stop"])
        let cut = referenceText.range(of: stopString).map { String(referenceText[..<$0.lowerBound]) }
        #expect(cut != nil, "the stop string \(stopString.debugDescription) is not in \(referenceText.debugDescription)")
        #expect(stop["text"] == cut)
        #expect(stop["streamed"] == cut)
        #expect(stop["finish_reason"] == "stop")
        // Lengths.
        let max5 = try #require(r["max5"] as? [String: Any])
        #expect(max5["completion_tokens"] as? Int == 5)
        #expect(max5["finish_reason"] as? String == "length")
        #expect(r["n_predict3"] as? Int == 3)
        // Log-probabilities: 4 tokens, 3 alternatives each; greedy picks the most likely.
        let logprobs = try #require(r["logprobs"] as? [String: Any])
        let chosen = try #require(logprobs["token_logprobs"] as? [Double])
        let topFirst = try #require(logprobs["top_first"] as? [Double])
        #expect(chosen.count == 4)
        #expect(logprobs["top"] as? [Int] == [3, 3, 3, 3])
        #expect(chosen.allSatisfy { $0 <= 0 })
        for (a, b) in zip(chosen, topFirst) { #expect(abs(a - b) < 1e-4) }
        // The prompt cache: a prompt that extends the last one reuses its whole prefill chunks (512
        // of its 600 tokens) and answers exactly as without the cache; cache_prompt: false reuses nothing.
        let cache = try #require(r["cache"] as? [String: Int])
        #expect(cache["second"] == 512, "\(cache)")
        #expect(cache["same_text"] == 1 && cache["same_logprobs"] == 1, "\(cache)")
        #expect(cache["second_prompt"] == (cache["long"] ?? 0) + promptIds.count)
        #expect(cache["disabled"] == 0)
        // Concurrent requests give token for token what each gives alone.
        let batching = try #require(r["batching"] as? [String: [String]])
        #expect(batching["together"] == batching["alone"])
        #expect(Set(batching["alone"] ?? []).count > 1)
        // Metrics.
        let metrics = try #require(r["metrics"] as? String)
        #expect(metrics.contains(#"gemma3_requests_total{endpoint="/v1/completions",status="200"}"#), "\(metrics)")
        #expect(metrics.contains("gemma3_time_to_first_token_seconds_count"))
        #expect(metrics.contains("gemma3_request_duration_seconds_bucket"))
        #expect(metrics.contains("gemma3_queue_length_requests 0"))
        #expect(metrics.range(of: #"gemma3_generated_tokens_total [1-9]"#, options: .regularExpression) != nil)
    }

    @Test func badRequestsAreAnsweredWithOpenAIErrors() throws {
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing")
            return
        }
        let model = try TinyServingModel()
        let server = try ServerProcess(model: model.url, arguments: ["--parallel", "1", "--context", "256", "--max-body-bytes", "4096"])
        let r = try scriptJSON(try runClientScript("errors_client.py", [server.baseURL]))
        let stopped = server.stop()
        #expect(stopped.exited && stopped.status == 0, "\(server.stderr)")

        let expected: [String: Int] = [
            "malformed_json": 400, "not_an_object": 400, "wrong_type": 400, "wrong_type_bool": 400, "temperature_range": 400,
            "top_p_range": 400, "negative_max_tokens": 400, "top_logprobs_range": 400, "n2": 400, "invalid_utf8": 400,
            "missing_prompt": 400, "token_out_of_range": 400, "too_long": 400, "chat_without_template": 400,
            "not_found": 404, "too_large": 413, "unknown_fields_ignored": 200, "null_is_absent": 200,
        ]
        for (name, status) in expected.sorted(by: { $0.key < $1.key }) {
            let entry = try #require(r[name] as? [Any], "no result for \(name)")
            #expect(entry[0] as? Int == status, "\(name): \(entry)")
            #expect((entry[2] as? String ?? "").hasPrefix("application/json"), "\(name): \(entry)")
            if status != 200 {
                let error = errorObject(entry[1])
                #expect(error?["message"] is String, "\(name): \(entry)")
                #expect(error?["type"] as? String == "invalid_request_error", "\(name): \(entry)")
                #expect(error?.keys.contains("param") == true && error?.keys.contains("code") == true, "\(name): \(entry)")
            }
        }
        #expect(errorObject((r["wrong_type"] as? [Any])?[1])?["param"] as? String == "max_tokens")
        #expect(errorObject((r["n2"] as? [Any])?[1])?["param"] as? String == "n")
        #expect(errorObject((r["too_long"] as? [Any])?[1])?["code"] as? String == "context_length_exceeded")
        #expect((r["client_400"] as? [Any])?.first as? String == "BadRequestError", "\(r["client_400"] ?? "")")
        #expect((r["client_n"] as? [Any])?.first as? String == "BadRequestError", "\(r["client_n"] ?? "")")
    }

    @Test func theAPIKeyIsRequiredExceptForHealth() throws {
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing")
            return
        }
        let model = try TinyServingModel()
        let server = try ServerProcess(model: model.url, arguments: ["--parallel", "1", "--context", "256", "--api-key", "sekrit"])
        let r = try scriptJSON(try runClientScript("auth_client.py", [server.baseURL]))
        let stopped = server.stop()
        #expect(stopped.exited && stopped.status == 0, "\(server.stderr)")
        #expect(r["no_key"] as? Int == 401)
        #expect(r["wrong_key"] as? Int == 401)
        #expect(errorObject(r["wrong_key_error"])?["code"] as? String == "invalid_api_key")
        #expect(r["models_no_key"] as? Int == 401)
        #expect(r["health_no_key"] as? Int == 200)
        #expect(r["right_key"] as? Int == 200)
        #expect((r["client_wrong"] as? [Any])?.first as? String == "AuthenticationError")
        #expect(r["client_right"] as? Int == 2)
    }

    @Test func aFullQueueAnswers429AndClientsThatLeaveFreeTheirSlot() throws {
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing")
            return
        }
        let model = try TinyServingModel()
        let server = try ServerProcess(model: model.url, arguments: ["--parallel", "1", "--queue", "1", "--context", "4096"])
        let r = try scriptJSON(try runClientScript("busy_client.py", [server.baseURL]))
        let stopped = server.stop()
        #expect(stopped.exited && stopped.status == 0, "\(server.stderr)")
        let secondsPerToken = try #require(r["seconds_per_token"] as? Double)
        // What the 4000-token answer that held the slot would still have needed.
        let longAnswer = secondsPerToken * 4000
        #expect(r["a_active"] as? Double == 1)
        #expect(r["b_queued"] as? Bool == true)
        #expect(r["c_status"] as? Int == 429, "\(r)")
        #expect(r["c_retry_after"] as? String == "1")
        #expect(errorObject(r["c_error"])?["code"] as? String == "queue_full")
        #expect(errorObject(r["c_error"])?["type"] as? String == "invalid_request_error")
        #expect((r["c_client"] as? [Any])?.first as? String == "RateLimitError")
        #expect((r["b_text"] as? String ?? "").count > 0)
        let wait = try #require(r["b_wait_after_close"] as? Double)
        #expect(wait < min(2, longAnswer / 4), "the queued request waited \(wait) s after the stream was closed (long answer: \(longAnswer) s)")
        #expect(r["after_stream_cancel_active"] as? Bool == true)
        #expect(r["d"] as? String == "timed out")
        let e = try #require(r["e_seconds"] as? Double)
        #expect(e < min(2, longAnswer / 4), "a request after an abandoned one took \(e) s (long answer: \(longAnswer) s)")
        #expect(r["e_tokens"] as? Int == 3)
        #expect(r["final_queue"] as? Double == 0)
        #expect(r["final_active"] as? Double == 0)
        #expect(r["health"] as? Int == 200)
    }

    @Test func sigtermFinishesTheAnswerInFlightAndExitsZero() throws {
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing")
            return
        }
        let model = try TinyServingModel()
        let server = try ServerProcess(model: model.url, arguments: ["--parallel", "2", "--context", "512"])
        let r = try scriptJSON(try runClientScript("sigterm_client.py", [server.baseURL, String(server.process.processIdentifier)]))
        let stopped = server.stop()
        #expect(stopped.exited && stopped.status == 0, "serve exited with \(stopped.status) (normal exit: \(stopped.exited)): \(server.stderr)")
        #expect(r["finish"] as? String == "length", "\(r)")
        #expect(r["completion_tokens"] as? Int == 150)
        #expect(r["after"] as? String == "refused", "\(r)")
    }

    /// `--prompt-cache prefix` (llama-server's reuse): the longest shared prefix, whatever the chunks.
    @Test func prefixModeReusesTheLongestSharedPrefix() throws {
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing")
            return
        }
        let model = try TinyServingModel()
        let server = try ServerProcess(model: model.url, arguments: ["--parallel", "1", "--context", "512", "--prompt-cache", "prefix"])
        let r = try runPython(script: """
            import json, sys, openai
            c = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="none", max_retries=0)
            ids = list(range(100, 190))
            a = c.completions.create(model="m", prompt=ids, max_tokens=3, temperature=0, extra_body={"ignore_eos": True})
            b = c.completions.create(model="m", prompt=ids + [7, 8, 9], max_tokens=3, temperature=0)
            d = c.completions.create(model="m", prompt=[5] + ids, max_tokens=3, temperature=0)
            print(json.dumps({"first": a.usage.prompt_tokens_details.cached_tokens, "second": b.usage.prompt_tokens_details.cached_tokens,
                              "other_start": d.usage.prompt_tokens_details.cached_tokens}))
            """, arguments: [server.baseURL])
        let stopped = server.stop()
        #expect(stopped.exited && stopped.status == 0, "\(server.stderr)")
        let out = try scriptJSON(r)
        #expect(out["first"] as? Int == 0)
        #expect(out["second"] as? Int == 90, "\(out)")  // the whole first prompt
        #expect(out["other_start"] as? Int == 0, "\(out)")
    }

    /// 500 requests from 16 concurrent openai clients (streamed, whole, some closed mid-stream): no
    /// 5xx, none lost or answered twice, the server healthy afterwards and its memory flat.
    @Test func aBoundedLoadTestLosesNothing() throws {
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing")
            return
        }
        let model = try TinyServingModel()
        let server = try ServerProcess(model: model.url, arguments: ["--parallel", "8", "--context", "256", "--queue", "64"])
        func rssKiB() -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(server.process.processIdentifier)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
        }
        let script = TestPaths.repoRoot.appendingPathComponent("scripts/serve-load-test.py").path
        // A short warm-up round, so the second measures a steady state.
        _ = try runProcess("/usr/bin/env", ["python3", script, "--base-url", server.baseURL + "/v1", "--requests", "48", "--concurrency", "16"])
        let before = rssKiB()
        let load = try runProcess("/usr/bin/env", ["python3", script, "--base-url", server.baseURL + "/v1", "--requests", "500",
                                                  "--concurrency", "16", "--time-limit", "200"])
        let after = rssKiB()
        let stopped = server.stop()
        let summary = String(decoding: load.stdout, as: UTF8.self)
        print("serve load test: \(summary.trimmingCharacters(in: .whitespacesAndNewlines)); RSS \(before) → \(after) KiB")
        #expect(load.status == 0, "\(summary) \(String(decoding: load.stderr, as: UTF8.self).suffix(500))")
        #expect(stopped.exited && stopped.status == 0, "\(server.stderr)")
        // Flat: within 32 MiB of the steady state after 500 requests.
        #expect(before > 0 && after - before < 32 * 1024, "RSS grew from \(before) to \(after) KiB")
    }

    /// `gemma3 bench serve --json` starts the server itself, measures every level and prints one
    /// JSON object with the figures (llama-server is measured only where the caller names one).
    @Test func benchServePrintsOneJSONObject() throws {
        let model = try TinyServingModel()
        let run = try runProcess(try gemma3Executable().path, ["bench", "serve", "--model", model.url.path, "--concurrency", "1,2",
                                                               "--rounds", "2", "--prompt-tokens", "8", "--answer-tokens", "4",
                                                               "--parallel", "2", "--context", "128", "--threads", "1", "--json"])
        #expect(run.status == 0, "\(String(decoding: run.stderr, as: UTF8.self))")
        let object = try #require(try JSONSerialization.jsonObject(with: run.stdout) as? [String: Any])
        let servers = try #require(object["servers"] as? [[String: Any]])
        #expect(servers.count == 1 && servers[0]["name"] as? String == "gemma3 serve")
        let levels = try #require(servers[0]["levels"] as? [[String: Any]])
        #expect(levels.map { $0["concurrency"] as? Int } == [1, 2])
        for level in levels {
            #expect((level["aggregate_tokens_per_second"] as? Double ?? 0) > 0)
            #expect((level["ttft_p50_seconds"] as? Double ?? 0) > 0)
            #expect(level["tokens_per_request"] as? Double == 4, "ignore_eos: every answer has --answer-tokens tokens")
            #expect(level["requests"] as? Int == 2 * (level["concurrency"] as? Int ?? 0))
        }
        #expect((object["host_cpu"] as? String)?.isEmpty == false)
        // A concurrency above the slots is refused with one line.
        let bad = try runProcess(try gemma3Executable().path, ["bench", "serve", "--model", model.url.path, "--concurrency", "4", "--parallel", "2"])
        #expect(bad.status != 0 && String(decoding: bad.stderr, as: UTF8.self).contains("exceeds --parallel"))
    }

    /// Runs `structured_client.py` against a server and checks what it saw: every answer parsed and
    /// valid under its schema (the jsonschema package decides), json_object answers objects, and
    /// every bad format a 400 naming the parameter.
    private func checkStructuredOutput(server: ServerProcess, endpoint: String, samples: Int, maxTokens: Int) throws {
        let schemasFile = try TestPaths.temporaryDirectory("serve-schemas").appendingPathComponent("schemas.json")
        defer { try? FileManager.default.removeItem(at: schemasFile.deletingLastPathComponent()) }
        try JSONSerialization.data(withJSONObject: testSchemas).write(to: schemasFile)
        let r = try scriptJSON(try runClientScript("structured_client.py", [server.baseURL, endpoint, schemasFile.path, "\(samples)", "\(maxTokens)"]))
        #expect(r["answers"] as? Int == testSchemas.count * samples)
        let failures = r["failures"] as? [String] ?? ["no failures list"]
        #expect(failures.isEmpty, "\(failures.count) invalid answers: \(failures.prefix(5))")
        // Every answer is closed within max_tokens (it parses, above); one that fills the budget with
        // a value that could still go on (a number's digits) ends with "length", as OpenAI's do.
        let finishes = try #require(r["finish_reasons"] as? [String: Int])
        #expect(Set(finishes.keys).isSubset(of: ["stop", "length"]) && (finishes["stop"] ?? 0) > 0, "\(finishes)")
        #expect(r["json_object"] as? [String] == ["ok", "ok", "ok", "ok"], "\(r["json_object"] ?? "")")
        #expect(r["text_format_same"] as? Bool == true)
        let bad = try #require(r["bad"] as? [String: String])
        #expect(bad["unsupported_keyword"]?.hasPrefix("400 response_format ") == true && bad["unsupported_keyword"]?.contains("format") == true, "\(bad)")
        #expect(bad["bad_type"]?.hasPrefix("400 response_format") == true, "\(bad)")
        #expect(bad["not_object"]?.hasPrefix("400 response_format") == true, "\(bad)")
        #expect(bad["schema_not_object"]?.hasPrefix("400 response_format") == true, "\(bad)")
        #expect(bad["grammar"]?.hasPrefix("400 grammar") == true, "\(bad)")
    }

    @Test func responseFormatConstrainsCompletions() throws {
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing (scripts/install-deps.sh installs it)")
            return
        }
        let model = try TinyServingModel()
        let server = try ServerProcess(model: model.url, arguments: ["--parallel", "4", "--context", "2048"])
        // 10 schemas × 20 seeded samples at temperature 1 on a random model.
        try checkStructuredOutput(server: server, endpoint: "completions", samples: 20, maxTokens: 96)
        let stopped = server.stop()
        #expect(stopped.exited && stopped.status == 0, "\(server.stderr)")
    }

    @Test func chatOnTheRealModel() throws {
        guard let gguf = realGGUF else {
            print("NOTICE: ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf is absent (scripts/fetch-test-artefacts.sh): chat through gemma3 serve was not tested")
            return
        }
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing")
            return
        }
        let completionPrompt = "The capital of France is"
        let server = try ServerProcess(model: gguf, arguments: ["--parallel", "8", "--context", "1024"])
        let r = try scriptJSON(try runClientScript("chat_client.py", [server.baseURL, completionPrompt]))
        let stopped = server.stop()
        #expect(stopped.exited && stopped.status == 0, "\(server.stderr)")

        let plain = try #require(r["plain"] as? [String: Any])
        let content = try #require(plain["content"] as? String)
        #expect(!content.isEmpty)
        #expect(plain["role"] as? String == "assistant")
        #expect(plain["object"] as? String == "chat.completion")
        let usage = try #require(plain["usage"] as? [String: Any])
        #expect((usage["prompt_tokens"] as? Int ?? 0) > 10)
        let completionTokens = try #require(usage["completion_tokens"] as? Int)
        #expect((1...16).contains(completionTokens))
        #expect(plain["finish_reason"] as? String == (completionTokens == 16 ? "length" : "stop"))
        // Streamed greedy chat: the same text, role first, one finish reason, the same usage.
        let streamed = try #require(r["streamed"] as? [String: Any])
        #expect(streamed["content"] as? String == content)
        #expect(streamed["roles"] as? [String] == ["assistant"])
        #expect(streamed["finish_reasons"] as? [String] == [plain["finish_reason"] as? String ?? ""])
        let streamedUsage = try #require(streamed["usage"] as? [String: Any])
        #expect(streamedUsage["completion_tokens"] as? Int == completionTokens)
        #expect(streamedUsage["prompt_tokens"] as? Int == usage["prompt_tokens"] as? Int)
        // The second turn reuses the cached conversation.
        let second = try #require(r["second_turn"] as? [String: Any])
        let secondUsage = try #require(second["usage"] as? [String: Any])
        let cached = try #require((secondUsage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int)
        // Exact mode reuses whole 512-token prefill chunks only: none in so short a conversation.
        #expect(cached == 0, "second turn: \(secondUsage)")
        // Log-probabilities.
        let logprobs = try #require(r["logprobs"] as? [[Any]])
        #expect(logprobs.count >= 1 && logprobs.count <= 3)
        for entry in logprobs {
            #expect((entry[1] as? Double ?? 1) <= 0)
            #expect(entry[2] as? Int == 2)
        }
        // /tokenize parses the turn markup into its control tokens; /detokenize writes them back.
        let tokenize = try #require(r["tokenize"] as? [String: Any])
        let turnIds = try #require(tokenize["ids"] as? [Int])
        #expect(turnIds.count < 10 && turnIds.first == 105, "\(turnIds)")  // <start_of_turn>
        #expect(tokenize["back"] as? String == "<start_of_turn>user\nHi<end_of_turn>")
        #expect(((tokenize["pieces"] as? [[String: Any]])?.first?["piece"] as? String) == "<start_of_turn>")
        // Greedy completion equals `gemma3 generate`.
        let reference = try generateJSON(model: gguf, prompt: completionPrompt, maxNewTokens: 16)
        let completion = try #require(r["completion"] as? [String: Any])
        #expect(completion["text"] as? String == reference["text"] as? String)
        #expect(((completion["usage"] as? [String: Any])?["prompt_tokens"] as? Int) == (reference["prompt_ids"] as? [Int])?.count)
        // Eight concurrent greedy requests give token for token what each gives alone.
        let batching = try #require(r["batching"] as? [String: [String]])
        #expect(batching["together"] == batching["alone"])
        #expect(Set(batching["alone"] ?? []).count == 8)
    }

    @Test func responseFormatConstrainsChatOnTheRealModel() throws {
        guard let gguf = realGGUF else {
            print("NOTICE: ~/.cache/gemma3/gemma-3-270m-q4_k_m.gguf is absent (scripts/fetch-test-artefacts.sh): response_format on the real model was not tested")
            return
        }
        guard openAIClientAvailable else {
            Issue.record("the openai Python package is missing")
            return
        }
        let server = try ServerProcess(model: gguf, arguments: ["--parallel", "4", "--context", "2048"])
        // 10 schemas × 4 seeded samples at temperature 1, chat template, end of turn allowed once complete.
        try checkStructuredOutput(server: server, endpoint: "chat", samples: 4, maxTokens: 96)
        let stopped = server.stop()
        #expect(stopped.exited && stopped.status == 0, "\(server.stderr)")
    }
}
