// Atomic file replacement: write to a temporary in the same directory, flush it to disk, rename it
// over the target, so a crash or an error never leaves a half-written file where the old one was.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

namespace latent::io {

// Replaces `path` with what `write` produces. `write` gets a stream opened on "<path>.tmp.<pid>"
// (same directory, so the rename cannot cross file systems). Afterwards the temporary is flushed,
// fsync'ed, renamed over `path`, and the directory is fsync'ed so the rename itself is durable.
// If `write` throws or any step fails, the temporary is removed, `path` is left exactly as it was,
// and the exception propagates (failures of the steps themselves are latent::Error naming `path`).
// The temporary's name is per process: threads of one process must not write the same path at once.
void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write);

// Same, with the whole contents at hand.
void write_file_atomic(const std::string& path, std::string_view contents);

// fwrite that throws latent::Error("<path>: write failed: <reason>") on a short write, so a writer
// stops at the first failure (disk full, file too large) instead of producing the rest for nothing.
void write_all(std::FILE* file, const void* data, size_t nbytes, const std::string& path);

// True for the names write_file_atomic gives its temporaries ("<name>.tmp.<digits>"): whatever a
// crash left under such a name is garbage, never a finished file.
bool is_temporary_name(std::string_view file_name);

// fsync of a directory: what makes creating, renaming or removing an entry in it survive a power
// loss. File systems that cannot sync directories (EINVAL) are accepted; other failures throw
// latent::Error naming `dir`.
void sync_directory(const std::string& dir);

}  // namespace latent::io
