import Foundation

/// An sRGB colour.
public struct PlotColor: Sendable, Equatable {
    public var r: UInt8, g: UInt8, b: UInt8
    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { self.r = r; self.g = g; self.b = b }
    var hex: String { String(format: "#%02x%02x%02x", r, g, b) }

    public static let blue = PlotColor(31, 119, 180)
    public static let orange = PlotColor(255, 127, 14)
    public static let green = PlotColor(44, 160, 44)
    public static let red = PlotColor(214, 39, 40)
    public static let lightBlue = PlotColor(160, 196, 226)
    static let white = PlotColor(255, 255, 255)
    static let black = PlotColor(0, 0, 0)
    static let axis = PlotColor(60, 60, 60)
    static let grid = PlotColor(228, 228, 228)
    static let text = PlotColor(30, 30, 30)
}

/// One line of a chart.
public struct PlotSeries: Sendable {
    public var name: String
    public var points: [(x: Double, y: Double)]
    public var color: PlotColor
    public var lineWidth: Double
    /// Draw a dot at every point (for sparse series such as evaluations).
    public var markers: Bool
    public init(name: String, points: [(x: Double, y: Double)], color: PlotColor, lineWidth: Double = 2, markers: Bool = false) {
        self.name = name; self.points = points; self.color = color; self.lineWidth = lineWidth; self.markers = markers
    }
}

/// A line chart with linear x, linear or logarithmic y, "nice" ticks, grid, legend and labels,
/// rendered either to PNG (own rasteriser and encoder) or to SVG with the same geometry.
public struct LineChart: Sendable {
    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [PlotSeries]
    public var logY: Bool
    public var width: Int
    public var height: Int

