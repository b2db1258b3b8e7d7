// FaultFs: a RocksDB FileSystem for tests that simulates a full disk and a
// power cut, over the real local filesystem.
//
//  - SetFull(true): every append to a writable file fails with "no space"
//    (IOStatus::NoSpace) and writes nothing, as on a full disk, until
//    SetFull(false).
//  - PowerCut(): from now on every write, sync, rename and delete fails and
//    changes nothing (the machine is off), and every file written through
//    this filesystem is cut back to what was last synced: what an operating
//    system may keep of unsynced writes after losing power is nothing.
//    PowerOn() lets writes through again (the "reboot"); the store is then
//    reopened on the same directory.
//
// Use: auto fs = std::make_shared<FaultFs>();
//      auto env = rocksdb::NewCompositeEnv(fs);   // StoreOptions.env = env.get()
//
// Only files created or reopened through this filesystem are tracked;
// directory syncs are not modelled (RocksDB syncs its directories after
// creating files, so a file it relies on is never only in a directory's
// unsynced state).
#pragma once

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

namespace icr::testing {

class FaultFs : public rocksdb::FileSystemWrapper {
 public:
  FaultFs();
  static const char* kClassName() { return "IcrFaultFs"; }
  const char* Name() const override { return kClassName(); }

  void SetFull(bool full) { full_.store(full); }
  // Every Sync/Fsync first waits this long (as a slow disk would), so power
  // cuts land between writes and their syncs, with unsynced data to lose.
  void SetSyncDelay(std::chrono::microseconds delay) { sync_delay_us_.store(delay.count()); }
  void PowerCut();
  void PowerOn() { powered_.store(true); }
  // Appends refused because the disk was "full".
  uint64_t refused_appends() const { return refused_appends_.load(); }
  // Bytes dropped by the last PowerCut (written but never synced).
  uint64_t dropped_bytes() const { return dropped_bytes_.load(); }

  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname,
                                       const rocksdb::FileOptions& options,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& target,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& fname, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;

 private:
  friend class FaultFile;
  struct Tracked {
    uint64_t size = 0;    // bytes written through this filesystem
    uint64_t synced = 0;  // of which synced
  };
  rocksdb::IOStatus Wrap(const std::string& fname, uint64_t initial_size,
                         std::unique_ptr<rocksdb::FSWritableFile>* result);
  rocksdb::IOStatus CheckPowered() const;
  // Called by FaultFile.
  rocksdb::IOStatus BeforeAppend(size_t bytes);
  void Appended(const std::string& fname, size_t bytes);
  uint64_t WrittenSize(const std::string& fname);
  void Synced(const std::string& fname, uint64_t size);
  void AfterClose(const std::string& fname);
  void Truncated(const std::string& fname, uint64_t size);
  void SyncDelay() const;

  std::atomic<bool> full_{false};
  std::atomic<int64_t> sync_delay_us_{0};
  std::atomic<bool> powered_{true};
  std::atomic<uint64_t> refused_appends_{0};
  std::atomic<uint64_t> dropped_bytes_{0};
  // Held shared by every file operation from its power check to its end,
  // and exclusively by PowerCut: an operation (a sync above all) either
  // completes before the cut, with its effect tracked, or fails after it.
  std::shared_mutex io_mu_;
  std::mutex mu_;
  std::map<std::string, Tracked> files_;
};

}  // namespace icr::testing
