import Foundation
import Testing
@testable import Gemma3Tokenizers

/// Loaded once for the whole suite (from ../shared/data/gpt2, vocab.json + merges.txt).
let sharedGPT2: GPT2Tokenizer? = try? GPT2Tokenizer(directory: SharedData.gpt2)

func loadShared() throws -> GPT2Tokenizer {
    guard let tokenizer = sharedGPT2 else {
        // Surface the real error.
        return try GPT2Tokenizer(directory: SharedData.gpt2)
    }
    return tokenizer
}

/// Hand-written texts that exercise every branch of the split pattern.
let adversarialTexts: [String] = [
    "", " ", "  ", "   ", "\n", "\n\n", "\t", " \t ", "\r\n", "a\r\nb", "a\r\n\r\nb", "x\n\n\ny", "end   ", "end \n",
    "Hello world", "Hello  world", "Hello   world", "   leading spaces", "trailing spaces   ", "tabs\tand\t\twords",
    "it's", "It'S", "IT'S", "don't", "DON'T", "we're", "WE'RE", "they've", "THEY'VE", "I'm", "I'M", "we'll", "WE'LL",
    "he'd", "HE'D", "'s'S't'T're'RE've'VE'm'M'll'LL'd'D", "''s", "!'s", " 's", "'", "''", "' s", "'re'", "'ll've'd",
    "rock'n'roll", "o'clock", "’s curly apostrophe", "'\u{301}s",
    "abc123def", "123abc", "a1b2c3", "3.14159", "1,000,000", "２０２４年", "٣٤٥ Arabic-Indic", "५६७ Devanagari digits",
    "Ⅻ roman numeral", "½ ¾ ² ³", "x²+y²", "H₂O", "①②③",
    "!!!", "?!?!", "...", "…", "---", "—", "–", "a--b", "(a)[b]{c}", "<|endoftext|>", "x<|endoftext|>y", "<|endoftext", "|>",
    "\"quoted\"", "“curly”", "‘single’", "«guillemets»", "„German“", "#hashtag @mention $5 100% a&b *x* _y_ ~z~ `code`",
    "café", "cafe\u{301}", "naïve", "Ångström", "e\u{301}\u{302}\u{303}", "\u{301}leading mark", " \u{301}",
    "Straße", "ΣΊΣΥΦΟΣ", "Москва", "Україна", "עברית", "العربية", "فارسی", "हिन्दी", "বাংলা", "தமிழ்", "ภาษาไทย",
    "ລາວ", "ქართული", "Հայերեն", "አማርኛ", "ᏣᎳᎩ", "ᚠᚢᚦ", "𐌰𐌱𐌲 Gothic", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "ｆｕｌｌｗｉｄｔｈ",
    "中文字符", "日本語のテキスト", "한국어 텍스트", "漢字かなカナ", "𠀀𠀁 CJK Ext B", "ㄅㄆㄇ",
    "😀", "😀😀😀", "👩‍👩‍👧‍👦", "👨🏽‍💻", "🇫🇷🇩🇪", "❤️", "☺︎", "🏳️‍🌈", "a😀b", " 😀", "😀 ", "🀄🃏",
    "\u{00A0}", "a\u{00A0}b", "a \u{00A0}b", "a\u{00A0} b", "\u{3000}全角", "a\u{3000}\u{3000}b", "\u{2028}\u{2029}",
    "\u{0085}", "a\u{0085}b", "\u{000B}\u{000C}", "\u{001C}\u{001D}\u{001E}\u{001F}", "\u{180E}", "\u{200B}zero width",
    "\u{FEFF}bom", "\u{2000}\u{2001}\u{200A}x", "\u{202F}\u{205F}", "\u{1680}ogham", "\u{0000}", "a\u{0000}b",
    "\u{007F}", "\u{00AD}soft hyphen", "\u{E000}private", "\u{FFFD}", "\u{10FFFF}", "\u{E0041}tag",
    String(repeating: " ", count: 100) + "x", String(repeating: " ", count: 1000), String(repeating: "\n", count: 300),
    String(repeating: "a", count: 500), String(repeating: "ab", count: 300), String(repeating: "!", count: 257),
    String(repeating: "1234567890", count: 40), String(repeating: "=", count: 120), String(repeating: "😀", count: 80),
    String(repeating: "中", count: 200), String(repeating: " \t", count: 90) + "end",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "https://example.com/path?query=1&x=%20#frag", "user@example.com", "C:\\Windows\\System32", "/usr/local/bin",
    "def f(x):\n    return x * 2\n\n\tpass", "{\"json\": [1, 2.5, null, true]}", "<html><body>Hi</body></html>",
    "SELECT * FROM t WHERE a='x';", "0x1F600 0b1010 1e-9 -42 +7", "iPhone iOS macOS GPT-2 BPE", "CamelCaseWord snake_case_word",
    "Mixed 中English文 text", "ελληνικά123ελληνικά", "Ｈｅｌｌｏ，世界！", "ONE TWO THREE", "\u{1F469}\u{200D}\u{1F4BB}",
]

