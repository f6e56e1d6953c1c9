import Foundation
import Gemma3TestSupport
import Testing
import Gemma3Training
@testable import Gemma3Plots

/// An independent PNG decoder: Python's zlib (checks Adler-32) and crc32, and the PNG unfiltering rules.
let pythonPNGDecoder = """
import sys, zlib, struct
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\\x89PNG\\r\\n\\x1a\\n', 'signature'
pos, idat, ihdr, chunks = 8, b'', None, []
while pos < len(data):
    n, = struct.unpack('>I', data[pos:pos+4]); typ = data[pos+4:pos+8]; body = data[pos+8:pos+8+n]
    crc, = struct.unpack('>I', data[pos+8+n:pos+12+n])
    assert zlib.crc32(typ + body) & 0xffffffff == crc, 'crc of ' + typ.decode()
    chunks.append(typ)
    if typ == b'IHDR': ihdr = struct.unpack('>IIBBBBB', body)
    if typ == b'IDAT': idat += body
    pos += 12 + n
assert chunks[0] == b'IHDR' and chunks[-1] == b'IEND', chunks
w, h, depth, ctype, comp, filt, inter = ihdr
assert (depth, ctype, comp, filt, inter) == (8, 2, 0, 0, 0)
raw = zlib.decompress(idat)
stride = w * 3
assert len(raw) == h * (stride + 1)
if len(sys.argv) > 2 and sys.argv[2] == '--structure-only':
    print('ok', w, h); sys.exit(0)
out = bytearray(); prev = bytearray(stride)
for y in range(h):
    f = raw[y*(stride+1)]; line = bytearray(raw[y*(stride+1)+1:(y+1)*(stride+1)])
    for i in range(stride):
        a = line[i-3] if i >= 3 else 0; b = prev[i]; c = prev[i-3] if i >= 3 else 0
        if f == 0: p = 0
        elif f == 1: p = a
        elif f == 2: p = b
        elif f == 3: p = (a + b) // 2
        elif f == 4:
            pp = a + b - c; pa, pb, pc = abs(pp-a), abs(pp-b), abs(pp-c)
            p = a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
        else: raise Exception('filter %d' % f)
        line[i] = (line[i] + p) & 255
    out += line; prev = line
if len(sys.argv) > 2:
    assert bytes(out) == open(sys.argv[2], 'rb').read(), 'pixels differ'
print('ok', w, h)
"""

@Suite struct PlotTests {
    @Test func pngDecodesWithAnIndependentDecoderToTheSamePixels() throws {
        let dir = try TemporaryDirectory()
        let w = 97, h = 61
        var rgb = [UInt8](repeating: 255, count: w * h * 3)
        var rng = SystemRandomNumberGenerator()
        for y in 0..<h { for x in 0..<w {
            let i = (y * w + x) * 3
            if x < 30 { rgb[i] = UInt8(x * 8); rgb[i + 1] = UInt8(y * 4); rgb[i + 2] = 7 }       // gradients
            else if x < 60 { rgb[i] = UInt8.random(in: 0...255, using: &rng); rgb[i + 1] = rgb[i]; rgb[i + 2] = 0 }  // noise
            else if (x + y) % 9 == 0 { rgb[i] = 0; rgb[i + 1] = 0; rgb[i + 2] = 0 }                   // repeats
        } }
        let png = dir.url.appendingPathComponent("t.png"), raw = dir.url.appendingPathComponent("t.rgb")
        try Data(PNGEncoder.encode(width: w, height: h, rgb: rgb)).write(to: png)
        try Data(rgb).write(to: raw)
        let r = try runPython(script: pythonPNGDecoder, arguments: [png.path, raw.path])
        let (status, out) = (r.status, r.output)
        #expect(status == 0, "\(out)")
    }

    @Test func checksumsMatchKnownValues() {
        // Standard check values of CRC-32 and Adler-32 for "123456789" and "Wikipedia".
        #expect(PNGEncoder.crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(PNGEncoder.adler32(Array("Wikipedia".utf8)) == 0x11E6_0398)
    }

