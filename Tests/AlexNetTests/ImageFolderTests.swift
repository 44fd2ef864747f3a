// Scanning an image folder for `prepare`: class indices in byte-wise sorted folder order, nested files in torchvision's
// order, extensions case-insensitive, problems reported (empty classes, symbolic-link loops), flat validation folders.
import AlexNet
import Foundation
import XCTest

/// Creates root/relative (an empty file) and its folders.
func touch(_ root: String, _ relative: String) {
    let path = (root as NSString).appendingPathComponent(relative)
    try! FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data()))
}

final class ImageFolderTests: XCTestCase {
    func testClassesAreSortedFoldersAndFilesFollowTorchvisionOrder() throws {
        let root = Paths.temporaryDirectory("scan-classes")
        for f in ["b/1.Png", "a/z.jpeg", "a/x.JPG", "a/sub/y.png", "a/notes.txt", "a/sub/deeper/w.jpg", "a/sub-x/v.jpg",
                  "C/deep/er/q.jpg", ".hidden/h.jpg", "loose.jpg", "a/.jpg"] { touch(root, f) }
        try FileManager.default.createDirectory(atPath: root + "/d", withIntermediateDirectories: true)   // an empty class
        let l = try ImageFolderListing.scan(root: root)
        XCTAssertEqual(l.classes, ["C", "a", "b", "d"], "byte-wise order: upper case before lower; hidden folders skipped")
        // torchvision: folders in byte-wise path order ("a" < "a/sub" < "a/sub-x" < "a/sub/deeper", as "-" < "/"),
        // then the names within each folder.
        XCTAssertEqual(l.files, ["C/deep/er/q.jpg", "a/x.JPG", "a/z.jpeg", "a/sub/y.png", "a/sub-x/v.jpg", "a/sub/deeper/w.jpg", "b/1.Png"])
        XCTAssertEqual(l.labels, [0, 1, 1, 1, 1, 1, 2])
        XCTAssertEqual(l.root, root)
        XCTAssertTrue(l.problems.contains { $0.contains("/d: class folder holds no images") && $0.contains("index 3 is kept") }, "\(l.problems)")
        XCTAssertTrue(l.problems.contains { $0.contains("1 image file directly in the folder") }, "\(l.problems)")
        XCTAssertEqual(l.problems.count, 2, "\(l.problems)")
    }

    func testSymbolicLinkLoopsAreReportedAndNotFollowed() throws {
        let root = Paths.temporaryDirectory("scan-loops")
        for f in ["a/1.jpg", "b/2.jpg"] { touch(root, f) }
        let fm = FileManager.default
        try fm.createSymbolicLink(atPath: root + "/a/up", withDestinationPath: "..")          // back to the root: a loop
        try fm.createSymbolicLink(atPath: root + "/a/self", withDestinationPath: ".")         // a loop
        try fm.createSymbolicLink(atPath: root + "/a/other", withDestinationPath: "../b")    // not a loop: followed
        try fm.createSymbolicLink(atPath: root + "/a/gone.jpg", withDestinationPath: "missing.jpg")
        let start = Date()
        let l = try ImageFolderListing.scan(root: root)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        XCTAssertEqual(l.files, ["a/1.jpg", "a/other/2.jpg", "b/2.jpg"])
        XCTAssertEqual(l.labels, [0, 0, 1])
        let loops = l.problems.filter { $0.contains("symbolic link loop") }
        XCTAssertEqual(loops.count, 2, "\(l.problems)")
        XCTAssertTrue(loops.contains { $0.hasSuffix("a/up: symbolic link loop (this folder is its own ancestor); not followed") }, "\(loops)")
        XCTAssertTrue(l.problems.contains { $0.contains("a/gone.jpg: broken symbolic link") }, "\(l.problems)")
    }

    func testAFolderWithoutClassFoldersIsRefusedInOneLine() {
        let root = Paths.temporaryDirectory("scan-flat-refused")
        touch(root, "v1.jpg")
        XCTAssertThrowsError(try ImageFolderListing.scan(root: root)) { e in
            XCTAssertTrue("\(e)".hasPrefix("\(root): no class folders"), "\(e)")
            XCTAssertFalse("\(e)".contains("\n"))
        }
        XCTAssertThrowsError(try ImageFolderListing.scan(root: root + "/nothing")) { e in
            XCTAssertTrue("\(e)".contains("nothing: no such folder"), "\(e)")
        }
    }

    func testFlatValidationFolderTakesItsLabelsFromTheLabelFile() throws {
        let root = Paths.temporaryDirectory("scan-flat")
        for f in ["v2.JPEG", "v1.jpeg", "v3.png", "readme.txt"] { touch(root, f) }
        let labels = root + "/../scan-flat-labels.txt"
        try "2\n1\nb\n\n".write(toFile: labels, atomically: true, encoding: .utf8)   // 1-based indices, or names
        let l = try ImageFolderListing.scanFlat(root: root, labelFile: labels, classes: ["a", "b"], labelBase: 1)
        XCTAssertEqual(l.files, ["v1.jpeg", "v2.JPEG", "v3.png"])
        XCTAssertEqual(l.labels, [1, 0, 1])
        XCTAssertEqual(l.classes, ["a", "b"])
        // 0-based, the same file: "2" is then out of range for two classes.
        XCTAssertThrowsError(try ImageFolderListing.scanFlat(root: root, labelFile: labels, classes: ["a", "b"])) { e in
            XCTAssertTrue("\(e)".contains("line 1: label 2 is outside 0...1"), "\(e)")
        }
        try "1\n0\n".write(toFile: labels, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ImageFolderListing.scanFlat(root: root, labelFile: labels, classes: ["a", "b"])) { e in
            XCTAssertEqual("\(e)", "\(labels): 2 labels for 3 images in \(root); give one label a line, in sorted file-name order")
        }
        try "0\n1\nzebra\n".write(toFile: labels, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ImageFolderListing.scanFlat(root: root, labelFile: labels, classes: ["a", "b"])) { e in
            XCTAssertTrue("\(e)".contains("line 3: 'zebra' is neither a class index nor one of the 2 class names"), "\(e)")
        }
    }
}