    public init(title: String, xLabel: String, yLabel: String, series: [PlotSeries], logY: Bool = false, width: Int = 900, height: Int = 520) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.series = series
        self.logY = logY; self.width = width; self.height = height
    }

    // MARK: Layout shared by both renderers

    struct Layout {
        var left: Double, right: Double, top: Double, bottom: Double
        var xMin: Double, xMax: Double, yMin: Double, yMax: Double  // y in axis units (log10 when logY)
        var xTicks: [Double], yTicks: [Double]
        var xTickLabels: [String], yTickLabels: [String]
        var logY: Bool

        func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * (right - left) }
        func py(_ y: Double) -> Double {
            let v = logY ? log10(max(y, 1e-300)) : y
            return bottom - (v - yMin) / (yMax - yMin) * (bottom - top)
        }
    }

    static let textScale = 2  // font pixels → image pixels

    func layout() -> Layout {
        let finite = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite && (!logY || $0.y > 0) }
        var xLo = finite.map(\.x).min() ?? 0, xHi = finite.map(\.x).max() ?? 1
        var yLo = finite.map(\.y).min() ?? 0, yHi = finite.map(\.y).max() ?? 1
        if logY { yLo = log10(yLo); yHi = log10(yHi) }
        if xHi <= xLo { xHi = xLo + 1 }
        if yHi <= yLo { let pad = Swift.max(abs(yLo) * 0.1, 1e-12); yLo -= pad; yHi += pad }

        let (xTicks, xStep) = LineChart.niceTicks(lo: xLo, hi: xHi, target: 8)
        let yTicks: [Double], yStep: Double
        if logY {
            let lo = floor(yLo), hi = ceil(yHi)
            yLo = lo; yHi = Swift.max(hi, lo + 1)
            yTicks = stride(from: yLo, through: yHi + 1e-9, by: 1).map { $0 }
            yStep = 1
        } else {
            (yTicks, yStep) = LineChart.niceTicks(lo: yLo, hi: yHi, target: 6)
            yLo = Swift.min(yLo, yTicks.first ?? yLo); yHi = Swift.max(yHi, yTicks.last ?? yHi)
        }
        xLo = Swift.min(xLo, xTicks.first ?? xLo)
        xHi = Swift.max(xHi, xTicks.last ?? xHi)
        let yLabels = yTicks.map { logY ? LineChart.format(pow(10, $0), step: pow(10, $0)) : LineChart.format($0, step: yStep, axisMax: yTicks.map(abs).max() ?? 0) }
        let xLabels = xTicks.map { LineChart.format($0, step: xStep, axisMax: xTicks.map(abs).max() ?? 0) }
        let s = Double(LineChart.textScale * PlotFont.advance)
        let labelWidth = Double(yLabels.map(\.count).max() ?? 1) * s
        return Layout(
            left: 24 + labelWidth, right: Double(width) - 24, top: 70, bottom: Double(height) - 62,
            xMin: xLo, xMax: xHi, yMin: yLo, yMax: yHi,
            xTicks: xTicks, yTicks: yTicks, xTickLabels: xLabels, yTickLabels: yLabels, logY: logY)
    }

    /// Ticks at multiples of 1, 2 or 5 × 10^k covering [lo, hi], about `target` of them.
    static func niceTicks(lo: Double, hi: Double, target: Int) -> ([Double], Double) {
        let raw = (hi - lo) / Double(Swift.max(1, target - 1))
        let mag = pow(10, floor(log10(raw)))
        let f = raw / mag
        let step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag
        let first = floor(lo / step) * step
        let last = ceil(hi / step) * step
        var ticks: [Double] = []
        var v = first
        while v <= last + step * 1e-9 && ticks.count < 100 {
            ticks.append(abs(v) < step * 1e-9 ? 0 : v)
            v = first + Double(ticks.count) * step
        }
        return (ticks, step)
    }

    /// Short tick text: integers plainly, axes of small or large values in "2.5e-4" style, else
    /// just enough decimals to tell neighbouring ticks apart. `axisMax` (largest |tick|) makes one
    /// axis use one style.
    static func format(_ v: Double, step: Double, axisMax: Double? = nil) -> String {
        if v == 0 { return "0" }
        let a = abs(v)
        let scale = axisMax ?? a
        if scale < 1e-2 || scale >= 1e6 {
            let e = Int(floor(log10(a)))
            let m = v / pow(10, Double(e))
            let ms = abs(m - m.rounded()) < 1e-6 ? String(Int(m.rounded())) : String(format: "%.1f", m)
            return "\(ms)e\(e)"
        }
        let decimals = Swift.max(0, Int(ceil(-log10(step) - 1e-9)))
        return String(format: "%.\(decimals)f", v)
    }

    // MARK: PNG

    /// Renders the chart as PNG bytes.
    public func png() -> [UInt8] {
        var c = Canvas(width: width, height: height, background: .white)
        let l = layout()
        let ts = LineChart.textScale
        // Grid and tick labels.
        for (i, t) in l.xTicks.enumerated() {
            let x = l.px(t)
            c.line(x, l.top, x, l.bottom, color: .grid, width: 1)
            c.text(l.xTickLabels[i], centerX: x, top: l.bottom + 8, scale: ts, color: .text)
        }
        for (i, t) in l.yTicks.enumerated() {
            let y = l.bottom - (t - l.yMin) / (l.yMax - l.yMin) * (l.bottom - l.top)
            c.line(l.left, y, l.right, y, color: .grid, width: 1)
            let label = l.yTickLabels[i]
            c.text(label, left: l.left - 8 - Double(PlotFont.width(label) * ts), top: y - Double(PlotFont.glyphHeight * ts) / 2 + 2, scale: ts, color: .text)
        }
        // Data, clipped to the plot area.
        c.clip = (l.left, l.top, l.right, l.bottom)
        for s in series {
            let pts = s.points.filter { $0.x.isFinite && $0.y.isFinite && (!logY || $0.y > 0) }.map { (l.px($0.x), l.py($0.y)) }
            c.polyline(pts, color: s.color, width: s.lineWidth)
            if s.markers || pts.count == 1 { for p in pts { c.disc(p.0, p.1, radius: 3.5, color: s.color) } }
        }
        c.clip = nil
        // Axes box.
        c.line(l.left, l.bottom, l.right, l.bottom, color: .axis, width: 1.5)
        c.line(l.left, l.top, l.left, l.bottom, color: .axis, width: 1.5)
        c.line(l.right, l.top, l.right, l.bottom, color: .axis, width: 1)
        c.line(l.left, l.top, l.right, l.top, color: .axis, width: 1)
        // Title, axis labels.
        c.text(title, centerX: Double(width) / 2, top: 14, scale: 3, color: .black)
        c.text(yLabel, left: l.left, top: l.top - 24, scale: ts, color: .text)
        c.text(xLabel, centerX: (l.left + l.right) / 2, top: Double(height) - 30, scale: ts, color: .text)
        // Legend, top right inside the plot.
        var y = l.top + 12
        let legendWidth = Double((series.map { PlotFont.width($0.name) }.max() ?? 0) * ts) + 44
        if series.count > 1 {
            c.fill(l.right - legendWidth - 14, l.top + 4, l.right - 6, l.top + 10 + Double(series.count) * 24, color: .white)
            for s in series {
                let x0 = l.right - legendWidth - 6
                c.line(x0, y + 8, x0 + 26, y + 8, color: s.color, width: 3)
                c.text(s.name, left: x0 + 34, top: y, scale: ts, color: .text)
                y += 24
            }
        }
        return PNGEncoder.encode(width: width, height: height, rgb: c.pixels)
    }

    // MARK: SVG

    /// Renders the chart as an SVG document with the same geometry as `png()`.
    public func svg() -> String {
        let l = layout()
        func f(_ v: Double) -> String { String(format: "%.2f", v) }
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        var o = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
        <rect width="100%" height="100%" fill="white"/>

        """
        for (i, t) in l.xTicks.enumerated() {
            let x = l.px(t)
            o += "<line x1=\"\(f(x))\" y1=\"\(f(l.top))\" x2=\"\(f(x))\" y2=\"\(f(l.bottom))\" stroke=\"\(PlotColor.grid.hex)\"/>\n"
            o += "<text x=\"\(f(x))\" y=\"\(f(l.bottom + 24))\" font-size=\"14\" text-anchor=\"middle\">\(esc(l.xTickLabels[i]))</text>\n"
        }
        for (i, t) in l.yTicks.enumerated() {
            let y = l.bottom - (t - l.yMin) / (l.yMax - l.yMin) * (l.bottom - l.top)
            o += "<line x1=\"\(f(l.left))\" y1=\"\(f(y))\" x2=\"\(f(l.right))\" y2=\"\(f(y))\" stroke=\"\(PlotColor.grid.hex)\"/>\n"
            o += "<text x=\"\(f(l.left - 8))\" y=\"\(f(y + 5))\" font-size=\"14\" text-anchor=\"end\">\(esc(l.yTickLabels[i]))</text>\n"
        }
        o += "<clipPath id=\"plot\"><rect x=\"\(f(l.left))\" y=\"\(f(l.top))\" width=\"\(f(l.right - l.left))\" height=\"\(f(l.bottom - l.top))\"/></clipPath>\n"
        o += "<g clip-path=\"url(#plot)\">\n"
        for s in series {
            let pts = s.points.filter { $0.x.isFinite && $0.y.isFinite && (!logY || $0.y > 0) }
            let coords = pts.map { "\(f(l.px($0.x))),\(f(l.py($0.y)))" }.joined(separator: " ")
            o += "<polyline fill=\"none\" stroke=\"\(s.color.hex)\" stroke-width=\"\(s.lineWidth)\" stroke-linejoin=\"round\" points=\"\(coords)\"/>\n"
            if s.markers || pts.count == 1 {
                for p in pts { o += "<circle cx=\"\(f(l.px(p.x)))\" cy=\"\(f(l.py(p.y)))\" r=\"3.5\" fill=\"\(s.color.hex)\"/>\n" }
            }
        }
        o += "</g>\n"
        o += "<rect x=\"\(f(l.left))\" y=\"\(f(l.top))\" width=\"\(f(l.right - l.left))\" height=\"\(f(l.bottom - l.top))\" fill=\"none\" stroke=\"\(PlotColor.axis.hex)\"/>\n"
        o += "<text x=\"\(width / 2)\" y=\"38\" font-size=\"22\" text-anchor=\"middle\">\(esc(title))</text>\n"
        o += "<text x=\"\(f(l.left))\" y=\"\(f(l.top - 10))\" font-size=\"14\">\(esc(yLabel))</text>\n"
        o += "<text x=\"\(f((l.left + l.right) / 2))\" y=\"\(height - 14)\" font-size=\"14\" text-anchor=\"middle\">\(esc(xLabel))</text>\n"
        if series.count > 1 {
            var y = l.top + 20
            let x0 = l.right - 190
            for s in series {
                o += "<line x1=\"\(f(x0))\" y1=\"\(f(y))\" x2=\"\(f(x0 + 26))\" y2=\"\(f(y))\" stroke=\"\(s.color.hex)\" stroke-width=\"3\"/>\n"
                o += "<text x=\"\(f(x0 + 34))\" y=\"\(f(y + 5))\" font-size=\"14\">\(esc(s.name))</text>\n"
                y += 24
            }
        }
        o += "</svg>\n"
        return o
    }
}

/// An RGB raster with anti-aliased thick lines, discs, rectangles and bitmap text.
struct Canvas {
    let width: Int, height: Int
    var pixels: [UInt8]
    /// Optional clip rectangle (x0, y0, x1, y1) for drawing.
    var clip: (Double, Double, Double, Double)?

    init(width: Int, height: Int, background: PlotColor) {
        self.width = width; self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = background.r; pixels[3 * i + 1] = background.g; pixels[3 * i + 2] = background.b
        }
    }

    /// Blends `color` into pixel (x, y) with coverage `alpha` in [0, 1].
    mutating func blend(_ x: Int, _ y: Int, _ color: PlotColor, _ alpha: Double) {
        guard x >= 0, y >= 0, x < width, y < height, alpha > 0 else { return }
        if let c = clip, Double(x) < c.0 - 1 || Double(x) > c.2 + 1 || Double(y) < c.1 - 1 || Double(y) > c.3 + 1 { return }
        let a = Swift.min(1, alpha)
        let i = (y * width + x) * 3
        func mix(_ old: UInt8, _ new: UInt8) -> UInt8 { UInt8((Double(old) * (1 - a) + Double(new) * a).rounded()) }
        pixels[i] = mix(pixels[i], color.r); pixels[i + 1] = mix(pixels[i + 1], color.g); pixels[i + 2] = mix(pixels[i + 2], color.b)
    }

    /// A segment of the given width: each pixel's coverage falls off linearly over one pixel
    /// around the distance `width/2` from the segment (cheap, smooth anti-aliasing).
    mutating func line(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, color: PlotColor, width w: Double) {
        Canvas.rasterize(x0, y0, x1, y1, width: w, canvasWidth: width, canvasHeight: height) { x, y, a in blend(x, y, color, a) }
    }

    /// A polyline drawn as one stroke: coverage is the maximum over its segments, so joints and
    /// dense runs of tiny segments are not painted several times over.
    mutating func polyline(_ points: [(Double, Double)], color: PlotColor, width w: Double) {
        guard points.count > 1 else { return }
        var mask = [Float](repeating: 0, count: width * height)
        var touched: [Int] = []
        let W = width
        for k in 1..<points.count {
            Canvas.rasterize(points[k - 1].0, points[k - 1].1, points[k].0, points[k].1, width: w, canvasWidth: width, canvasHeight: height) { x, y, a in
                let i = y * W + x
                if mask[i] == 0 { touched.append(i) }
                mask[i] = Swift.max(mask[i], Float(a))
            }
        }
        for i in touched { blend(i % W, i / W, color, Double(mask[i])) }
    }

    static func rasterize(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, width w: Double,
                          canvasWidth: Int, canvasHeight: Int, _ paint: (Int, Int, Double) -> Void) {
        let r = w / 2
        let minX = Swift.max(0, Int(floor(Swift.min(x0, x1) - r - 1))), maxX = Swift.min(canvasWidth - 1, Int(ceil(Swift.max(x0, x1) + r + 1)))
        let minY = Swift.max(0, Int(floor(Swift.min(y0, y1) - r - 1))), maxY = Swift.min(canvasHeight - 1, Int(ceil(Swift.max(y0, y1) + r + 1)))
        guard minX <= maxX, minY <= maxY else { return }
        let dx = x1 - x0, dy = y1 - y0
        let len2 = dx * dx + dy * dy
        for y in minY...maxY {
            for x in minX...maxX {
                // Pixel centre at (x + 0.5, y + 0.5); distance to the segment.
                let px = Double(x) + 0.5 - x0, py = Double(y) + 0.5 - y0
                let t = len2 > 0 ? Swift.max(0, Swift.min(1, (px * dx + py * dy) / len2)) : 0
                let ex = px - t * dx, ey = py - t * dy
                let d = (ex * ex + ey * ey).squareRoot()
                let coverage = Swift.max(0, Swift.min(1, r + 0.5 - d))
                if coverage > 0 { paint(x, y, coverage) }
            }
        }
    }

    mutating func disc(_ cx: Double, _ cy: Double, radius: Double, color: PlotColor) {
        line(cx, cy, cx, cy, color: color, width: radius * 2)
    }

    mutating func fill(_ x0: Double, _ y0: Double, _ x1: Double, _ y1: Double, color: PlotColor) {
        for y in Swift.max(0, Int(y0))..<Swift.min(height, Int(y1)) {
            for x in Swift.max(0, Int(x0))..<Swift.min(width, Int(x1)) { blend(x, y, color, 1) }
        }
    }

    mutating func text(_ s: String, left: Double, top: Double, scale: Int, color: PlotColor) {
        var x = Int(left.rounded())
        let y0 = Int(top.rounded())
        for ch in s {
            let rows = PlotFont.rows(ch)
            for (ry, bits) in rows.enumerated() {
                for rx in 0..<PlotFont.glyphWidth where (bits >> UInt8(PlotFont.glyphWidth - 1 - rx)) & 1 == 1 {
                    for sy in 0..<scale { for sx in 0..<scale { blend(x + rx * scale + sx, y0 + ry * scale + sy, color, 1) } }
                }
            }
            x += PlotFont.advance * scale
        }
    }

    mutating func text(_ s: String, centerX: Double, top: Double, scale: Int, color: PlotColor) {
        text(s, left: centerX - Double(PlotFont.width(s) * scale) / 2, top: top, scale: scale, color: color)
    }
}