    @Test func reportWritesDecodablePNGAndSVGFigures() throws {
        let dir = try TemporaryDirectory()
        var lines: [String] = []
        lines.append(MetricsRecord.run(RunInfo(startStep: 0, resumed: false, parameters: 1234, model: "test", maxIters: 300,
                                               tokensPerStep: 512, unigramEntropyBits: 9.5, bytesPerTokenVal: 4.1)).jsonLine)
        for s in 1...300 {
            let loss = 7 * exp(-Double(s) / 80) + 2 + 0.1 * sin(Double(s))
            lines.append(MetricsRecord.step(StepMetrics(step: s, loss: loss, learningRate: 1e-3 * min(1, Double(s) / 30),
                                                        gradNorm: 1 / Double(s).squareRoot(), tokensPerSecond: 1000, elapsed: Double(s),
                                                        skipped: false)).jsonLine)
            if s % 50 == 0 {
                lines.append(MetricsRecord.eval(EvalMetrics(step: s, trainLoss: loss, valLoss: loss + 0.1, trainBitsPerByte: 1,
                                                            valBitsPerByte: 1.1, elapsed: Double(s))).jsonLine)
            }
        }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: dir.url.appendingPathComponent("metrics.jsonl"))
        let report = try TrainingReport(runDirectory: dir.url)
        if let keep = ProcessInfo.processInfo.environment["GEMMA3_PLOT_TEST_OUT"] {  // to look at the figures
            _ = try report.write(to: URL(fileURLWithPath: keep))
        }
        #expect(report.steps.count == 300 && report.evals.count == 6)
        let files = try report.write(to: dir.url, samples: [ReportSample(temperature: 0.8, prompt: "Once", text: "Once upon a time")])
        #expect(files.count == 7)
        for name in ["loss", "grad_norm", "lr"] {
            let r = try runPython(script: pythonPNGDecoder, arguments: [dir.url.appendingPathComponent("\(name).png").path, "--structure-only"])
            let (status, out) = (r.status, r.output)
            #expect(status == 0 && out.contains("ok 900 520"), "\(name): \(out)")
            let svg = try String(contentsOf: dir.url.appendingPathComponent("\(name).svg"), encoding: .utf8)
            #expect(svg.hasPrefix("<svg") && svg.contains("<polyline"))
            let xml = try runPython(script: "import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1]); print('ok')",
                                arguments: [dir.url.appendingPathComponent("\(name).svg").path])
            #expect(xml.status == 0, "\(xml.output)")
        }
        let md = try String(contentsOf: dir.url.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(md.contains("![loss](loss.png)") && md.contains("Once upon a time") && md.contains("best val loss"))
    }

    /// `gemma3 plot RUN --compare OTHER`: the other run's evaluations in the loss figure and a table row.
    @Test func comparedRunsAppearInTheLossFigureAndTheReport() throws {
        func run(_ offset: Double) throws -> (TemporaryDirectory, TrainingReport) {
            let dir = try TemporaryDirectory()
            var lines: [String] = []
            for s in stride(from: 0, through: 100, by: 20) {
                let loss = 5 * exp(-Double(s) / 50) + 2 + offset
                lines.append(MetricsRecord.eval(EvalMetrics(step: s, trainLoss: loss, valLoss: loss + 0.1, trainBitsPerByte: 1,
                                                            valBitsPerByte: 1.1, elapsed: Double(s))).jsonLine)
            }
            try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: dir.url.appendingPathComponent("metrics.jsonl"))
            return (dir, try TrainingReport(runDirectory: dir.url))
        }
        let (a, f32) = try run(0), (b, bf16) = try run(0.25)
        _ = b
        let charts = f32.charts(label: "f32", comparisons: [.init(label: "bf16", report: bf16)])
        let loss = try #require(charts.first { $0.name == "loss" }?.chart)
        let names = loss.series.map(\.name)
        #expect(names.contains("val (eval): f32") && names.contains("val (eval): bf16") && names.contains("train (eval): bf16"))
        #expect(loss.series.first { $0.name == "val (eval): bf16" }?.points.last?.y == bf16.evals.last?.valLoss)
        let md = f32.markdown(samples: [], samplesNote: nil, label: "f32", comparisons: [.init(label: "bf16", report: bf16)])
        #expect(md.contains("## Compared runs") && md.contains("| bf16 | 100 |") && md.contains("| 0.2500 |"), "\(md)")
        #expect(loss.svg().contains("val (eval): bf16"))
        _ = a
    }

    @Test func niceTicksAndLabels() {
        let (ticks, step) = LineChart.niceTicks(lo: 0, hi: 1500, target: 8)
        #expect(step == 200 && ticks.first == 0 && ticks.last == 1600)
        #expect(LineChart.format(2.5e-4, step: 5e-5) == "2.5e-4")
        #expect(LineChart.format(1000, step: 200) == "1000")
        #expect(LineChart.format(3.5, step: 0.5) == "3.5")
    }
}
