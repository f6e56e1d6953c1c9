import Foundation
import Gemma3TestSupport
import Gemma3Infrastructure
import Testing

/// The SHA-256 every download is checked with (swift-crypto, through `SHA256Hasher`).
struct ChecksumTests {
    /// SHA-256 against known answers (FIPS 180-4 examples) and Python's hashlib on a TinyStories file.
    @Test func sha256KnownAnswers() throws {
        #expect(SHA256Hasher.hex(of: Data()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256Hasher.hex(of: Data("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256Hasher.hex(of: Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Streaming in odd-sized pieces gives the same digest as one call.
        let text = Data((0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        var h = SHA256Hasher()
        var i = 0
        for step in [1, 63, 64, 65, 127, 1000, 5000] where i < text.count {
            let j = min(text.count, i + step)
            h.update(text[i..<j])
            i = j
        }
        h.update(text[i...])
        #expect(h.finalizeHex() == SHA256Hasher.hex(of: text))
        // valid.txt's checksum as listed in ../shared/data/tinystories/SOURCES.md.
        #expect(try SHA256Hasher.hex(ofFile: TestPaths.tinyStories.appendingPathComponent("valid.txt"))
                == "b7c55eb06cc784c656f21cad922d437088662b95f908b87b502dc95fdc1715e2")
    }
}
