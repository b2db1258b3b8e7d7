#include "tests/support/fault_fs.h"

#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <thread>
#include <utility>

namespace icr::testing {

using rocksdb::DataVerificationInfo;
using rocksdb::FileOptions;
using rocksdb::FSWritableFile;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

// A writable file that reports its appends, syncs and truncations to the
// FaultFs, and refuses them while the disk is "full" or the power is off.
class FaultFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultFile(FaultFs* fs, std::string fname, std::unique_ptr<FSWritableFile> file)
      : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs), fname_(std::move(fname)) {}

  IOStatus Append(const Slice& data, const IOOptions& options, IODebugContext* dbg) override {
    return TrackedAppend(data, [&] { return target()->Append(data, options, dbg); });
  }
  IOStatus Append(const Slice& data, const IOOptions& options, const DataVerificationInfo& info,
                  IODebugContext* dbg) override {
    return TrackedAppend(data, [&] { return target()->Append(data, options, info, dbg); });
  }
  IOStatus PositionedAppend(const Slice&, uint64_t, const IOOptions&, IODebugContext*) override {
    // RocksDB uses positioned appends only with direct I/O, which the store
    // does not enable; refuse rather than track offsets wrongly.
    return IOStatus::NotSupported("FaultFs: PositionedAppend");
  }
  IOStatus PositionedAppend(const Slice&, uint64_t, const IOOptions&, const DataVerificationInfo&,
                            IODebugContext*) override {
    return IOStatus::NotSupported("FaultFs: PositionedAppend");
  }
  IOStatus Truncate(uint64_t size, const IOOptions& options, IODebugContext* dbg) override {
    std::shared_lock io(fs_->io_mu_);
    IOStatus s = fs_->CheckPowered();
    if (!s.ok()) return s;
    s = target()->Truncate(size, options, dbg);
    if (s.ok()) fs_->Truncated(fname_, size);
    return s;
  }
  IOStatus Flush(const IOOptions& options, IODebugContext* dbg) override {
    std::shared_lock io(fs_->io_mu_);
    IOStatus s = fs_->CheckPowered();
    return s.ok() ? target()->Flush(options, dbg) : s;
  }
  IOStatus Sync(const IOOptions& options, IODebugContext* dbg) override {
    return TrackedSync([&] { return target()->Sync(options, dbg); });
  }
  IOStatus Fsync(const IOOptions& options, IODebugContext* dbg) override {
    return TrackedSync([&] { return target()->Fsync(options, dbg); });
  }
  IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const IOOptions& options,
                     IODebugContext* dbg) override {
    // A partial sync (bytes_per_sync) is not counted as synced: only a full
    // Sync/Fsync makes data survive a power cut here.
    std::shared_lock io(fs_->io_mu_);
    IOStatus s = fs_->CheckPowered();
    return s.ok() ? target()->RangeSync(offset, nbytes, options, dbg) : s;
  }
  IOStatus Close(const IOOptions& options, IODebugContext* dbg) override {
    // The descriptor must be released even with the power off. Closing a
    // preallocated file sets its length (ftruncate to what was written), so
    // with the power off the file is cut back to its synced length again.
    IOStatus s = target()->Close(options, dbg);
    fs_->AfterClose(fname_);
    return s;
  }

 private:
  // An append refused while the disk is full or the power is off, else
  // done and counted.
  template <typename Write>
  IOStatus TrackedAppend(const Slice& data, Write write) {
    std::shared_lock io(fs_->io_mu_);
    IOStatus s = fs_->BeforeAppend(data.size());
    if (!s.ok()) return s;
    s = write();
    if (s.ok()) fs_->Appended(fname_, data.size());
    return s;
  }
  // A full sync: refused with the power off, else done, and the bytes
  // written before it started counted as synced.
  template <typename DoSync>
  IOStatus TrackedSync(DoSync sync) {
    fs_->SyncDelay();  // outside the lock: a power cut may come meanwhile
    std::shared_lock io(fs_->io_mu_);
    IOStatus s = fs_->CheckPowered();
    if (!s.ok()) return s;
    const uint64_t size = fs_->WrittenSize(fname_);  // what this sync covers
    s = sync();
    if (s.ok()) fs_->Synced(fname_, size);
    return s;
  }

  FaultFs* const fs_;
  const std::string fname_;
};

FaultFs::FaultFs() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}

void FaultFs::SyncDelay() const {
  const int64_t us = sync_delay_us_.load();
  if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
}

IOStatus FaultFs::CheckPowered() const {
  if (!powered_.load()) return IOStatus::IOError("FaultFs: the power is off");
  return IOStatus::OK();
}

