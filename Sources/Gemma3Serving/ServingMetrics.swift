import Prometheus

/// The server's Prometheus metrics (`GET /metrics`, text exposition format):
///
/// - `gemma3_requests_total{endpoint, status}`: answered requests;
/// - `gemma3_prompt_tokens_total`, `gemma3_prompt_cached_tokens_total`, `gemma3_generated_tokens_total`;
/// - `gemma3_queue_length_requests`, `gemma3_active_slots_slots`: waiting requests and busy slots;
/// - `gemma3_time_to_first_token_seconds`: submission to first sampled token (histogram);
/// - `gemma3_request_duration_seconds{endpoint}`: request latency until its last byte (histogram).
public final class ServingMetrics: SchedulerObserver, @unchecked Sendable {
    public let registry = PrometheusCollectorRegistry()
    private let promptTokens: Counter
    private let cachedTokens: Counter
    private let generatedTokens: Counter
    private let queueLength: Gauge
    private let activeSlots: Gauge
    private let timeToFirstToken: ValueHistogram
    static let latencyBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]

    public init() {
        func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "gemma3", metricName: metric, unitName: unit, helpText: help)
        }
        promptTokens = registry.makeCounter(descriptor: name("prompt_tokens", "total", "Prompt tokens of finished requests"), labels: [])
        cachedTokens = registry.makeCounter(descriptor: name("prompt_cached_tokens", "total", "Prompt tokens reused from a slot's cache"), labels: [])
        generatedTokens = registry.makeCounter(descriptor: name("generated_tokens", "total", "Generated tokens"), labels: [])
        queueLength = registry.makeGauge(descriptor: name("queue_length", "requests", "Requests waiting for a slot"))
        activeSlots = registry.makeGauge(descriptor: name("active_slots", "slots", "Slots running a request"))
        timeToFirstToken = registry.makeValueHistogram(
            descriptor: name("time_to_first_token", "seconds", "Time from submission to the first sampled token"),
            buckets: Self.latencyBuckets)
    }

    /// Counts one answered request and records its latency.
    public func requestCompleted(endpoint: String, status: Int, seconds: Double) {
        registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "gemma3", metricName: "requests", unitName: "total", helpText: "HTTP requests answered"),
                             labels: [("endpoint", endpoint), ("status", String(status))]).increment()
        registry.makeValueHistogram(
            descriptor: MetricNameDescriptor(namespace: "gemma3", metricName: "request_duration", unitName: "seconds", helpText: "Request latency until the last byte"),
            labels: [("endpoint", endpoint)], buckets: Self.latencyBuckets).record(seconds)
    }

    /// The metrics in Prometheus' text format.
    public func exposition() -> String { registry.emitToString() }

    public func schedulerLoad(waiting: Int, active: Int) {
        queueLength.set(Double(waiting))
        activeSlots.set(Double(active))
    }

    public func firstToken(after seconds: Double) { timeToFirstToken.record(seconds) }

    public func requestEnded(promptTokens prompt: Int, cachedTokens cached: Int, generatedTokens generated: Int) {
        promptTokens.increment(by: Int64(prompt))
        cachedTokens.increment(by: Int64(cached))
        generatedTokens.increment(by: Int64(generated))
    }
}
