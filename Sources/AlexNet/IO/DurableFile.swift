// Files written so that a crash leaves the old version or the new one, never half of one: POSIX writes, fsync,
// rename, and fsync of the folder (prepared stores, checkpoint directories' `latest` pointer).
import Foundation

/// A file written with POSIX calls so that it can be synced (fsync) before the files that depend on it.
final class DurableFile {
    let path: String, fd: Int32
    private(set) var offset: Int

    /// Opens (creating) `path` for writing at its end after cutting it to `length` bytes.
    init(path: String, truncatingTo length: Int) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT, 0o644)
        guard fd >= 0 else { throw Self.failure(path, "cannot open it for writing") }
        guard ftruncate(fd, off_t(length)) == 0, lseek(fd, off_t(length), SEEK_SET) == off_t(length) else {
            let e = Self.failure(path, "cannot cut it to \(length) bytes"); _ = Glibc.close(fd); throw e
        }
        offset = length
    }

    static func failure(_ path: String, _ what: String) -> AlexNetError {
        AlexNetError("\(path): \(what) (\(String(cString: strerror(errno)))); check free space and permissions")
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw Self.failure(path, "cannot write") }
            done += n
        }
        offset += bytes.count
    }

    func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }

    func sync() throws { guard fsync(fd) == 0 else { throw Self.failure(path, "cannot sync it to disk") } }

    func close() { _ = Glibc.close(fd) }

    /// Replaces `path` atomically by `data`: written to path.partial, synced, renamed (sync the folder after).
    static func replace(_ path: String, with data: Data) throws {
        let file = try DurableFile(path: path + ".partial", truncatingTo: 0)
        defer { file.close() }
        try data.withUnsafeBytes { try file.write($0) }
        try file.sync()
        try rename(path + ".partial", to: path)
    }

    static func rename(_ from: String, to: String) throws {
        guard Glibc.rename(from, to) == 0 else { throw failure(to, "cannot rename \(from) to it") }
    }

    static func syncFolder(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw failure(path, "cannot open the folder to sync it") }
        defer { _ = Glibc.close(fd) }
        guard fsync(fd) == 0 else { throw failure(path, "cannot sync the folder") }
    }
}