IOStatus FaultFs::BeforeAppend(size_t bytes) {
  IOStatus s = CheckPowered();
  if (!s.ok()) return s;
  if (full_.load() && bytes > 0) {
    refused_appends_.fetch_add(1);
    return IOStatus::NoSpace("FaultFs: no space left on device");
  }
  return IOStatus::OK();
}

void FaultFs::Appended(const std::string& fname, size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  files_[fname].size += bytes;
}

uint64_t FaultFs::WrittenSize(const std::string& fname) {
  std::lock_guard<std::mutex> lock(mu_);
  return files_[fname].size;
}

void FaultFs::Synced(const std::string& fname, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  Tracked& t = files_[fname];
  t.synced = std::max(t.synced, std::min(size, t.size));
}

void FaultFs::AfterClose(const std::string& fname) {
  if (powered_.load()) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(fname);
  if (it != files_.end()) ::truncate(fname.c_str(), static_cast<off_t>(it->second.synced));
}

void FaultFs::Truncated(const std::string& fname, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  Tracked& t = files_[fname];
  t.size = size;
  if (t.synced > size) t.synced = size;
}

IOStatus FaultFs::Wrap(const std::string& fname, uint64_t initial_size,
                       std::unique_ptr<FSWritableFile>* result) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    files_[fname] = Tracked{initial_size, initial_size};
  }
  *result = std::make_unique<FaultFile>(this, fname, std::move(*result));
  return IOStatus::OK();
}

IOStatus FaultFs::NewWritableFile(const std::string& fname, const FileOptions& options,
                                  std::unique_ptr<FSWritableFile>* result, IODebugContext* dbg) {
  std::shared_lock io(io_mu_);
  IOStatus s = CheckPowered();
  if (!s.ok()) return s;
  s = target()->NewWritableFile(fname, options, result, dbg);
  if (!s.ok()) return s;
  // A new file is empty; that it exists at all is treated as durable.
  return Wrap(fname, 0, result);
}

IOStatus FaultFs::ReopenWritableFile(const std::string& fname, const FileOptions& options,
                                     std::unique_ptr<FSWritableFile>* result,
                                     IODebugContext* dbg) {
  std::shared_lock io(io_mu_);
  IOStatus s = CheckPowered();
  if (!s.ok()) return s;
  uint64_t size = 0;
  if (!target()->GetFileSize(fname, IOOptions(), &size, dbg).ok()) size = 0;
  s = target()->ReopenWritableFile(fname, options, result, dbg);
  if (!s.ok()) return s;
  return Wrap(fname, size, result);
}

IOStatus FaultFs::ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                    const FileOptions& options,
                                    std::unique_ptr<FSWritableFile>* result, IODebugContext* dbg) {
  std::shared_lock io(io_mu_);
  IOStatus s = CheckPowered();
  if (!s.ok()) return s;
  s = target()->ReuseWritableFile(fname, old_fname, options, result, dbg);
  if (!s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    files_.erase(old_fname);
  }
  return Wrap(fname, 0, result);
}

IOStatus FaultFs::RenameFile(const std::string& src, const std::string& target_name,
                             const IOOptions& options, IODebugContext* dbg) {
  std::shared_lock io(io_mu_);
  IOStatus s = CheckPowered();
  if (!s.ok()) return s;
  s = target()->RenameFile(src, target_name, options, dbg);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = files_.find(src);
  if (it != files_.end()) {
    Tracked t = it->second;
    files_.erase(it);
    files_[target_name] = t;
  } else {
    files_.erase(target_name);
  }
  return s;
}

IOStatus FaultFs::DeleteFile(const std::string& fname, const IOOptions& options,
                             IODebugContext* dbg) {
  std::shared_lock io(io_mu_);
  IOStatus s = CheckPowered();
  if (!s.ok()) return s;
  s = target()->DeleteFile(fname, options, dbg);
  if (s.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    files_.erase(fname);
  }
  return s;
}

void FaultFs::PowerCut() {
  std::unique_lock io(io_mu_);  // waits for operations in progress
  powered_.store(false);
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t dropped = 0;
  for (auto& [name, t] : files_) {
    if (t.synced >= t.size) continue;
    // What the page cache held beyond the last sync is gone.
    if (::truncate(name.c_str(), static_cast<off_t>(t.synced)) == 0) {
      dropped += t.size - t.synced;
      t.size = t.synced;
    }
  }
  dropped_bytes_.store(dropped);
}

}  // namespace icr::testing
