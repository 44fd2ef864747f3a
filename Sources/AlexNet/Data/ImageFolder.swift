// Lists an ImageNet-style image folder for `prepare`: root/<class>/**.{jpg,jpeg,png} (torchvision ImageFolder's
// layout and order), or a flat folder of images with a label file (the ILSVRC validation set).
import Foundation

public struct ImageFolderListing: Sendable, Equatable {
    /// The folder the paths are relative to.
    public let root: String
    /// Class names; a label is an index into this list.
    public let classes: [String]
    /// Image paths relative to `root`, in store order (by class, then as torchvision ImageFolder orders them).
    public let files: [String]
    /// The class index of each file.
    public let labels: [Int]
    /// What was skipped or looks wrong, one line each (empty class folders, symbolic-link loops, unreadable folders).
    public let problems: [String]

    public init(root: String, classes: [String], files: [String], labels: [Int], problems: [String]) {
        precondition(files.count == labels.count)
        self.root = root; self.classes = classes; self.files = files; self.labels = labels; self.problems = problems
    }

    /// File name extensions taken as images, compared case-insensitively (the decoder reads JPEG and PNG).
    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "png"]

    static func isImage(_ name: String) -> Bool {
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return false }
        return imageExtensions.contains(name[name.index(after: dot)...].lowercased())
    }

    /// Byte-wise order of the UTF-8 names (Python's sorted() of str: code-point order), not Swift's String order.
    static func precedes(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }

    /// Scans root/<class>/…: every folder directly in `root` (followed if a symbolic link; names starting with "."
    /// skipped) is a class, indexed in byte-wise sorted name order as torchvision's ImageFolder does, and every
    /// .jpg/.jpeg/.png file at any depth below it (extension case-insensitive; other files ignored) is an image of that
    /// class. Files are ordered as torchvision orders them: by folder path (byte-wise), then by name within a folder.
    /// Problems are reported, not fatal: a class folder without images keeps its index (so indices stay those of the
    /// sorted folder names; torchvision would refuse it) and is reported as holding no images; an unreadable folder,
    /// a symbolic-link loop (a folder that is its own ancestor, by device and inode; never followed), a broken link,
    /// a name holding a newline (files.txt holds one path a line) and images directly in `root` are reported and
    /// skipped. Throws when `root` is not a readable folder or holds no class folder.
    public static func scan(root: String) throws -> ImageFolderListing {
        let rootInfo = try folderInfo(root, what: "the image folder")
        let entries: [String]
        do { entries = try FileManager.default.contentsOfDirectory(atPath: root) } catch {
            throw AlexNetError("\(root): cannot list the image folder (check its permissions)")
        }
        var problems: [String] = []
        var classNames: [String] = [], looseImages = 0
        for name in entries.sorted(by: precedes) where !name.hasPrefix(".") {
            let path = (root as NSString).appendingPathComponent(name)
            var s = stat()
            guard stat(path, &s) == 0 else {
                if isImage(name) || lstat(path, &s) == 0 { problems.append("\(path): broken symbolic link or unreadable entry; skipped") }
                continue
            }
            if s.st_mode & S_IFMT == S_IFDIR {
                if name.contains("\n") { problems.append("\(printableExcerpt(path)): class folder name holds a newline; skipped"); continue }
                classNames.append(name)
            } else if isImage(name) {
                looseImages += 1
            }
        }
        guard !classNames.isEmpty else {
            throw AlexNetError("\(root): no class folders (expected \(root)/<class>/<image>.jpg; for a flat folder of images, such as the ILSVRC validation set, give its label file)")
        }
        if looseImages > 0 {
            problems.append("\(root): \(looseImages) image file\(looseImages == 1 ? "" : "s") directly in the folder, outside any class folder; ignored")
        }
        var files: [String] = [], labels: [Int] = []
        for (label, name) in classNames.enumerated() {
            var found: [(folder: String, name: String)] = []
            walk(root: root, relative: name, ancestors: [rootInfo], into: &found, problems: &problems)
            found.sort { precedes($0.folder, $1.folder) || ($0.folder == $1.folder && precedes($0.name, $1.name)) }
            if found.isEmpty {
                problems.append("\((root as NSString).appendingPathComponent(name)): class folder holds no images (its class index \(label) is kept)")
            }
            for f in found {
                files.append((f.folder as NSString).appendingPathComponent(f.name))
                labels.append(label)
            }
        }
        return ImageFolderListing(root: root, classes: classNames, files: files, labels: labels, problems: problems)
    }

    /// (device, inode) of a folder: how a symbolic-link loop is recognised.
    struct FolderIdentity: Equatable { let device: UInt64, inode: UInt64 }

    static func folderInfo(_ path: String, what: String) throws -> FolderIdentity {
        var s = stat()
        guard stat(path, &s) == 0 else { throw AlexNetError("\(path): no such folder (\(what); check the path)") }
        guard s.st_mode & S_IFMT == S_IFDIR else { throw AlexNetError("\(path): not a folder (\(what) must be a folder of images)") }
        return FolderIdentity(device: UInt64(s.st_dev), inode: UInt64(s.st_ino))
    }

    /// Adds the images below root/relative to `found` (as (folder relative to root, name)), following symbolic links
    /// to folders unless the folder is one of `ancestors` (the folders on the current path: a loop).
    static func walk(root: String, relative: String, ancestors: [FolderIdentity], into found: inout [(folder: String, name: String)],
                     problems: inout [String]) {
        let path = (root as NSString).appendingPathComponent(relative)
        var s = stat()
        guard stat(path, &s) == 0 else { problems.append("\(path): cannot read the folder; skipped"); return }
        let me = FolderIdentity(device: UInt64(s.st_dev), inode: UInt64(s.st_ino))
        if ancestors.contains(me) {
            problems.append("\(path): symbolic link loop (this folder is its own ancestor); not followed")
            return
        }
        let entries: [String]
        do { entries = try FileManager.default.contentsOfDirectory(atPath: path) } catch {
            problems.append("\(path): cannot list the folder (check its permissions); its images are skipped")
            return
        }
        for name in entries {
            let child = (path as NSString).appendingPathComponent(name)
            var c = stat()
            if stat(child, &c) != 0 {
                if lstat(child, &c) == 0, c.st_mode & S_IFMT == S_IFLNK { problems.append("\(child): broken symbolic link; skipped") }
                else if isImage(name) { problems.append("\(child): cannot read the file's attributes; skipped") }
                continue
            }
            if c.st_mode & S_IFMT == S_IFDIR {
                if name.hasPrefix(".") { continue }
                walk(root: root, relative: (relative as NSString).appendingPathComponent(name), ancestors: ancestors + [me],
                     into: &found, problems: &problems)
            } else if isImage(name) {
                if name.contains("\n") || name.contains("\r") {
                    problems.append("\(printableExcerpt(child)): file name holds a line break (files.txt holds one path a line); skipped")
                    continue
                }
                found.append((relative, name))
            }
        }
    }

    /// A flat folder of images (no class folders; the ILSVRC2012 validation set) with a label file: every
    /// .jpg/.jpeg/.png directly in `root`, in byte-wise sorted name order, labelled by the label file's lines in that
    /// order. A line is a class index (`labelBase` is the index of the first class: 0, or 1 for 1-based files such as
    /// ILSVRC2012_validation_ground_truth.txt) or a class name from `classes`. The indices refer to `classes` (the
    /// training store's classes.txt, byte-wise sorted folder names): the devkit's ILSVRC2012_ID numbering is not that
    /// order, so map its IDs to synset names (meta.mat) and give the names, one a line. Blank trailing lines are
    /// ignored; a count mismatch or an unknown label is an error.
    public static func scanFlat(root: String, labelFile: String, classes: [String], labelBase: Int = 0) throws -> ImageFolderListing {
        guard labelBase == 0 || labelBase == 1 else {
            throw AlexNetError("label base \(labelBase) for \(labelFile): it must be 0 (first class is 0) or 1 (first class is 1)")
        }
        guard !classes.isEmpty else { throw AlexNetError("\(labelFile): no classes to label the images with (the training store's classes.txt is empty)") }
        _ = try folderInfo(root, what: "the validation image folder")
        let entries: [String]
        do { entries = try FileManager.default.contentsOfDirectory(atPath: root) } catch {
            throw AlexNetError("\(root): cannot list the image folder (check its permissions)")
        }
        var problems: [String] = [], files: [String] = []
        for name in entries.sorted(by: precedes) where isImage(name) {
            var s = stat()
            let path = (root as NSString).appendingPathComponent(name)
            guard stat(path, &s) == 0, s.st_mode & S_IFMT == S_IFREG else {
                problems.append("\(path): not a readable regular file; skipped"); continue
            }
            if name.contains("\n") || name.contains("\r") {
                problems.append("\(printableExcerpt(path)): file name holds a line break; skipped"); continue
            }
            files.append(name)
        }
        guard !files.isEmpty else { throw AlexNetError("\(root): no .jpg, .jpeg or .png files directly in the folder") }
        guard let data = FileManager.default.contents(atPath: labelFile) else {
            throw AlexNetError("\(labelFile): cannot read the label file (check the path)")
        }
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard lines.count == files.count else {
            throw AlexNetError("\(labelFile): \(lines.count) labels for \(files.count) images in \(root); give one label a line, in sorted file-name order")
        }
        let byName = Dictionary(classes.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        var labels: [Int] = []
        labels.reserveCapacity(lines.count)
        for (n, line) in lines.enumerated() {
            if let index = Int(line) {
                let label = index - labelBase
                guard (0..<classes.count).contains(label) else {
                    throw AlexNetError("\(labelFile): line \(n + 1): label \(index) is outside \(labelBase)...\(classes.count - 1 + labelBase) (\(classes.count) classes, first is \(labelBase)); check the label base")
                }
                labels.append(label)
            } else if let label = byName[line] {
                labels.append(label)
            } else {
                throw AlexNetError("\(labelFile): line \(n + 1): \(printableExcerpt(line)) is neither a class index nor one of the \(classes.count) class names")
            }
        }
        return ImageFolderListing(root: root, classes: classes, files: files, labels: labels, problems: problems)
    }
}