/// Random texts drawn from tricky fragments (seeded, so failures reproduce).
func randomAdversarialTexts(count: Int, seed: UInt64) -> [String] {
    let fragments: [String] = [
        "'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'VE", "'ll", "'LL", "'d", "'D", "'m", "'M", "'", "’",
        " ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", "\u{00A0}", "\u{3000}", "\u{2028}", "\u{0085}", "\u{000B}",
        "\u{000C}", "\u{001F}", "\u{200B}", "\u{200D}", "\u{FE0F}", "\u{301}", "\u{308}", "\u{94D}",
        "a", "b", "the", "The", "THE", "cat", "Lily", "x", "Z", "é", "ñ", "ß", "Σ", "ж", "ا", "א", "ह", "ก", "中", "文", "語", "한", "ｱ",
        "𝔘", "ǅ", "ʰ", "ª", "0", "7", "42", "٣", "५", "Ⅻ", "½", "²", "①", "!", "?", ".", ",", "...", "—", "-", "“", "”", "\"",
        "(", ")", "$", "€", "%", "&", "#", "@", "_", "*", "/", "\\", "|", "<", ">", "<|endoftext|>", "<|", "|>",
        "😀", "👩‍👩‍👧", "🇫🇷", "🏽", "❤️", "🀄", "\u{0000}", "\u{007F}", "\u{E000}", "\u{FFFD}",
    ]
    var rng = SplitMix64(seed: seed)
    var texts: [String] = []
    for _ in 0 ..< count {
        let length = Int.random(in: 1 ... 40, using: &rng)
        var text = ""
        for _ in 0 ..< length { text += fragments.randomElement(using: &rng)! }
        texts.append(text)
    }
    return texts
}

@Suite("GPT-2 tokenizer against tiktoken")
struct GPT2TokenizerTests {
    @Test("every TinyStories story, and the whole files, encode exactly as tiktoken")
    func tinyStoriesMatchTiktoken() throws {
        let gpt2 = try loadShared()
        for name in ["train.txt", "valid.txt"] {
            let url = SharedData.tinyStories.appendingPathComponent(name)
            let documents = try tinyStoriesDocuments(url)
            #expect(documents.count >= 400)
            var jobs = documents.map { TiktokenJob(text: $0) }
            jobs.append(TiktokenJob(mode: .ordinary, path: url.path))  // separators as plain text
            jobs.append(TiktokenJob(mode: .special, path: url.path))   // separators as 50256
            let reference = try Tiktoken.encode(jobs)
            var mismatches = 0
            for (k, document) in documents.enumerated() {
                let ids = gpt2.encodeOrdinary(document)
                if ids != reference[k] {
                    mismatches += 1
                    if mismatches <= 3 { Issue.record("\(name) story \(k) differs from tiktoken: \(document.prefix(80))") }
                }
                if try gpt2.decode(ids) != Array(document.utf8) {
                    Issue.record("\(name) story \(k) does not round-trip")
                }
            }
            #expect(mismatches == 0, "\(mismatches) of \(documents.count) stories of \(name) differ from tiktoken")

            let bytes = [UInt8](try Data(contentsOf: url))
            let whole = reference[documents.count]
            let special = reference[documents.count + 1]
            let (ids, withSpecial) = bytes.withUnsafeBufferPointer { utf8 -> ([Int32], [Int32]) in
                var ids: [Int32] = []
                gpt2.encodeOrdinary(utf8: utf8, into: &ids)
                for threads in name == "valid.txt" ? [2, 3, 8] : [2] {
                    #expect(gpt2.encodeOrdinary(utf8: utf8, threads: threads) == whole, "\(name) on \(threads) threads")
                }
                var withSpecial: [Int32] = []
                gpt2.encode(utf8: utf8, allowSpecial: true, into: &withSpecial)
                return (ids, withSpecial)
            }
            #expect(ids == whole, "\(name) as one text differs from tiktoken")
            #expect(withSpecial == special, "\(name) with <|endoftext|> allowed differs from tiktoken")
            #expect(withSpecial.filter { $0 == GPT2Tokenizer.endOfTextID }.count == documents.count)
            #expect(!ids.contains(GPT2Tokenizer.endOfTextID))
            #expect(try gpt2.decode(ids) == bytes)
            #expect(try gpt2.decode(withSpecial) == bytes)
        }
    }

    @Test("the adversarial set (hand-written and random) encodes exactly as tiktoken, with both spellings of the pattern")
    func adversarialMatchesTiktoken() throws {
        let gpt2 = try loadShared()
        let texts = adversarialTexts + randomAdversarialTexts(count: 3000, seed: 2024)
        let jobs = texts.map { TiktokenJob(mode: .ordinary, text: $0) } + texts.map { TiktokenJob(mode: .special, text: $0) }
        for pattern in [Tiktoken.Pattern.tiktoken, .original] {
            let reference = try Tiktoken.encode(jobs, pattern: pattern)
            var mismatches = 0
            for (k, text) in texts.enumerated() {
                let ordinary = gpt2.encodeOrdinary(text)
                let special = gpt2.encode(text, allowSpecial: true)
                if ordinary != reference[k] || special != reference[texts.count + k] {
                    mismatches += 1
                    if mismatches <= 5 {
                        Issue.record("differs from tiktoken (\(pattern) pattern) on \(text.debugDescription): \(ordinary) vs \(reference[k])")
                    }
                }
                #expect(gpt2.encode(text, allowSpecial: false) == ordinary)
            }
            #expect(mismatches == 0, "\(mismatches) of \(texts.count) adversarial texts differ (\(pattern) pattern)")
        }
    }

    @Test("adversarial text encodes identically on 1, 2, 3 and 5 threads and when cut at every safe split point")
    func parallelSplittingIsExact() throws {
        let gpt2 = try loadShared()
        // ~600 KB, so that every thread count really splits it with the default chunk size.
        var text = ""
        var round: UInt64 = 0
        while text.utf8.count < 600_000 {
            text += (adversarialTexts + randomAdversarialTexts(count: 500, seed: 77 + round)).joined(separator: round % 2 == 0 ? "" : " ")
            round += 1
        }
        // A smaller text, cut into tiny chunks: every safe split point of it is used.
        let small = (adversarialTexts + randomAdversarialTexts(count: 1500, seed: 5)).joined(separator: " ")
        let reference = try Tiktoken.encode([TiktokenJob(text: text), TiktokenJob(text: small)])
        Array(text.utf8).withUnsafeBufferPointer { utf8 in
            for threads in [1, 2, 3, 5] {
                #expect(gpt2.encodeOrdinary(utf8: utf8, threads: threads) == reference[0], "\(threads) threads")
            }
        }
        Array(small.utf8).withUnsafeBufferPointer { utf8 in
            for chunkBytes in [1, 7, 100] {
                #expect(gpt2.encodeOrdinary(utf8: utf8, threads: 2, chunkBytes: chunkBytes) == reference[1], "chunks of \(chunkBytes)")
            }
        }
    }

    @Test("decode inverts encode byte-exactly; bad ids throw; lossy string decoding")
    func roundTripAndDecodeErrors() throws {
        let gpt2 = try loadShared()
        #expect(gpt2.vocabularySize == 50257)
        for text in adversarialTexts + randomAdversarialTexts(count: 500, seed: 9) {
            #expect(try gpt2.decode(gpt2.encodeOrdinary(text)) == Array(text.utf8))
            #expect(try gpt2.decodeToString(gpt2.encode(text, allowSpecial: true)) == text)
        }
        #expect(throws: TokenizerError.tokenOutOfRange(id: 50257, vocabularySize: 50257)) { try gpt2.decode([15496, 50257]) }
        #expect(throws: TokenizerError.self) { try gpt2.decode([-1]) }
        #expect(gpt2.tokenBytes(50257) == nil && gpt2.tokenBytes(-5) == nil)
        #expect(gpt2.tokenBytes(GPT2Tokenizer.endOfTextID) == Array(GPT2Tokenizer.endOfTextString.utf8))
        #expect(gpt2.tokenBytes(220) == [0x20])
        // The first token of "😀" is a partial character: lossy decoding shows U+FFFD.
        let emoji = gpt2.encodeOrdinary("😀")
        #expect(emoji.count > 1)
        #expect(try gpt2.decodeToString([emoji[0]]).contains("\u{FFFD}"))
        #expect(try gpt2.decodeToString(emoji) == "😀")
    }

    @Test("special tokens only where allowed")
    func specialTokens() throws {
        let gpt2 = try loadShared()
        let text = "Once<|endoftext|>Twice <|endoftext|>\n"
        let ordinary = gpt2.encodeOrdinary(text)
        let special = gpt2.encode(text, allowSpecial: true)
        #expect(!ordinary.contains(GPT2Tokenizer.endOfTextID))
        #expect(special.filter { $0 == GPT2Tokenizer.endOfTextID }.count == 2)
        #expect(gpt2.encode("<|endoftext|>", allowSpecial: true) == [GPT2Tokenizer.endOfTextID])
        #expect(gpt2.endOfTextTokenID == GPT2Tokenizer.endOfTextID)
        #expect(gpt2.specialTokens == [GPT2Tokenizer.endOfTextString: GPT2Tokenizer.endOfTextID])
    }
}
